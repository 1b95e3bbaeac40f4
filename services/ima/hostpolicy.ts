import { open, readFile, readdir, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SealkitError } from '../lib/errors.ts';
import { writeFileAtomic } from '../lib/atomic.ts';

// The host IMA policy for mainline kernels booted with ima_appraise=enforce:
// appraise exactly the filesystem holding the container store, nothing else.
// Debian's kernel (no CONFIG_IMA_WRITE_POLICY) takes one policy per boot, and
// without CONFIG_IMA_READ_POLICY the policy file disappears once written, so
// it is composed once, at boot, before any container starts.
// Grammar: Documentation/ABI/testing/ima_policy — rules are first match.

export const TMPFS_MAGIC = 0x01021994;

export interface StoreFs {
  uuid: string | null; // filesystem UUID (ext4, xfs, btrfs ...)
  magic: number; // statfs f_type
  dev: string; // major:minor
}

export async function storeFilesystem(store: string): Promise<StoreFs> {
  const st = await stat(store);
  const fs = await statfs(store);
  const major = Math.floor(st.dev / 256) & 0xfff;
  const minor = (st.dev & 0xff) | ((Math.floor(st.dev / 1048576) & 0xfff) << 8);
  return { uuid: await uuidOf(st.dev, major, minor), magic: Number(fs.type), dev: `${major}:${minor}` };
}

async function uuidOf(dev: number, major: number, minor: number): Promise<string | null> {
  // udev/mdev link; busybox blkid otherwise
  try {
    for (const u of await readdir('/dev/disk/by-uuid')) {
      const s = await stat(join('/dev/disk/by-uuid', u)).catch(() => null);
      if (s && s.rdev === dev) return u;
    }
  } catch {
    // no /dev/disk: fall through
  }
  try {
    const uevent = await readFile(`/sys/dev/block/${major}:${minor}/uevent`, 'utf8');
    const name = /DEVNAME=(\S+)/.exec(uevent)?.[1];
    if (name) {
      const { stdout } = await promisify(execFile)('blkid', [`/dev/${name}`]);
      return /\bUUID="([0-9a-fA-F-]+)"/.exec(stdout)?.[1]?.toLowerCase() ?? null;
    }
  } catch {
    // no blkid or no block device
  }
  return null;
}

export interface PolicyOptions {
  signatures: boolean; // require v2 signatures (appraise_type=imasig)
  fsmagic?: boolean; // scope by filesystem type when the store has no UUID (a dedicated fs type only)
  // also appraise overlayfs: an fsuuid rule does not match files opened
  // through the overlay mounts containerd gives containers (seen on 6.1)
  overlay?: boolean;
}

export const OVERLAYFS_MAGIC = 0x794c7630;

export function composeHostPolicy(fs: StoreFs, o: PolicyOptions): string[] {
  const type = o.signatures ? ' appraise_type=imasig' : '';
  let scope: string;
  if (fs.uuid) scope = `fsuuid=${fs.uuid}`;
  else if (o.fsmagic) scope = `fsmagic=0x${fs.magic.toString(16)}`;
  else {
    throw new SealkitError('SEALKIT_IMA_UNAVAILABLE', `the container store's filesystem (device ${fs.dev}, type 0x${fs.magic.toString(16)}) has no UUID, so a host IMA policy cannot be scoped to it; put the store on its own ext4/xfs filesystem, or pass --fsmagic when the store is the only filesystem of its type`, { dev: fs.dev });
  }
  return [
    // pseudo filesystems first: rules are first match, so no later rule can reach them
    'dont_appraise fsmagic=0x9fa0', // proc
    'dont_appraise fsmagic=0x62656572', // sysfs
    'dont_appraise fsmagic=0x73636673', // securityfs
    `appraise ${scope}${type}`,
    ...(o.overlay ? [`appraise fsmagic=0x${OVERLAYFS_MAGIC.toString(16)}${type}`] : []),
  ];
}

// One write of the whole policy; the kernel checks every rule and rejects
// the lot (EINVAL) if one is wrong, and then a corrected write is possible.
export async function writeHostPolicy(policyFile: string, lines: string[]): Promise<void> {
  const fh = await open(policyFile, 'w').catch((err: NodeJS.ErrnoException) => {
    throw new SealkitError('SEALKIT_IMA_UNAVAILABLE', `cannot open ${policyFile}: ${err.message}; the one policy write of this boot may be used already`, { errno: err.code });
  });
  try {
    await fh.write(lines.join('\n') + '\n');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new SealkitError('SEALKIT_IMA_UNAVAILABLE', `the kernel refused the IMA policy (${e.code}): ${lines.join(' | ')}; see dmesg for the rule it rejected`, { errno: e.code, lines });
  } finally {
    await fh.close();
  }
}

// What boot.ts wrote this boot, keyed by boot id so a stale record from an
// earlier boot never counts.
export interface HostPolicyRecord {
  bootId: string;
  lines: string[];
  writtenAt: string;
  store: string;
}

export async function bootId(): Promise<string> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => 'unknown')).trim();
}

export function recordPath(imaDir: string): string {
  return join(imaDir, 'host-policy.json');
}

export async function readRecord(imaDir: string): Promise<HostPolicyRecord | null> {
  try {
    const rec = JSON.parse(await readFile(recordPath(imaDir), 'utf8')) as HostPolicyRecord;
    return rec.bootId === (await bootId()) ? rec : null;
  } catch {
    return null;
  }
}

export async function writeRecord(imaDir: string, rec: HostPolicyRecord): Promise<void> {
  await writeFileAtomic(recordPath(imaDir), JSON.stringify(rec, null, 2) + '\n');
}
