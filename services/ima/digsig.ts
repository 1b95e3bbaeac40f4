import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, privateEncrypt, constants, type KeyObject } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { SealkitError } from '../lib/errors.ts';
import { writeFileAtomic } from '../lib/atomic.ts';
import { EVM_IMA_XATTR_DIGSIG, HASH_ALGO_SHA256 } from './label.ts';

const run = promisify(execFile);

// IMA signature mode: security.ima = signature_v2_hdr {type 0x03, version 2,
// hash_algo, keyid (4 bytes, big endian), sig_size (BE16)} + an RSA PKCS#1
// v1.5 signature over the file's SHA-256. The kernel finds the key in the
// _ima keyring by keyid, which is the last 4 bytes of the X.509 subject key
// identifier: SHA-1 of the DER RSAPublicKey (ima-evm-utils calc_keyid_v2).

const DIGSIG_VERSION_2 = 2;
// DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1)
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

export interface SigningKey {
  key: KeyObject;
  keyid: Buffer; // 4 bytes
  certDer: string; // X.509 certificate (DER): for the _ima keyring and `evmctl ima_verify --key` (1.4 reads DER)
  certPem: string; // same certificate, PEM, for people and openssl
}

export function keyidV2(pub: KeyObject): Buffer {
  const der = pub.export({ type: 'pkcs1', format: 'der' });
  return createHash('sha1').update(der).digest().subarray(16, 20);
}

export function signatureLabel(sha256: string, sk: Pick<SigningKey, 'key' | 'keyid'>): Buffer {
  const sig = privateEncrypt({ key: sk.key, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([SHA256_DIGEST_INFO, Buffer.from(sha256, 'hex')]));
  const hdr = Buffer.alloc(9);
  hdr[0] = EVM_IMA_XATTR_DIGSIG;
  hdr[1] = DIGSIG_VERSION_2;
  hdr[2] = HASH_ALGO_SHA256;
  sk.keyid.copy(hdr, 3);
  hdr.writeUInt16BE(sig.length, 7);
  return Buffer.concat([hdr, sig]);
}

// The node's IMA signing key: <dir>/ima-key.pem (0600) and its self-signed
// certificate <dir>/ima-cert.{der,pem}, created on first use.
export async function loadOrCreateSigningKey(dir: string, node: string): Promise<SigningKey> {
  const keyPath = join(dir, 'ima-key.pem');
  const certDer = join(dir, 'ima-cert.der');
  const certPem = join(dir, 'ima-cert.pem');
  if (!(await exists(keyPath)) || !(await exists(certDer))) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    await writeFileAtomic(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), 0o600);
    const subj = `/O=sealkit/CN=sealkit ima signing key ${node.replace(/[^A-Za-z0-9._-]/g, '-')}`;
    try {
      await run('openssl', ['req', '-new', '-x509', '-key', keyPath, '-days', '36500', '-subj', subj, '-sha256',
        '-addext', 'subjectKeyIdentifier=hash', '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'keyUsage=critical,digitalSignature',
        '-outform', 'PEM', '-out', certPem]);
      await run('openssl', ['x509', '-in', certPem, '-outform', 'DER', '-out', certDer]);
    } catch (err) {
      throw new SealkitError('SEALKIT_IMA_UNAVAILABLE', `cannot create the IMA signing certificate with openssl in ${dir}: ${(err as Error).message}; install openssl or turn off ima.signatures`);
    }
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(await readFile(keyPath));
  } catch (err) {
    throw new SealkitError('SEALKIT_KEY_INVALID', `IMA signing key ${keyPath} is unreadable: ${(err as Error).message}; delete it and its certificate to create a new pair`);
  }
  if (key.asymmetricKeyType !== 'rsa') throw new SealkitError('SEALKIT_KEY_INVALID', `IMA signing key ${keyPath} is ${key.asymmetricKeyType}, expected RSA`);
  return { key, keyid: keyidV2(createPublicKey(key)), certDer, certPem };
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(() => true, () => false);
}
