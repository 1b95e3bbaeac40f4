import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../services/lib/config.ts';
import { kernelCmdline } from '../iso/archive.ts';
import { ovmfCode } from '../iso/vm.ts';
import { busAnswers, ensureIso, freePort, takeTestStateTurn, testIsoDir, testStateDir, type TestIso } from './helpers/qemu.ts';
import { spawnReadme } from './helpers/readme.ts';
import { cmdline, killAll, running, type Shell } from './helpers/make.ts';

// The ISO is hybrid: the SeaBIOS boots (make-run, iso-fleet) take its
// isolinux path; this one boots the same file under OVMF, as the README's
// `make run FIRMWARE=uefi` does, through its EFI partition (GRUB in a FAT
// image). The node comes up the same way: the kernel is started by UEFI
// firmware with the very command line the BIOS path gives it, and the bus
// answers on the forwarded port. Without the EFI part OVMF finds nothing to
// boot and the kernel never starts. make run attaches the ISO as a disk (a
// USB stick); `make run MEDIA=cdrom` attaches it as a CD-ROM, and the node
// boots from its El Torito entries the same way (iso-e2e and iso-ipe boot
// the CD-ROM under SeaBIOS and OVMF too).

const minutes = (n: number) => n * 60_000;

// The README's `command` (a make run; readme-commands finds it as the first
// argument of a function named …Readme) on the tests' ISO and state, in the
// state's turn, with its bus on a free port; QEMU and make run are killed in
// teardown if the test has not ended them. Resolves once make run says
// which QEMU it started and how (`booted` matches that banner).
async function makeRunReadme(command: string, t: ExecutionContext, booted: RegExp): Promise<{ run: Shell; qemuPid: number; port: number; iso: TestIso }> {
  const iso = await ensureIso((l) => t.log(l));
  const port = await freePort();
  let run: Shell | undefined;
  let qemuPid: number | undefined;
  const endTurn = await takeTestStateTurn();
  t.teardown(async () => {
    if (run && !run.done()) run.signal('SIGKILL');
    if (qemuPid) killAll([qemuPid]);
    await endTurn();
  });
  // make run finds the tests' ISO up to date and boots it
  run = spawnReadme(command, {
    cwd: repoRoot,
    env: { SEALKIT_STATE: testStateDir, SEALKIT_ISO_OUT: testIsoDir, SEALKIT_BUS_PORT: String(port) },
  });
  qemuPid = Number((await run.waitFor(new RegExp(`booting in QEMU \\(pid (\\d+)\\) ${booted.source}`), minutes(15)))[1]);
  return { run, qemuPid, port, iso };
}

