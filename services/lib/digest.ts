import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { SealkitError } from './errors.ts';

export const SHA256_HEX = /^[0-9a-f]{64}$/;

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

// Hash a file with a streaming read; memory stays flat with file size.
export async function sha256File(path: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}

// Accepts "sha256:<hex>" or "<hex>"; returns the bare lowercase hex.
export function parseSha256(value: string, what: string): string {
  const hex = value.startsWith('sha256:') ? value.slice(7) : value;
  if (!SHA256_HEX.test(hex)) {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `${what} is not a SHA-256 digest: "${value}"; give 64 lowercase hex characters, optionally prefixed "sha256:"`);
  }
  return hex;
}

export function short(hex: string): string {
  return hex.slice(0, 12);
}
