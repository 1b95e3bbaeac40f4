import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type Readable } from 'node:stream';
import { SealkitError } from '../errors.ts';
import { invalid, type Recorded } from './catalog.ts';
import type { Compression } from './compression.ts';
import type { ArchiveOptions, OpenedImage } from './image.ts';
import { drain, EntryGuard, unpackedTar, walkTar, type Budget, type SafeHeader } from './tar-guard.ts';

// One layer tar, walked: decompressed, metered, hashed to its diffId, every
// entry through a guard of its own. The opening pass walks each layer to
// verify it; the unpacker walks one again to build a rootfs from it.

type EntryFn = (header: SafeHeader, body: Readable) => Promise<void> | void;

// `hashDiff: false` when the caller hashes the same bytes already (an
// uncompressed layer's diffId is its stored digest): the diffId is then ''.
async function walkLayer(src: Readable, compression: Compression, opts: ArchiveOptions, what: string, budget: Budget, fn: EntryFn, hashDiff = true): Promise<string> {
  const diff = hashDiff ? createHash('sha256') : undefined;
  const plain = unpackedTar(src, compression, opts.limits, what, diff);
  await walkTar(plain, new EntryGuard(opts.limits, what, budget, opts.allowAbsoluteSymlinks ?? false), what, fn);
  // the tar parser may stop at the end-of-archive blocks: hash the rest too
  await drain(plain);
  return diff ? `sha256:${diff.digest('hex')}` : '';
}

/**
 * Walk a layer during the opening pass and remember the outcome instead of
 * throwing: it only matters if the manifest turns out to name this entry.
 * The budget is the archive's, shared by all its layers. An uncompressed
 * layer comes back without a diffId: it is the digest of the entry's own
 * bytes, which the caller hashes anyway (a second SHA-256 of the same bytes
 * was half the cost of opening an archive).
 */
export async function scanLayer(src: Readable, compression: Compression, opts: ArchiveOptions, what: string, budget: Budget): Promise<Recorded['layer']> {
  let entries = 0;
  try {
    const plain = compression === 'none';
    const diffId = await walkLayer(src, compression, opts, what, budget, () => {
      entries++;
    }, !plain);
    return { compression, diffId: plain ? undefined : diffId, entries };
  } catch (err) {
    src.resume(); // keep the outer pass flowing
    return { compression, error: err instanceof SealkitError ? err : invalid(what, (err as Error).message) };
  }
}

/**
 * Stream the entries of one layer of an opened image through the guard. The
 * layer's stored digest and diffId are re-checked while streaming; a
 * mismatch throws at the end, so the caller must unpack into a staging
 * directory and discard it on any error. Whiteouts (`.wh.name`,
 * `.wh..wh..opq`) are passed through for the caller to apply.
 */
export async function streamLayer(path: string, image: OpenedImage, opts: ArchiveOptions, layerIndex: number, fn: EntryFn): Promise<void> {
  const what = opts.what ?? path;
  const layer = image.layers[layerIndex];
  if (!layer) throw new SealkitError('SEALKIT_BAD_REQUEST', `${what} has ${image.layers.length} layers; there is no layer ${layerIndex}`);
  const lwhat = `${what} layer ${layerIndex}`;
  const outer = unpackedTar(createReadStream(path, { highWaterMark: 1 << 20 }), image.compression, opts.limits, what);
  let found = false;
  await walkTar(outer, new EntryGuard(opts.limits, what), what, async (h, body) => {
    if (found || h.name !== layer.entry) return;
    found = true;
    const stored = createHash('sha256');
    const tap = new Transform({
      transform(chunk: Buffer, _e, cb) {
        stored.update(chunk);
        cb(null, chunk);
      },
    });
    (body as unknown as NodeJS.ReadableStream).pipe(tap);
    body.on('error', (e: Error) => tap.destroy(e));
    const gotDiff = await walkLayer(tap, layer.compression, opts, lwhat, { entries: 0, bytes: 0 }, fn);
    await drain(tap);
    const gotStored = `sha256:${stored.digest('hex')}`;
    if (gotStored !== layer.digest || gotDiff !== layer.diffId) {
      throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${lwhat} changed since it was verified (blob ${gotStored}, diff ${gotDiff}; expected ${layer.digest}, ${layer.diffId}); discard what was unpacked`, { expected: layer.diffId, actual: gotDiff });
    }
  });
  if (!found) throw invalid(what, `no longer contains layer ${layerIndex} ("${layer.entry}")`);
}
