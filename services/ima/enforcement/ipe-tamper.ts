import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseIpePolicy, readIpeState } from '../ipe.ts';
import { securityfsOf } from './enforcement.ts';

// What weakens IPE on a running node without touching a file of the store,
// checked every few seconds while IPE is the mechanism and reported on
// audit.tamper at once (scope node: no container's file changed).

export type NodeTamperKind = 'ipe-enforce-off' | 'ipe-policy-inactive' | 'ipe-signature-rule' | 'firmware-setup-mode' | 'initramfs-root-writable';

export interface NodeTamper {
  scope: 'node';
  mechanism: 'ipe-verity';
  kind: NodeTamperKind;
  detail: string;
  action: 'reported';
}

export interface TamperPaths {
  securityfs?: string;
  efivars?: string; // where efivarfs is mounted
  mountinfo?: string;
}

export const SETUP_MODE_VAR = 'SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c';

// An efivarfs file is 4 bytes of attributes, then the value: SetupMode 1
// means no PK is enrolled, so root can append to db through efivarfs.
export function setupModeOf(bytes: Uint8Array): boolean | null {
  return bytes.length >= 5 ? bytes[4] === 1 : null;
}

// The mount of "/" from mountinfo: the initramfs root boot_verified trusts.
export function rootWritable(mountinfo: string): boolean | null {
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f[4] === '/') return f[5]?.split(',').includes('rw') ?? null;
  }
  return null;
}

const tamper = (kind: NodeTamperKind, detail: string): NodeTamper => ({ scope: 'node', mechanism: 'ipe-verity', kind, detail, action: 'reported' });

export async function ipeTamper(p: TamperPaths = {}): Promise<NodeTamper[]> {
  const securityfs = securityfsOf(p);
  const found: NodeTamper[] = [];
  const ipe = await readIpeState(securityfs);
  if (!ipe.present) return found;
  if (ipe.enforce === false) found.push(tamper('ipe-enforce-off', `${join(securityfs, 'ipe/enforce')} reads 0: IPE only audits, nothing is refused (root wrote 0; audit record type 1404)`));
  if (!ipe.active) found.push(tamper('ipe-policy-inactive', 'the sealkit IPE policy is not the active one: another signed policy was activated, or none was deployed this boot'));
  else if (ipe.text && parseIpePolicy(ipe.text).signatureRule) {
    found.push(tamper('ipe-signature-rule', 'the active IPE policy trusts fsverity_signature=TRUE: any key root adds to an unrestricted .fs-verity keyring authorises executables'));
  }
  const setup = await readFile(join(p.efivars ?? '/sys/firmware/efi/efivars', SETUP_MODE_VAR)).then(setupModeOf, () => null);
  if (setup) found.push(tamper('firmware-setup-mode', 'the firmware is in Setup Mode (no PK enrolled): root can add a key to db through efivarfs and sign its own IPE policy after the next boot; enrol PK and KEK and turn Secure Boot on'));
  const rw = await readFile(p.mountinfo ?? '/proc/self/mountinfo', 'utf8').then(rootWritable, () => null);
  if (rw) found.push(tamper('initramfs-root-writable', 'the initramfs root is mounted read-write: IPE trusts everything on it (boot_verified), including a binary written there now; mount it read-only'));
  return found;
}
