import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { EntryGuard, walkTar, type ArchiveLimits } from '../../services/lib/archive/tar-guard.ts';
import { check, mutated, type Target } from './harness.ts';
import { entryList, tarBytes } from './tar-gen.ts';
import { TreeModel } from './tree.ts';

// One hostile tar through tar-stream and the EntryGuard (walkTar), fed in
// random chunks. Every admitted entry is replayed on the TreeModel oracle;
// the entry and byte limits must hold.

export const LIMITS: ArchiveLimits = { maxArchiveEntries: 40, maxUnpackedBytes: 64 * 1024 };

// options come from the input, so a saved case replays exactly
export function optionsOf(input: Uint8Array) {
  const h = createHash('sha256').update(input).digest();
  return { allowAbsoluteSymlinks: (h[0] & 1) === 1, chunk: 1 + (h[1] % 3 === 0 ? h[2] * 7 : 65536) };
}

const tars = fc.tuple(entryList, fc.boolean()).map(([entries, trailer]) => new Uint8Array(tarBytes(entries, { trailer })));

export const target: Target = {
  name: 'tar-guard',
  timeoutMs: 10_000,
  arbitrary: () => fc.oneof({ weight: 5, arbitrary: tars }, { weight: 2, arbitrary: mutated(tars, 4) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2048 }) }),
  async run(input) {
    const o = optionsOf(input);
    const buf = Buffer.from(input);
    const chunks: Buffer[] = [];
    for (let i = 0; i < buf.length; i += o.chunk) chunks.push(buf.subarray(i, i + o.chunk));
    const model = new TreeModel(o.allowAbsoluteSymlinks);
    const guard = new EntryGuard(LIMITS, 'fuzz tar', { entries: 0, bytes: 0 }, o.allowAbsoluteSymlinks);
    let bodyBytes = 0;
    await walkTar(Readable.from(chunks), guard, 'fuzz tar', async (h, body) => {
      model.admit(h);
      for await (const c of body as AsyncIterable<Buffer>) bodyBytes += c.length;
    });
    check(model.entries <= LIMITS.maxArchiveEntries, `${model.entries} entries admitted, limit ${LIMITS.maxArchiveEntries}`);
    check(model.bytes <= LIMITS.maxUnpackedBytes && bodyBytes <= LIMITS.maxUnpackedBytes, `${model.bytes}/${bodyBytes} bytes admitted, limit ${LIMITS.maxUnpackedBytes}`);
  },
};
