import { SealkitError } from '../lib/errors.ts';
import type { ImagePolicy, Policy } from '../lib/policy.ts';
import { checkThreshold, imageStatement, type DetachedSignature, type SignatureFile, type Statement } from '../lib/sign.ts';

export { signImage, type SignatureFile, type Statement } from '../lib/sign.ts';

export const MAX_SIGNATURE_FILE = 64 * 1024;

export function parseSignatureFile(bytes: Uint8Array, where: string): SignatureFile {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new SealkitError('SEALKIT_SIGNATURE_INVALID', `signature file ${where} is not JSON; it must be {"signatures":[{"keyid","sig"}]}`);
  }
  const list = (doc as { signatures?: unknown } | null)?.signatures;
  if (!Array.isArray(list) || !list.every((s) => s && typeof s.keyid === 'string' && typeof s.sig === 'string')) {
    throw new SealkitError('SEALKIT_SIGNATURE_INVALID', `signature file ${where} must be {"signatures":[{"keyid":"…","sig":"<base64>"}]}`);
  }
  return { signatures: list.map((s: DetachedSignature) => ({ keyid: s.keyid, sig: s.sig })) };
}

export function signatureUrl(img: ImagePolicy): string {
  if (img.signatures?.url) return img.signatures.url;
  if (img.source.startsWith('oci://')) {
    throw new SealkitError('SEALKIT_SIGNATURE_MISSING', `${img.name}: signatures are required but an oci:// source has no default signature location; set images[].signatures.url`);
  }
  return `${img.source}.sig`;
}

/** Check N of M over the statement; returns the key ids that signed. */
export function checkImageSignatures(img: ImagePolicy, policy: Policy, statement: Statement, file: SignatureFile): string[] {
  const rule = img.signatures;
  if (!rule) return [];
  const allowed = policy.keys.filter((k) => rule.keys.includes(k.id));
  return checkThreshold('sealkit-image-v1', imageStatement(statement), file.signatures, allowed, rule.threshold, `${img.name}:${img.tag} (sha256 ${statement.sha256.slice(0, 12)}…)`);
}
