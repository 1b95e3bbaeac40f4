import { getAttribute, setAttribute } from 'fs-xattr';
import { SealkitError } from '../lib/errors.ts';
import { SHA256_HEX } from '../lib/digest.ts';

// The kernel's security.ima formats (security/integrity/integrity.h):
// IMA_XATTR_DIGEST_NG = 0x04 followed by the hash algorithm id
// (HASH_ALGO_SHA256 = 4) and the digest — what `evmctl ima_hash -a sha256`
// writes; EVM_IMA_XATTR_DIGSIG = 0x03 starts a signature_v2_hdr.
export const XATTR = 'security.ima';
export const IMA_XATTR_DIGEST_NG = 0x04;
export const EVM_IMA_XATTR_DIGSIG = 0x03;
export const HASH_ALGO_SHA256 = 4;

export function digestLabel(sha256: string): Buffer {
  if (!SHA256_HEX.test(sha256)) {
    throw new SealkitError('SEALKIT_LABEL_FAILED', `"${sha256}" is not a SHA-256 hex digest; a security.ima label needs 64 lowercase hex characters`);
  }
  return Buffer.concat([Buffer.from([IMA_XATTR_DIGEST_NG, HASH_ALGO_SHA256]), Buffer.from(sha256, 'hex')]);
}

// The digest a label vouches for, or null when it is not a sha256 digest label.
export function labelDigest(label: Buffer): string | null {
  if (label.length === 34 && label[0] === IMA_XATTR_DIGEST_NG && label[1] === HASH_ALGO_SHA256) return label.subarray(2).toString('hex');
  return null;
}

export async function writeLabel(path: string, value: Buffer): Promise<void> {
  try {
    await setAttribute(path, XATTR, value);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint = e.code === 'ENOTSUP' || e.code === 'EOPNOTSUPP'
      ? 'the filesystem does not support security.* xattrs; put the container store on ext4, xfs or tmpfs'
      : e.code === 'EPERM' || e.code === 'EACCES'
        ? 'writing security.* xattrs needs CAP_SYS_ADMIN; run the ima service as root'
        : 'check that the file still exists and the filesystem is writable';
    throw new SealkitError('SEALKIT_LABEL_FAILED', `cannot write ${XATTR} on ${path}: ${e.message}; ${hint}`, { path, errno: e.code });
  }
}

export async function readLabel(path: string): Promise<Buffer | null> {
  try {
    return await getAttribute(path, XATTR);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENODATA' || code === 'ENOATTR' || code === 'ENOENT') return null;
    throw err;
  }
}
