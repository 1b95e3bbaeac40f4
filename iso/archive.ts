import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, rm, copyFile, rename, writeFile, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { SealkitError } from '../services/lib/errors.ts';
import { walkTree } from './rootfs.ts';
import { efiBootImage, grubCfgPath } from './efi.ts';

// The initrd (sorted newc cpio, lz4) and the hybrid ISO (isolinux for BIOS,
// GRUB for UEFI, xorriso), both byte-for-byte reproducible from the same
// tree and epoch.

export async function initrd(root: string, out: string, level: number): Promise<void> {
  const entries = ['.'];
  await walkTree(root, async (p) => {
    entries.push(`.${p.slice(root.length)}`);
  });
  entries.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const cpio = spawnSync('cpio', ['--quiet', '--reproducible', '-o', '-H', 'newc', '-R', '0:0'], {
    cwd: root,
    input: entries.join('\n') + '\n',
    maxBuffer: 2 * 1024 * 1024 * 1024,
  });
  if (cpio.status !== 0) throw new Error(`cpio failed: ${cpio.stderr.toString()}`);
  const raw = `${out}.cpio`;
  await writeFile(raw, cpio.stdout);
  // lz4, not zstd: the guest kernel unpacks the initrd before anything runs,
  // and lz4 decompresses in a quarter of zstd's CPU time (host: 0.10 s user
  // against 0.44 s for this 244 MB cpio; under TCG, seconds of boot) for a
  // third more bytes. The kernel reads the legacy frame format (-l).
  execFileSync('lz4', ['-q', '-f', '-l', `-${level}`, raw, out], { stdio: 'inherit' });
  await rm(raw);
}

export interface IsoInput {
  kernel: string;
  initrd: string;
  cmdline: string;
  out: string;
  work: string;
  epoch: number;
  volume?: string;
}

const isolinuxBin = '/usr/lib/ISOLINUX/isolinux.bin';
const isohdpfx = '/usr/lib/ISOLINUX/isohdpfx.bin';
const ldlinux = '/usr/lib/syslinux/modules/bios/ldlinux.c32';

export const isoInputs = [isolinuxBin, isohdpfx, ldlinux];

// Where the kernel and initrd sit on the ISO, for both boot loaders.
const kernelOnIso = '/boot/kernel';
const initrdOnIso = '/boot/initrd.img';

// What the kernel gets (/proc/cmdline) from either boot loader.
export function kernelCmdline(cmdline: string): string {
  return [`BOOT_IMAGE=${kernelOnIso}`, ...cmdline.split(' ').filter(Boolean), `initrd=${initrdOnIso}`].join(' ');
}

// One kernel command line, written into both boot loaders' configurations:
// what the kernel gets must not depend on the firmware (the IMA policy and
// the init read it). A character either loader would read as something else
// is refused here rather than changed.
export function bootConfigs(cmdline: string): { isolinux: string; grub: string } {
  const bad = [...cmdline].find((c) => c < ' ' || c > '~' || c === '"' || c === "'" || c === '\\');
  if (bad !== undefined) {
    throw new SealkitError(
      'SEALKIT_CONFIG',
      `linuxkit.yml kernel.cmdline ${JSON.stringify(cmdline)}: ${JSON.stringify(bad)} cannot be passed the same way by isolinux and GRUB; use space-separated words of printable ASCII without quotes or backslashes`,
      { cmdline },
    );
  }
  // GRUB splits on spaces and reads ; | & $ { } < > # as shell syntax: each
  // word goes in single quotes, which the kernel never sees
  const words = cmdline.split(' ').filter(Boolean);
  const grubArgs = words.map((w) => (/^[\w.,:=+/@%-]+$/.test(w) ? w : `'${w}'`));
  return {
    isolinux: ['DEFAULT linux', 'PROMPT 0', 'TIMEOUT 0', 'LABEL linux', `  KERNEL ${kernelOnIso}`, `  INITRD ${initrdOnIso}`, `  APPEND ${words.join(' ')}`, ''].join('\n'),
    // isolinux appends initrd=<file> to what the kernel gets (its INITRD
    // line); GRUB does not, so it is written here, at the same place
    grub: [`linux ${kernelOnIso} ${[...grubArgs, `initrd=${initrdOnIso}`].join(' ')}`, `initrd ${initrdOnIso}`, 'boot', ''].join('\n'),
  };
}

// The hybrid ISO: isolinux for BIOS (El Torito and an MBR for sticks), GRUB
// in a FAT image for UEFI (El Torito and a GPT EFI partition), one kernel,
// initrd and command line on the ISO's file system for both.
export async function isoHybrid(o: IsoInput): Promise<void> {
  const configs = bootConfigs(o.cmdline);
  const tree = join(o.work, 'iso-root');
  await rm(tree, { recursive: true, force: true });
  await mkdir(join(tree, 'isolinux'), { recursive: true });
  await mkdir(join(tree, 'boot', 'grub'), { recursive: true });
  await copyFile(isolinuxBin, join(tree, 'isolinux', 'isolinux.bin'));
  await copyFile(ldlinux, join(tree, 'isolinux', 'ldlinux.c32'));
  await copyFile(o.kernel, join(tree, kernelOnIso));
  await copyFile(o.initrd, join(tree, initrdOnIso));
  await writeFile(join(tree, 'isolinux', 'isolinux.cfg'), configs.isolinux);
  await writeFile(join(tree, grubCfgPath), configs.grub);
  await efiBootImage(join(tree, 'boot', 'efiboot.img'), o.work, o.epoch);
  const t = new Date(o.epoch * 1000);
  const stamped = ['isolinux/isolinux.bin', 'isolinux/ldlinux.c32', 'isolinux/isolinux.cfg', 'boot/kernel', 'boot/initrd.img', 'boot/grub/grub.cfg', 'boot/efiboot.img', 'boot/grub', 'isolinux', 'boot', '.'];
  for (const p of stamped) await utimes(join(tree, p), t, t);
  const stamp = new Date(o.epoch * 1000).toISOString().replace(/[-:T]/g, '').slice(0, 14) + '00';
  const tmp = `${o.out}.tmp`;
  await rm(tmp, { force: true });
  try {
    execFileSync(
      'xorriso',
      [
        '-as', 'mkisofs',
        '-o', tmp,
        '-V', o.volume ?? 'SEALKIT',
        '-r', '-J', '-joliet-long',
        '-isohybrid-mbr', isohdpfx,
        '-b', 'isolinux/isolinux.bin',
        '-c', 'isolinux/boot.cat',
        '-no-emul-boot', '-boot-load-size', '4', '-boot-info-table',
        '-eltorito-alt-boot',
        '-e', 'boot/efiboot.img',
        '-no-emul-boot',
        '-isohybrid-gpt-basdat',
        // SOURCE_DATE_EPOCH (below) makes xorriso derive the volume dates,
        // uuid and GPT GUIDs from it and stamp every file with its mtime
        '--modification-date=' + stamp,
        tree,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, SOURCE_DATE_EPOCH: String(o.epoch) } },
    );
    await rename(tmp, o.out);
  } finally {
    await rm(tmp, { force: true });
  }
}
