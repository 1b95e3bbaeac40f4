import { createHash, randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm, symlink, link, chmod, lchown } from 'node:fs/promises';
import { basename, dirname, join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { SealkitError } from '../errors.ts';
import { forEachLayerEntry, openImage, type ArchiveOptions, type SafeHeader } from '../archive/index.ts';

// Unpack a verified image archive into a rootfs: layers in order, OCI
// whiteouts applied, every regular file's SHA-256 computed from the tar
// stream as it is written (never by re-reading the disk). Everything lands in
// a staging directory next to the destination and is renamed into place only
// when complete, so no half-written rootfs is ever visible.

export interface Unpacked {
  files: Record<string, string>; // rootfs-relative path → sha256 hex
  bytes: number;
  layers: number;
  manifestDigest: string | null;
  config: Record<string, unknown>; // the image config, verified with the archive
}

const WH = '.wh.';
const OPAQUE = '.wh..wh..opq';
const asRoot = process.getuid?.() === 0;

export function stagingPath(dest: string): string {
  return `${stagingPrefix(dest)}${randomBytes(4).toString('hex')}`;
}

function stagingPrefix(dest: string): string {
  return join(dirname(dest), `.${basename(dest)}.unpack-`);
}

// What a run killed mid-unpack left next to dest: never committed, only
// taking space.
export async function discardUnfinished(dest: string): Promise<void> {
  const prefix = basename(stagingPrefix(dest));
  const entries = await readdir(dirname(dest)).catch(() => [] as string[]);
  for (const n of entries) if (n.startsWith(prefix)) await rm(join(dirname(dest), n), { recursive: true, force: true });
}

// Build the rootfs in `staging` (which must not exist). The caller labels it
// and then calls commit(); on any error it removes the staging directory.
export async function unpackInto(archive: string, staging: string, opts: ArchiveOptions): Promise<Unpacked> {
  const what = opts.what ?? archive;
  const image = await openImage(archive, { ...opts, allowAbsoluteSymlinks: true });
  await mkdir(staging, { recursive: false, mode: 0o755 });
  const files = new Map<string, string>();
  const sizes = new Map<string, number>();
  // directories known to be real directories (not symlinks) inside staging
  const realDirs = new Set<string>(['']);

  const at = (rel: string) => (rel ? join(staging, rel) : staging);
  const unsafe = (name: string, why: string): never => {
    throw new SealkitError('SEALKIT_ARCHIVE_UNSAFE', `${what}: entry "${name}" ${why}; the image was refused`, { entry: name });
  };
  const forget = (rel: string) => {
    for (const k of [...files.keys()]) if (k === rel || k.startsWith(`${rel}/`)) files.delete(k);
    for (const d of [...realDirs]) if (d === rel || d.startsWith(`${rel}/`)) realDirs.delete(d);
  };
  const remove = async (rel: string) => {
    await rm(at(rel), { recursive: true, force: true });
    forget(rel);
  };
  // Parents must be directories we made: a symlink left by a lower layer
  // must never be followed on the host.
  const ensureParents = async (rel: string, name: string) => {
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (realDirs.has(dir)) continue;
      let st: Stats | null = null;
      try {
        st = await lstat(at(dir));
      } catch {
        // missing: create it below
      }
      if (st && st.isSymbolicLink()) unsafe(name, `would be written through the symlink "${dir}" from a lower layer`);
      if (st && !st.isDirectory()) await remove(dir);
      if (!st || !st.isDirectory()) await mkdir(at(dir), { mode: 0o755 });
      realDirs.add(dir);
    }
  };
  const owner = async (rel: string, h: SafeHeader) => {
    if (asRoot && h.uid !== undefined && h.gid !== undefined) await lchown(at(rel), h.uid, h.gid);
  };

  for (const layer of image.layers) {
    const fromThisLayer = new Set<string>();
    await forEachLayerEntry(archive, { ...opts, image, allowAbsoluteSymlinks: true }, layer.index, async (h: SafeHeader, body: Readable) => {
      const name = h.name;
      if (name === '') return; // the layer root itself
      const base = posix.basename(name);
      const dir = posix.dirname(name) === '.' ? '' : posix.dirname(name);
      if (base === OPAQUE) {
        // hide everything lower layers put in this directory
        await ensureParents(name, name);
        for (const e of await readdir(at(dir))) {
          const rel = dir ? `${dir}/${e}` : e;
          if (!fromThisLayer.has(rel)) await remove(rel);
        }
        return;
      }
      if (base.startsWith(WH)) {
        await remove(dir ? `${dir}/${base.slice(WH.length)}` : base.slice(WH.length));
        return;
      }
      fromThisLayer.add(name);
      await ensureParents(name, name);
      const existing = await lstat(at(name)).catch(() => null);
      switch (h.type) {
        case 'directory':
          if (existing && !existing.isDirectory()) await remove(name);
          if (!existing || !existing.isDirectory()) await mkdir(at(name));
          await chmod(at(name), (h.mode ?? 0o755) & 0o7777);
          await owner(name, h);
          realDirs.add(name);
          return;
        case 'symlink':
          if (existing) await remove(name);
          await symlink(h.linkname!, at(name));
          await owner(name, h);
          return;
        case 'link': {
          const target = posix.normalize(h.linkname!);
          if (!files.has(target)) unsafe(name, `is a hardlink to "${target}", which is not a regular file in the rootfs`);
          if (existing) await remove(name);
          await link(at(target), at(name));
          files.set(name, files.get(target)!);
          sizes.set(name, 0); // same inode: counted once
          return;
        }
        default: {
          // regular file: written and hashed from the same verified bytes
          if (existing) await remove(name);
          const fh = await open(at(name), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
          const hash = createHash('sha256');
          let size = 0;
          try {
            for await (const chunk of body as AsyncIterable<Buffer>) {
              hash.update(chunk);
              size += chunk.length;
              await fh.write(chunk);
            }
            await fh.chmod((h.mode ?? 0o644) & 0o7777);
          } finally {
            await fh.close();
          }
          await owner(name, h);
          files.set(name, hash.digest('hex'));
          sizes.set(name, size);
        }
      }
    });
  }
  let bytes = 0;
  for (const k of files.keys()) bytes += sizes.get(k) ?? 0;
  return { files: Object.fromEntries([...files.entries()].sort(([a], [b]) => (a < b ? -1 : 1))), bytes, layers: image.layers.length, manifestDigest: image.manifestDigest, config: image.config };
}

// Swap the finished staging tree into place: the old rootfs (if any) moves
// aside first and is removed after.
export async function commit(staging: string, dest: string): Promise<void> {
  const old = `${stagingPath(dest)}.old`;
  let moved = false;
  try {
    await rename(dest, old);
    moved = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await rename(staging, dest);
  if (moved) await rm(old, { recursive: true, force: true });
}
