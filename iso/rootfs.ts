import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, realpathSync } from 'node:fs';
import { chmod, copyFile, link, lstat, mkdir, readdir, readlink, rm, stat, symlink, writeFile, lutimes } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';

// Filling a root filesystem tree from the build host's files: binaries with
// the shared libraries ldd names, busybox with its applet links, whole trees
// by hard link from a template. Paths inside a rootfs are absolute ("/usr/bin/x").

export function at(root: string, path: string): string {
  return join(root, path.replace(/^\/+/, ''));
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export async function ensureDir(root: string, path: string, mode = 0o755): Promise<void> {
  const p = at(root, path);
  await mkdir(p, { recursive: true });
  await chmod(p, mode);
}

export async function putFile(root: string, src: string, path: string, mode?: number): Promise<void> {
  const dst = at(root, path);
  await mkdir(dirname(dst), { recursive: true });
  await rm(dst, { force: true });
  await copyFile(src, dst);
  await chmod(dst, mode ?? (await stat(src)).mode & 0o7777);
}

export async function putText(root: string, path: string, text: string, mode = 0o644): Promise<void> {
  const dst = at(root, path);
  await mkdir(dirname(dst), { recursive: true });
  await rm(dst, { force: true });
  await writeFile(dst, text);
  await chmod(dst, mode);
}

export async function putSymlink(root: string, path: string, target: string): Promise<void> {
  const dst = at(root, path);
  await mkdir(dirname(dst), { recursive: true });
  await rm(dst, { force: true });
  await symlink(target, dst);
}

// The shared libraries (and the ELF interpreter) a dynamically linked host
// binary loads, as ldd resolves them on the build host.
export function sharedLibs(binary: string): string[] {
  let out: string;
  try {
    out = execFileSync('ldd', [binary], { encoding: 'utf8' });
  } catch {
    return []; // "not a dynamic executable"
  }
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const arrow = line.match(/=>\s+(\/\S+)/);
    const direct = line.match(/^\s+(\/\S+)\s+\(/);
    const p = arrow?.[1] ?? direct?.[1];
    if (p) libs.push(p);
  }
  return libs;
}

// Copies a host binary to `dest` (default: the same path) with its libraries
// at the paths the dynamic loader looks them up. Returns every host file used.
export async function putBinary(root: string, src: string, dest = src): Promise<string[]> {
  const used = [src];
  await putFile(root, realpathSync(src), dest, 0o755);
  for (const lib of sharedLibs(src)) {
    await putFile(root, realpathSync(lib), lib, 0o755);
    used.push(lib);
  }
  return used;
}

// putBinary, with the binary itself stripped of its symbol tables and debug
// sections (strip, binutils) on its way in: the host's Node.js carries 12 MB
// of them, which the node would otherwise hold in RAM (its root is the
// initramfs) and read from the ISO at every boot. Its libraries are Debian's,
// already stripped. Same input, same output bytes.
export async function putStripped(root: string, src: string, dest = src): Promise<string[]> {
  const used = await putBinary(root, src, dest);
  const dst = at(root, dest);
  try {
    execFileSync('strip', ['--strip-all', dst], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const why = (err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message;
    throw new Error(`cannot strip ${src} into the image (${why}); strip is binutils' (apt-get install binutils, or make deps)`);
  }
  return used;
}

export async function putBusybox(root: string, busybox = '/usr/bin/busybox'): Promise<string[]> {
  await putFile(root, busybox, '/bin/busybox', 0o755);
  const applets = execFileSync(busybox, ['--list-full'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const a of applets) {
    const path = `/${a}`;
    if (path === '/bin/busybox') continue;
    await putSymlink(root, path, relative(dirname(path), '/bin/busybox'));
  }
  return [busybox];
}

// Hard-links every file of `template` into `root` (like cp -al): identical
// trees in several rootfs are stored once in the archive and in guest memory.
export async function linkTree(template: string, root: string, into = '/'): Promise<void> {
  const walk = async (from: string, to: string) => {
    await mkdir(to, { recursive: true });
    await chmod(to, (await stat(from)).mode & 0o7777);
    for (const e of await readdir(from, { withFileTypes: true })) {
      const s = join(from, e.name);
      const d = join(to, e.name);
      if (e.isDirectory()) await walk(s, d);
      else if (e.isSymbolicLink()) {
        await rm(d, { force: true });
        await symlink(await readlink(s), d);
      } else {
        await rm(d, { force: true });
        await link(s, d);
      }
    }
  };
  await walk(template, at(root, into));
}

export async function walkTree(dir: string, visit: (path: string, kind: 'file' | 'dir' | 'link') => Promise<void>): Promise<void> {
  for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      await visit(p, 'dir');
      await walkTree(p, visit);
    } else await visit(p, e.isSymbolicLink() ? 'link' : 'file');
  }
}

// Replaces identical regular files (same content and mode) by hard links to
// the first one in sorted path order, so the result does not depend on the
// order files were written.
export async function dedupe(root: string): Promise<{ linked: number; savedBytes: number }> {
  const bySize = new Map<number, string[]>();
  await walkTree(root, async (p, kind) => {
    if (kind !== 'file') return;
    const s = await lstat(p);
    if (s.size === 0) return;
    const list = bySize.get(s.size) ?? [];
    list.push(p);
    bySize.set(s.size, list);
  });
  let linked = 0;
  let savedBytes = 0;
  for (const [size, paths] of bySize) {
    if (paths.length < 2) continue;
    const first = new Map<string, { path: string; ino: number }>();
    const hashOf = new Map<number, string>(); // per inode: hard links hash once
    for (const p of paths) {
      const s = await lstat(p);
      const h = hashOf.get(s.ino) ?? (await sha256File(p));
      hashOf.set(s.ino, h);
      const key = `${h}:${s.mode}`;
      const f = first.get(key);
      if (!f) {
        first.set(key, { path: p, ino: s.ino });
        continue;
      }
      if (f.ino === s.ino) continue;
      await rm(p);
      await link(f.path, p);
      linked++;
      savedBytes += size;
    }
  }
  return { linked, savedBytes };
}

// Fixed modes for directories and one timestamp for everything: the archive
// must not depend on the umask or on when the build ran.
export async function normalize(root: string, epoch: number): Promise<void> {
  const t = new Date(epoch * 1000);
  const entries: string[] = [root];
  await walkTree(root, async (p, kind) => {
    if (kind === 'dir') {
      const s = await lstat(p);
      if ((s.mode & 0o7777) !== 0o1777) await chmod(p, 0o755);
    }
    entries.push(p);
  });
  // children first, so that setting a file's time does not touch its directory's
  for (const p of entries.reverse()) await lutimes(p, t, t);
}
