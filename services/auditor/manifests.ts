import { statSync, watch, type FSWatcher } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256Of, type LabelManifest } from '../lib/manifest.ts';
import type { PublicKey } from '../lib/sign.ts';
import { readManifestKey, readVerifiedManifest } from '../lib/rootfs/verify.ts';
import type { Logger } from '../lib/log.ts';

// Which container and image a denied file belongs to, from the signed label
// manifests the ima service writes (<state>/ima/manifests/<container>.json,
// verified with <state>/ima/manifest-key.pub). A manifest that fails its
// signature is never used.
//
// The kernel prints the path as the denied process sees it. A process on the
// host sees <rootfs>/usr/bin/x (longest rootfs prefix wins); a process inside
// the container sees /usr/bin/x, which is looked up in every manifest and,
// when several hold it, told apart by the inode the kernel reported.
// A denial tied to a container the runner started (containers.ts) says how:
// by the record's mount namespace, by its process (pid: its mount namespace,
// or its task's init among its ancestors), by the process's cgroup, or, the
// process gone, by the path in the rootfs of a running container.

export type MatchKind = 'rootfs-prefix' | 'inode' | 'container-path' | 'mnt-ns' | 'pid' | 'cgroup' | 'rootfs-path';

// One look at the manifest directory shared by the lookups of one batch of
// records: taken after the batch was read, it sees every manifest written
// before any of those denials happened, so one stat serves them all.
export interface LookupBatch {
  dirMtime?: Promise<number | null>;
}

export interface FileOwner {
  container: string;
  image: { name: string; tag: string; digest: string };
  policySerial: number;
  expectedSha256: string | null;
  match: MatchKind;
}

export class ManifestIndex {
  private manifests: LabelManifest[] = [];
  private watcher?: FSWatcher;
  private loadedDirMtime: number | null = null; // the directory as the last load began to read it
  private reloading?: Promise<void>;
  private debounce?: NodeJS.Timeout;

  constructor(
    private readonly dir: string,
    private readonly keyPath: string,
    private readonly log: Logger,
  ) {}

  get size(): number {
    return this.manifests.length;
  }

  reload(): Promise<void> {
    this.reloading ??= this.load().finally(() => {
      this.reloading = undefined;
    });
    return this.reloading;
  }

  private async load(): Promise<void> {
    this.loadedDirMtime = await this.dirMtime();
    const key = await this.readKey();
    let names: string[] = [];
    try {
      names = (await readdir(this.dir)).filter((n) => n.endsWith('.json') && !n.startsWith('.'));
    } catch {
      // the ima service has not labelled anything yet
    }
    const next: LabelManifest[] = [];
    if (key) {
      for (const name of names) {
        try {
          next.push(await readVerifiedManifest(join(this.dir, name), key));
        } catch (err) {
          this.log.error('label manifest ignored', { file: name, err: err as Error });
        }
      }
    } else if (names.length) {
      this.log.warn(`no usable manifest key at ${this.keyPath}; denials are reported without container until the ima service writes it`);
    }
    // longest rootfs first, so the first prefix that matches is the best one
    this.manifests = next.sort((a, b) => b.rootfs.length - a.rootfs.length);
    this.startWatching();
  }

  private async readKey(): Promise<PublicKey | null> {
    try {
      return await readManifestKey(this.keyPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.error('manifest key unusable', { path: this.keyPath, err: err as Error });
      return null;
    }
  }

  private startWatching(): void {
    if (this.watcher) return;
    try {
      this.watcher = watch(this.dir, () => {
        clearTimeout(this.debounce);
        this.debounce = setTimeout(() => void this.reload(), 50);
      });
      this.watcher.on('error', () => {
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      // directory not there yet: the next reload (ima.labeled, or a miss) tries again
    }
  }

  // A denial can reach us before ima.labeled or the directory watch has made
  // us read the manifest of a rootfs just labelled (a process opens its files
  // at once). On a miss: let a read in progress finish, and read again if a
  // manifest was written since the last read began (the directory changed).
  lookup(file: string, ino: number | null, batch: LookupBatch = {}): Promise<FileOwner | null> {
    return this.orReload(() => this.find(file, ino), batch);
  }

  /** The manifest of the rootfs at `rootfs` (a container the runner started runs from it). */
  ofRootfs(rootfs: string, batch: LookupBatch = {}): Promise<LabelManifest | null> {
    const root = rootfs.replace(/\/+$/, '');
    return this.orReload(async () => this.manifests.find((m) => m.rootfs.replace(/\/+$/, '') === root) ?? null, batch);
  }

  /** The manifest labelled for that image (runner.ps names a container's image, not its rootfs). */
  ofImage(image: { name: string; tag: string; digest: string | null }, batch: LookupBatch = {}): Promise<LabelManifest | null> {
    const same = (m: LabelManifest) => m.image.name === image.name && m.image.tag === image.tag && (image.digest === null || m.image.digest === image.digest);
    return this.orReload(async () => this.manifests.find(same) ?? null, batch);
  }

  private async orReload<T>(find: () => Promise<T | null>, batch: LookupBatch): Promise<T | null> {
    let found = await find();
    if (found) return found;
    if (this.reloading) {
      await this.reloading;
      found = await find();
    }
    if (!found && (await (batch.dirMtime ??= this.dirMtime())) !== this.loadedDirMtime) {
      await this.reload();
      found = await find();
    }
    return found;
  }

  // Synchronous: a stat of a local directory takes microseconds, where a trip
  // through the libuv pool put a thread hand-off (and, on a busy machine, a
  // wait for the CPU) on the way out of every denial no manifest holds.
  private async dirMtime(): Promise<number | null> {
    try {
      return statSync(this.dir).mtimeMs;
    } catch {
      return null;
    }
  }

  private async find(file: string, ino: number | null): Promise<FileOwner | null> {
    for (const m of this.manifests) {
      const root = m.rootfs.replace(/\/+$/, '');
      if (file.startsWith(root + '/')) return owner(m, file.slice(root.length + 1), 'rootfs-prefix');
    }
    const rel = file.replace(/^\/+/, '');
    const holders = this.manifests.filter((m) => Object.hasOwn(m.files, rel));
    if (holders.length === 0) return null;
    if (ino !== null) {
      for (const m of holders) {
        try {
          if ((await lstat(join(m.rootfs, rel))).ino === ino) return owner(m, rel, 'inode');
        } catch {
          // file gone from that rootfs: not this one
        }
      }
    }
    return holders.length === 1 ? owner(holders[0], rel, 'container-path') : null;
  }

  close(): void {
    clearTimeout(this.debounce);
    this.watcher?.close();
  }
}

export function owner(m: LabelManifest, rel: string, match: MatchKind): FileOwner {
  return {
    container: m.container,
    image: { name: m.image.name, tag: m.image.tag, digest: m.image.digest },
    policySerial: m.policySerial,
    expectedSha256: Object.hasOwn(m.files, rel) ? sha256Of(m.files[rel]) : null,
    match,
  };
}
