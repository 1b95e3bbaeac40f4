import { execFile } from 'node:child_process';
import { constants } from 'node:os';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SealkitError } from '../lib/errors.ts';

// The IPE policy sealkit deploys (Documentation/admin-guide/LSM/ipe.rst):
// executing is denied except from the initramfs (boot_verified) and for
// files whose fs-verity digest the owner listed; everything else IPE
// governs is left alone. The policy is signed by the owner's key, which the
// kernel finds in .platform (UEFI db): the node holds no key that could
// authorise a new executable.

const run = promisify(execFile);
// Linux's numbers; Node's errno table has no key errors
const ENOKEY = 126;
const EKEYREJECTED = 129;

export const IPE_POLICY_NAME = 'sealkit';

// policy_version is three u16s; a sealkit serial (up to 2^48-1) fills them,
// so a higher serial is a higher version and the kernel's rollback check
// (ESTALE) is the serial's.
export function ipeVersion(serial: number): string {
  if (!Number.isSafeInteger(serial) || serial < 0 || serial >= 2 ** 48) {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `IPE policy serial ${serial} is not an integer from 0 to 2^48-1; give --serial a whole number that increases with each policy`);
  }
  return [Math.floor(serial / 2 ** 32), Math.floor(serial / 2 ** 16) % 2 ** 16, serial % 2 ** 16].join('.');
}

export function composeIpePolicy(o: { serial: number; digests: Iterable<string>; name?: string }): string {
  const digests = [...new Set(o.digests)].sort();
  for (const d of digests) {
    if (!/^[0-9a-f]{64}$/.test(d)) throw new SealkitError('SEALKIT_BAD_REQUEST', `"${d}" is not an fs-verity SHA-256 digest (64 lower-case hex digits)`);
  }
  return [
    `policy_name=${o.name ?? IPE_POLICY_NAME} policy_version=${ipeVersion(o.serial)}`,
    'DEFAULT action=ALLOW',
    'DEFAULT op=EXECUTE action=DENY',
    'op=EXECUTE boot_verified=TRUE action=ALLOW',
    ...digests.map((d) => `op=EXECUTE fsverity_digest=sha256:${d} action=ALLOW`),
    '',
  ].join('\n');
}

// The rules a deployed policy allows, read back from its text.
export function parseIpePolicy(text: string): { name: string; version: string; digests: Set<string>; signatureRule: boolean } {
  const head = /^policy_name=(\S+) policy_version=(\d+\.\d+\.\d+)/m.exec(text);
  if (!head) throw new SealkitError('SEALKIT_BAD_REQUEST', 'the IPE policy has no "policy_name=… policy_version=X.Y.Z" line');
  const digests = new Set([...text.matchAll(/fsverity_digest=sha256:([0-9a-f]{64})/g)].map((m) => m[1]));
  return { name: head[1], version: head[2], digests, signatureRule: /fsverity_signature=TRUE/.test(text) };
}

// PKCS#7 with the policy inside, no signed attributes: the form the kernel's
// verify_pkcs7_signature takes (ipe.rst, "Deploying Policies").
export async function signIpePolicy(policyFile: string, certPem: string, keyPem: string, out: string): Promise<void> {
  await run('openssl', ['smime', '-sign', '-in', policyFile, '-signer', certPem, '-inkey', keyPem, '-noattr', '-nodetach', '-nosmimecap', '-binary', '-outform', 'der', '-out', out]).catch((err: Error & { stderr?: string }) => {
    throw new SealkitError('SEALKIT_KEY_INVALID', `cannot sign the IPE policy ${policyFile} with ${certPem} and ${keyPem}: ${(err.stderr ?? err.message).trim()}; give the owner's certificate and its private key (PEM)`);
  });
}

// What the kernel's errno on a policy write means, as a coded error.
export function policyWriteError(errno: number, file: string, what: string): SealkitError {
  const e = constants.errno;
  const data = { file, errno };
  switch (errno) {
    case e.ESTALE:
      return new SealkitError('SEALKIT_POLICY_ROLLBACK', `the kernel refused ${what}: its version is not higher than the active one (ESTALE); sign it again with a higher --serial`, data);
    case ENOKEY:
    case EKEYREJECTED:
      return new SealkitError('SEALKIT_KEY_UNTRUSTED', `the kernel refused ${what}: it is not signed by a key in .platform (UEFI db) or the kernel's trusted keyrings; enrol the owner certificate in the firmware's db (README, "IPE and fs-verity")`, data);
    case e.EBADMSG:
      return new SealkitError('SEALKIT_SIGNATURE_INVALID', `the kernel refused ${what}: it is not a signed PKCS#7 policy (EBADMSG); sign it with "sealkit ipe policy"`, data);
    default:
      return new SealkitError('SEALKIT_IPE_POLICY_REFUSED', `the kernel refused ${what} (errno ${errno}); check the policy text and the kernel log`, data);
  }
}

async function writeOrExplain(file: string, data: Uint8Array | string, what: string): Promise<void> {
  await writeFile(file, data).catch((err: NodeJS.ErrnoException) => {
    throw err.errno !== undefined ? policyWriteError(-err.errno, file, what) : err;
  });
}

// Deploy (first time this boot) or update the signed policy, then make it
// the active one. Policies live only until reboot: the boot step does this
// before any container starts.
export async function deployIpePolicy(securityfs: string, p7b: Uint8Array, name = IPE_POLICY_NAME): Promise<{ updated: boolean }> {
  const ipe = join(securityfs, 'ipe');
  const dir = join(ipe, 'policies', name);
  const updated = await access(dir).then(() => true, () => false);
  await writeOrExplain(updated ? join(dir, 'update') : join(ipe, 'new_policy'), p7b, `the IPE policy "${name}"`);
  await writeOrExplain(join(dir, 'active'), '1', `activating the IPE policy "${name}"`);
  return { updated };
}

// The state IPE is in: enforcing or not, and the sealkit policy it holds.
export async function readIpeState(securityfs: string, name = IPE_POLICY_NAME): Promise<{ present: boolean; enforce: boolean | null; active: boolean; version: string | null; text: string | null }> {
  const ipe = join(securityfs, 'ipe');
  const read = (f: string) => readFile(join(ipe, f), 'utf8').then((s) => s.trim(), () => null);
  const present = await access(ipe).then(() => true, () => false);
  const enforce = await read('enforce');
  return {
    present,
    enforce: enforce === null ? null : enforce === '1',
    active: (await read(`policies/${name}/active`)) === '1',
    version: await read(`policies/${name}/version`),
    text: await read(`policies/${name}/policy`),
  };
}
