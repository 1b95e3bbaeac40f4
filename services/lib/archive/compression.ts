import { spawn } from 'node:child_process';
import { channel } from 'node:diagnostics_channel';
import { open } from 'node:fs/promises';
import { PassThrough, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { SealkitError } from '../errors.ts';

// The one decompressor of sealkit, for the fetcher's archive checks and the
// importer's read of the cache alike. A decompressor is exactly what a
// crafted stream wants to reach: only bytes whose digest was verified may be
// handed to decompress().

export type Compression = 'none' | 'gzip' | 'xz' | 'zstd';

/**
 * Every decompressor start is published here as {compression, what}, so
 * whoever watches the process (node:diagnostics_channel) can see which bytes
 * reached one; nothing is published while no one subscribes.
 */
export const DECOMPRESSOR_START = 'sealkit:archive:decompressor-start';
const started = channel(DECOMPRESSOR_START);

const MAGIC: Array<[Compression, number[]]> = [
  ['gzip', [0x1f, 0x8b]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
];

/** Compression by magic bytes; anything else is 'none'. */
export function sniffCompression(head: Uint8Array): Compression {
  for (const [how, magic] of MAGIC) if (magic.every((b, i) => head[i] === b)) return how;
  return 'none';
}

export async function detectCompression(path: string): Promise<Compression> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(6);
    const { bytesRead } = await fh.read(head, 0, 6, 0);
    return sniffCompression(head.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

const mediaTypes: Record<Compression, string> = {
  none: 'application/x-tar',
  gzip: 'application/gzip',
  xz: 'application/x-xz',
  zstd: 'application/zstd',
};

/** The media type of a whole archive file with this compression. */
export function archiveMediaType(c: Compression): string {
  return mediaTypes[c];
}

/**
 * Decompress a stream: zlib in-process for gzip, `xz -dc` / `zstd -dc`
 * children otherwise. Bad data fails the output with SEALKIT_ARCHIVE_INVALID;
 * a missing xz or zstd with SEALKIT_CONFIG (the node lacks a tool, the bytes
 * may be fine). Destroying the output ends the decompressor and `src`.
 */
export function decompress(src: Readable, how: Compression, what: string): Readable {
  if (how === 'none') return src;
  if (started.hasSubscribers) started.publish({ compression: how, what });
  return how === 'gzip' ? gunzip(src, what) : child(src, how, what);
}

function gunzip(src: Readable, what: string): Readable {
  const z = createGunzip({ chunkSize: 1 << 20 });
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  src.on('error', (e) => out.destroy(e));
  z.on('error', (e) => out.destroy(new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what} is not valid gzip data: ${e.message}`)));
  out.on('close', () => {
    z.destroy();
    stopReading(src);
  });
  src.pipe(z).pipe(out);
  return out;
}

function child(src: Readable, how: 'xz' | 'zstd', what: string): Readable {
  const proc = spawn(how, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000);
  });
  proc.stdin.on('error', () => {}); // EPIPE when the reader stopped early
  proc.on('error', (e) => out.destroy(new SealkitError('SEALKIT_CONFIG', `cannot run ${how} to read ${what}: ${e.message}; install ${how} on the node`)));
  src.on('error', (e) => out.destroy(e));
  src.pipe(proc.stdin);
  proc.stdout.pipe(out, { end: false });
  proc.on('close', (code) => {
    if (out.destroyed) return;
    if (code === 0) out.end();
    else out.destroy(new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what} is not valid ${how} data: ${stderr.trim() || `exit ${code}`}`));
  });
  // a decompressor child must never be left waiting for a reader that left
  out.on('close', () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    stopReading(src);
  });
  return out;
}

// When the reader left early, the source is torn down too. A source read to
// its end is left alone: destroying it would close a FileHandle it reads
// from, which the importer still needs to stat after the read.
function stopReading(src: Readable): void {
  if (!src.readableEnded) src.destroy();
}
