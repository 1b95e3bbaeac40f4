import type { FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { SealkitError } from '../lib/errors.ts';

// Where each file of an uncompressed tar lies, read from its headers only
// (positional reads through the checked descriptor, bodies skipped), so
// that each blob can be streamed from its offset. Pax `path`/`size` and GNU
// long names are honoured; symlinks are kept, since a docker-archive may
// point one layer at another.

const BLOCK = 512;
const MAX_META = 4 * 1024 * 1024;

export interface TarEntry {
  offset: number; // of the first body byte
  size: number;
  start: number; // of its first header (an extended header when it has one)
}

export interface TarIndex {
  files: Map<string, TarEntry>; // regular files by cleaned name
  links: Map<string, string>; // symlink name → the cleaned name it points at
}

export async function indexTar(fh: FileHandle, length: number, what: string): Promise<TarIndex> {
  const bad = (why: string) => new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what} is not a tar archive the importer can read: ${why}`);
  const files = new Map<string, TarEntry>();
  const links = new Map<string, string>();
  const h = Buffer.alloc(BLOCK);
  let pos = 0;
  let paxPath: string | undefined;
  let paxSize: number | undefined;
  let longName: string | undefined;
  let ended = false;
  let start = 0;
  while (pos + BLOCK <= length) {
    if (paxPath === undefined && paxSize === undefined && longName === undefined) start = pos;
    const { bytesRead } = await fh.read(h, 0, BLOCK, pos);
    if (bytesRead !== BLOCK) throw bad(`it ends inside a header at byte ${pos}`);
    pos += BLOCK;
    if (h.every((b) => b === 0)) {
      ended = true;
      break;
    }
    if (!checksumOk(h)) throw bad(`the header at byte ${pos - BLOCK} has a wrong checksum`);
    const type = String.fromCharCode(h[156] || 0x30);
    const size = type === 'x' || type === 'L' || paxSize === undefined ? headerSize(h, bad) : paxSize;
    const body = pos;
    pos += Math.ceil(size / BLOCK) * BLOCK;
    if (pos > length) throw bad(`an entry runs past the end of the file (${length} bytes); the archive is truncated`);
    if (type === 'x' || type === 'L') {
      if (size > MAX_META) throw bad(`a ${size}-byte extended header`);
      const b = Buffer.alloc(size);
      await fh.read(b, 0, size, body);
      if (type === 'L') longName = cstr(b);
      else {
        const rec = parsePax(b);
        if (rec.path !== undefined) paxPath = rec.path;
        if (rec.size !== undefined) {
          const n = /^\d+$/.test(rec.size) ? Number(rec.size) : NaN;
          if (!Number.isSafeInteger(n)) throw bad(`an extended header with a bad size "${rec.size.slice(0, 40)}"`);
          paxSize = n;
        }
      }
      continue;
    }
    if (type === 'g') continue; // global pax header: nothing of ours in it
    const name = clean(paxPath ?? longName ?? headerName(h));
    const linkname = cstr(h.subarray(157, 257));
    paxPath = paxSize = longName = undefined;
    if (type === '0' || type === '7') files.set(name, { offset: body, size, start });
    else if (type === '2') links.set(name, clean(posix.join(posix.dirname(name), linkname)));
  }
  if (!ended) throw bad('it has no end-of-archive marker; the archive is truncated');
  return { files, links };
}

const clean = (name: string) => posix.normalize(name.replace(/^\/+/, '')).replace(/\/$/, '');

export function cstr(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}

function checksumOk(h: Buffer): boolean {
  const field = cstr(h.subarray(148, 156)).trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i];
  return sum === Number.parseInt(field, 8);
}

export function headerName(h: Buffer): string {
  const name = cstr(h.subarray(0, 100));
  const ustar = h.subarray(257, 262).toString('latin1') === 'ustar';
  const prefix = ustar ? cstr(h.subarray(345, 500)) : '';
  return prefix ? `${prefix}/${name}` : name;
}

// Shared with names.ts, which rewrites the same tar headers in a stream.
export function headerSize(h: Buffer, bad: (why: string) => Error): number {
  const f = h.subarray(124, 136);
  if (f[0] & 0x80) {
    let n = 0;
    for (let i = 1; i < f.length; i++) n = n * 256 + f[i];
    if (!Number.isSafeInteger(n)) throw bad('a header with a size too large');
    return n;
  }
  const s = cstr(f).trim();
  const n = s === '' ? 0 : /^[0-7]+$/.test(s) ? Number.parseInt(s, 8) : NaN;
  if (!Number.isSafeInteger(n)) throw bad(`a header with a bad size field "${s}"`);
  return n;
}

export function parsePax(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < body.length) {
    const sp = body.indexOf(0x20, i);
    if (sp < 0) break;
    const len = Number.parseInt(body.subarray(i, sp).toString('latin1'), 10);
    if (!len) break;
    const rec = body.subarray(sp + 1, i + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    i += len;
  }
  return out;
}
