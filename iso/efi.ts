import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { rename, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

// The ISO's UEFI half: GRUB as BOOTX64.EFI (Debian's grub-efi-amd64-bin,
// put together by grub-mkimage, never downloaded) inside a small FAT image
// that xorriso makes the El Torito EFI entry and, with -isohybrid-gpt-basdat,
// a GPT EFI system partition when the ISO is written to a stick. GRUB reads
// the kernel, initrd and its grub.cfg from the ISO's own file system, so the
// kernel is stored once for both firmware paths.

const grubDir = '/usr/lib/grub/x86_64-efi';

// What the embedded image needs to find the ISO's file system and boot
// Linux from it; grub-mkimage adds each one's dependencies (moddep.lst).
// efi_gop: a framebuffer handed to the kernel on machines without a serial
// console.
const grubModules = ['part_gpt', 'part_msdos', 'iso9660', 'fat', 'search', 'search_fs_file', 'configfile', 'normal', 'linux', 'echo', 'efi_gop'];

// The file GRUB looks for to find the ISO (on a CD, or on the stick the ISO
// was written to) and then reads as its configuration.
export const grubCfgPath = '/boot/grub/grub.cfg';

const embeddedCfg = [
  `search --no-floppy --file --set=root ${grubCfgPath}`,
  'set prefix=($root)/boot/grub',
  `configfile ($root)${grubCfgPath}`,
  '',
].join('\n');

// Fixed so that the FAT image is the same bytes every build (mkfs.fat would
// take the clock for it otherwise).
const volumeId = '5EA1C175';

// The host files the EFI image is made from: GRUB's kernel and the closure
// of the modules above (recorded in the build manifest with their SHA-256).
export function efiInputs(): string[] {
  if (!existsSync(join(grubDir, 'moddep.lst'))) {
    throw new Error(`${grubDir}/moddep.lst is missing: the UEFI boot loader comes from Debian's grub-efi-amd64-bin; run "make deps" (apt-get install grub-efi-amd64-bin mtools dosfstools)`);
  }
  const deps = new Map<string, string[]>();
  for (const line of readFileSync(join(grubDir, 'moddep.lst'), 'utf8').split('\n')) {
    const [name, rest] = line.split(':');
    if (name) deps.set(name.trim(), (rest ?? '').trim().split(/\s+/).filter(Boolean));
  }
  const all = new Set<string>();
  const add = (m: string) => {
    if (all.has(m)) return;
    all.add(m);
    for (const d of deps.get(m) ?? []) add(d);
  };
  grubModules.forEach(add);
  return [join(grubDir, 'kernel.img'), join(grubDir, 'moddep.lst'), ...[...all].sort().map((m) => join(grubDir, `${m}.mod`))];
}

// BOOTX64.EFI in a FAT image at `out` (written under a temporary name, then
// renamed), every timestamp the epoch.
export async function efiBootImage(out: string, work: string, epoch: number): Promise<void> {
  for (const tool of ['grub-mkimage', 'mkfs.fat', 'mmd', 'mcopy']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`${tool} is missing: the ISO's UEFI boot needs grub-efi-amd64-bin, dosfstools and mtools; run "make deps"`);
    }
  }
  efiInputs();
  const cfg = join(work, 'grub-embedded.cfg');
  const efi = join(work, 'BOOTX64.EFI');
  const tmp = `${out}.tmp`;
  const env = { ...process.env, SOURCE_DATE_EPOCH: String(epoch), MTOOLS_SKIP_CHECK: '1' };
  try {
    await writeFile(cfg, embeddedCfg);
    execFileSync('grub-mkimage', ['-O', 'x86_64-efi', '-p', '/boot/grub', '-c', cfg, '-o', efi, ...grubModules], { stdio: ['ignore', 'ignore', 'pipe'], env });
    const t = new Date(epoch * 1000);
    await utimes(efi, t, t);
    // the loader plus 512 KiB for the FAT and its directories, in 32 KiB steps
    const kib = Math.ceil((statSync(efi).size / 1024 + 512) / 32) * 32;
    await rm(tmp, { force: true });
    execFileSync('mkfs.fat', ['--invariant', '-i', volumeId, '-n', 'SEALKIT-EFI', '-C', tmp, String(kib)], { stdio: ['ignore', 'ignore', 'pipe'], env });
    execFileSync('mmd', ['-i', tmp, '::/EFI', '::/EFI/BOOT'], { stdio: ['ignore', 'ignore', 'pipe'], env });
    execFileSync('mcopy', ['-m', '-i', tmp, efi, '::/EFI/BOOT/BOOTX64.EFI'], { stdio: ['ignore', 'ignore', 'pipe'], env });
    await rename(tmp, out);
  } finally {
    await rm(tmp, { force: true });
    await rm(cfg, { force: true });
    await rm(efi, { force: true });
  }
}
