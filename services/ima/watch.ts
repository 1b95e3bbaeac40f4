import { watch, type FSWatcher } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

// Recursive change notification with one inotify watch per directory (a
// directory watch reports writes, attribute changes, creations, renames and
// deletions of its entries). New directories get their own watch as they
// appear. Reports rootfs-relative paths; '' means "look at everything".

export interface TreeWatch {
  ready: Promise<void>; // every directory that existed at the start is watched
  close(): void;
}

export function watchTree(root: string, onChange: (rel: string) => void, onError: (err: Error) => void): TreeWatch {
  const watchers = new Map<string, FSWatcher>();
  let closed = false;

  const add = async (rel: string): Promise<void> => {
    if (closed || watchers.has(rel)) return;
    let w: FSWatcher;
    try {
      w = watch(rel ? join(root, rel) : root, { persistent: false }, (_event, name) => {
        if (!name) return onChange(rel);
        const child = rel ? `${rel}/${name}` : name.toString();
        onChange(child);
        // a directory that appeared (or was renamed in) needs its own watch
        void add(child).catch(() => {});
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR' || code === 'ENOENT') return;
      onError(err as Error);
      return;
    }
    w.on('error', () => {
      // the directory went away: forget it; the parent reports the removal
      w.close();
      watchers.delete(rel);
    });
    watchers.set(rel, w);
    const entries = await readdir(rel ? join(root, rel) : root, { withFileTypes: true }).catch(() => []);
    await Promise.all(entries.filter((e) => e.isDirectory()).map((e) => add(rel ? `${rel}/${e.name}` : e.name)));
  };

  // fs.watch on a non-directory throws ENOTDIR, which add() ignores
  const ready = add('').catch(onError);
  return {
    ready,
    close() {
      closed = true;
      for (const w of watchers.values()) w.close();
      watchers.clear();
    },
  };
}
