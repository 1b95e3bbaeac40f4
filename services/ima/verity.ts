import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

// The fs-verity file digest, computed from a file's bytes the way the kernel
// does (Documentation/filesystems/fsverity.rst, "File digest computation"):
// a Merkle tree of SHA-256 over 4096-byte blocks, no salt, and the digest of
// the 256-byte fsverity_descriptor holding its root. The owner's tooling
// derives IPE's fsverity_digest= rules from a verified image with it; the
// node compares what the kernel measures against it.

export const VERITY_BLOCK = 4096;
const HASH = 32;
const READ = 1 << 20;

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest();

// Hashes of one level, packed into zero-padded blocks, hashed again until
// one block is left; its hash is the root. An empty file has a zero root.
function rootOf(level0: Buffer, dataSize: number): Buffer {
  if (dataSize === 0) return Buffer.alloc(HASH);
  let level = level0;
  while (level.length > HASH) {
    const blocks = Math.ceil(level.length / VERITY_BLOCK);
    const next = Buffer.alloc(blocks * HASH);
    const padded = Buffer.alloc(blocks * VERITY_BLOCK);
    level.copy(padded);
    for (let i = 0; i < blocks; i++) sha256(padded.subarray(i * VERITY_BLOCK, (i + 1) * VERITY_BLOCK)).copy(next, i * HASH);
    level = next;
  }
  return level;
}

// struct fsverity_descriptor: version 1, hash algorithm 1 (SHA-256),
// log2(block size), salt size 0, sig_size 0, data size (le64), root hash
// (64 bytes, zero-padded), salt (32), reserved (144).
export function descriptorDigest(root: Buffer, dataSize: number): string {
  const d = Buffer.alloc(256);
  d[0] = 1;
  d[1] = 1;
  d[2] = 12;
  d.writeBigUInt64LE(BigInt(dataSize), 8);
  root.copy(d, 16);
  return sha256(d).toString('hex');
}

// The file is read in 1 MiB pieces; only the data blocks' hashes are kept
// (32 bytes per 4 KiB).
export async function verityDigestOfFile(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const hashes: Buffer[] = [];
    const buf = Buffer.alloc(READ);
    let size = 0;
    for (;;) {
      let got = 0;
      while (got < READ) {
        const { bytesRead } = await fh.read(buf, got, READ - got, size + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      if (got === 0) break;
      size += got;
      for (let off = 0; off < got; off += VERITY_BLOCK) {
        const end = Math.min(off + VERITY_BLOCK, got);
        const block = end - off === VERITY_BLOCK ? buf.subarray(off, end) : Buffer.concat([buf.subarray(off, end), Buffer.alloc(VERITY_BLOCK - (end - off))]);
        hashes.push(sha256(block));
      }
      if (got < READ) break;
    }
    return descriptorDigest(rootOf(Buffer.concat(hashes), size), size);
  } finally {
    await fh.close();
  }
}