test('make run FIRMWARE=uefi boots the ISO under OVMF with the same command line, and the bus answers on the forwarded port', async (t) => {
  t.timeout(minutes(25));
  const { run, qemuPid, port, iso } = await makeRunReadme('make run FIRMWARE=uefi', t, /under UEFI \(OVMF\) from the ISO as a disk/);
  t.regex(run.output(), /run: \S+\/sealkit\.iso is up to date/, 'the tests\' ISO is booted, not another build');

  // the console is echoed by make run: the kernel was started by UEFI firmware
  const started = Date.now();
  // or OVMF's own word that the disk (a virtio disk is its "UEFI Misc
  // Device") holds nothing it can boot (an ISO without the EFI partition),
  // which fails the test at once; QEMU's empty CD-ROM drive fails before it
  const firmware = (await run.waitFor(/efi: EFI v[\d.]+ by EDK II|BdsDxe: failed to load [^\r\n]*"UEFI Misc Device"[^\r\n]*/, minutes(5)))[0];
  if (!firmware.startsWith('efi:')) throw new Error(`OVMF found nothing to boot on ${iso.iso}: ${firmware}`);
  const line = (await run.waitFor(/Command line: ([^\r\n]*)/, minutes(1)))[1];
  t.is(line.trim(), kernelCmdline(iso.cmdline), 'GRUB gives the kernel what isolinux gives it');
  t.log(`kernel running ${((Date.now() - started) / 1000).toFixed(1)} s after QEMU was spawned (at most)`);

  const bus = await run.waitFor(new RegExp(`run: bus answering on 127\\.0\\.0\\.1:${port} ([\\d.]+) s after QEMU started`), minutes(15));
  t.true(await busAnswers(port), `the bus answers on 127.0.0.1:${port}`);
  t.log(`under OVMF the bus answered ${bus[1]} s after QEMU started`);
  // read once QEMU runs for certain: the pid is setpriv's until it execs
  // QEMU, and /proc/PID/cmdline read during that exec is empty
  const qemu = cmdline(qemuPid);
  t.regex(qemu, /^qemu-system-x86_64 /);
  t.true(qemu.includes(`if=pflash,format=raw,readonly=on,file=${ovmfCode}`), qemu);
  t.true(qemu.includes(`if=pflash,format=raw,file=${join(testStateDir, 'run', 'OVMF_VARS_4M.fd')}`), 'a copy of the variable store, not the installed one');
  t.true(qemu.includes(`-drive file=${iso.iso},format=raw,if=virtio,readonly=on`), `the ISO is a disk: ${qemu}`);
  // what the node's report prints once its bus answers inside
  const inside = await run.waitFor(/sealkit: bus ready at ([\d.]+)s/, minutes(2));
  t.log(`inside the guest: bus ready ${inside[1]} s after the kernel started`);

  run.signal('SIGINT');
  await run.exited;
  t.regex(run.output(), /run: QEMU stopped \(acpi\)/, 'the node powers off from the ACPI button under OVMF too');
  t.false(running(qemuPid), `QEMU (pid ${qemuPid}) is gone`);
  const console = await readFile(join(testStateDir, 'run', 'console.log'), 'latin1');
  t.regex(console, /sealkit: onboot done/);
});

test('make run MEDIA=cdrom boots the same ISO as a CD-ROM under SeaBIOS, and the bus answers on the forwarded port', async (t) => {
  t.timeout(minutes(25));
  const { run, qemuPid, port, iso } = await makeRunReadme('make run MEDIA=cdrom', t, /under BIOS \(SeaBIOS\) from the ISO as a CD-ROM/);
  const bus = await run.waitFor(new RegExp(`run: bus answering on 127\\.0\\.0\\.1:${port} ([\\d.]+) s after QEMU started`), minutes(15));
  t.true(await busAnswers(port), `the bus answers on 127.0.0.1:${port}`);
  t.log(`from the CD-ROM the bus answered ${bus[1]} s after QEMU started`);
  const qemu = cmdline(qemuPid);
  t.true(qemu.includes(`-cdrom ${iso.iso} -boot d`), qemu);
  t.false(qemu.includes('if=virtio,readonly=on'), 'and not as a disk');
  run.signal('SIGINT');
  await run.exited;
  t.regex(run.output(), /run: QEMU stopped \(acpi\)/);
  t.false(running(qemuPid), `QEMU (pid ${qemuPid}) is gone`);
});

// make run with a value it cannot use: refused before keys are made or
// anything is built or booted, naming the values it can use
const refusedBeforeAnything = test.macro(async (t, setting: string, said: RegExp) => {
  t.timeout(minutes(5));
  const state = await mkdtemp(join(tmpdir(), 'sealkit-refused-'));
  t.teardown(() => rm(state, { recursive: true, force: true }));
  const r = spawnSync('make', ['run', setting], { cwd: repoRoot, env: { ...process.env, SEALKIT_STATE: state }, encoding: 'utf8', timeout: minutes(4) });
  t.not(r.status, 0, r.stdout);
  t.regex(r.stderr, said);
  t.false(existsSync(join(state, 'keys')), 'no keys were made');
  t.false(existsSync(join(state, 'run')), 'nothing was booted');
});

test('make run with a MEDIA it cannot attach is refused before anything is built or booted, naming the ones it can', refusedBeforeAnything, 'MEDIA=usb', /run: MEDIA="usb" is not a way to attach the ISO: use disk \(as a USB stick, the default\) or cdrom/);
test('make run with a FIRMWARE it cannot boot is refused before anything is built or booted, naming the ones it can', refusedBeforeAnything, 'FIRMWARE=efi', /run: FIRMWARE="efi" is not a firmware this can boot: use bios \(SeaBIOS, the default\) or uefi \(OVMF\)/);
