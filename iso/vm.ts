import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestHub } from './fleet.ts';

// Boots the node image in QEMU (TCG: there is no KVM here) with the bus
// forwarded to a port on 127.0.0.1 and, optionally, a host port served to the
// guest as http://10.0.2.100/ (and a fleet hub as 10.0.2.100:7422). The console goes to a file that tests search;
// the monitor is a unix socket, used to power off. Used by iso/run.ts (make
// run) and, through test/helpers/qemu.ts, by the tests.

export interface BootOptions {
  iso?: string; // boot the ISO (-cdrom), as a user would
  firmware?: Firmware; // for the ISO: SeaBIOS (QEMU's default) or OVMF
  ovmfVars?: string; // under OVMF, the variable store a copy of which is booted (default: Debian's empty one); one with the owner's certificate in db for IPE
  kernel?: string; // or boot kernel + initrd directly, with a command line
  initrd?: string;
  append?: string;
  memoryMb?: number;
  busPort?: number; // host port for the guest's 4222; default: a free one
  httpPort?: number; // host port the guest reaches as 10.0.2.100:80
  hub?: { host: string; port: number }; // a fleet hub's leaf listener, reached from the guest as 10.0.2.100:7422
  media?: Media; // how the ISO is attached: a CD-ROM (the default here) or a disk
  dir?: string; // where the console log and monitor socket go; default: a temp dir
  stdio?: boolean; // also copy the console to this process's stdout
}

export interface Vm {
  pid: number;
  busPort: number;
  consoleLog: string;
  startedAt: number; // Date.now() when QEMU was spawned
  exited: Promise<void>;
  console(): string;
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  waitForBus(timeoutMs: number): Promise<number>; // ms since spawn
  // what iso/parts/init/report prints: when the bus answered inside the guest
  // (seconds since its kernel started) and memory in use then; a minute
  // later, memory and the bundles running
  busReady(timeoutMs: number): Promise<{ atSec: number; totalMiB: number; usedMiB: number }>;
  settled(timeoutMs: number): Promise<{ totalMiB: number; usedMiB: number; running: string[] }>;
  powerOff(timeoutMs?: number): Promise<'acpi' | 'quit' | 'kill' | 'exited'>;
}

// The firmware an ISO boots under: QEMU's SeaBIOS, or OVMF (Debian's ovmf,
// UEFI without Secure Boot) with a writable copy of its variable store
// beside the console log, so a boot never changes the installed template.
export type Firmware = 'bios' | 'uefi';
export const firmwares: readonly Firmware[] = ['bios', 'uefi'];
export const ovmfCode = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const ovmfVars = '/usr/share/OVMF/OVMF_VARS_4M.fd';

// FIRMWARE= of make run (iso/run.ts --firmware)
export function parseFirmware(value: string | undefined): Firmware {
  if (value === undefined || value === '') return 'bios';
  if ((firmwares as readonly string[]).includes(value)) return value as Firmware;
  throw new Error(`FIRMWARE="${value}" is not a firmware this can boot: use bios (SeaBIOS, the default) or uefi (OVMF)`);
}

// How the ISO is attached (make run MEDIA=): as a disk, the way a USB stick
// it was written to boots a machine, or as a CD-ROM. The ISO is hybrid
// (isolinux's MBR and a GPT with the EFI partition), so either firmware
// boots it either way. The firmware reads the kernel and initrd far faster
// from a virtio disk than through the emulated ATAPI drive under TCG:
// 2.2 s against 9.0 s to the kernel under SeaBIOS, 10.5 s against 17.5 s
// under OVMF (2026-12-07, this ISO of 102 MB).
export type Media = 'disk' | 'cdrom';
const medias = ['disk', 'cdrom'] as const;

// MEDIA= of make run (iso/run.ts --media); make run's default is disk
export function parseMedia(value: string | undefined): Media {
  if (value === undefined || value === '') return 'disk';
  if ((medias as readonly string[]).includes(value)) return value as Media;
  throw new Error(`MEDIA="${value}" is not a way to attach the ISO: use disk (as a USB stick, the default) or cdrom`);
}

function mediaArgs(iso: string, media: Media): string[] {
  return media === 'disk' ? ['-drive', `file=${iso},format=raw,if=virtio,readonly=on`, '-boot', 'c'] : ['-cdrom', iso, '-boot', 'd'];
}

async function uefiArgs(dir: string, from = ovmfVars): Promise<string[]> {
  for (const f of [ovmfCode, from]) {
    if (!existsSync(f)) throw new Error(`${f} is missing: booting under UEFI needs Debian's ovmf; run "make deps" (apt-get install ovmf)`);
  }
  const vars = join(dir, 'OVMF_VARS_4M.fd');
  await copyFile(from, vars);
  return ['-drive', `if=pflash,format=raw,readonly=on,file=${ovmfCode}`, '-drive', `if=pflash,format=raw,file=${vars}`];
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// QEMU's user network accepts on the forwarded port at once and drops the
// connection while nothing listens in the guest: only nats-server's INFO
// line means the bus answers.
export function busAnswers(port: number, timeoutMs = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    let buf = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      if (buf.startsWith('INFO ')) done(true);
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}

export async function bootVm(o: BootOptions): Promise<Vm> {
  const dir = o.dir ?? (await mkdtemp(join(tmpdir(), 'sealkit-vm-')));
  const ownDir = o.dir === undefined;
  const consoleLog = join(dir, 'console.log');
  const monitor = join(dir, 'monitor.sock');
  const busPort = o.busPort ?? (await freePort());
  const fwd = [`hostfwd=tcp:127.0.0.1:${busPort}-:4222`];
  // guestfwd to "tcp:host:port" is one connection made when QEMU starts, which
  // an HTTP server times out (408) before the guest asks anything; "cmd:"
  // runs a relay per guest connection (busybox-static, as for the ISO)
  if (o.httpPort) fwd.push(`guestfwd=tcp:10.0.2.100:80-cmd:busybox nc 127.0.0.1 ${o.httpPort}`);
  // the same per connection for the hub: a leaf node reconnects after the
  // hub was away, and each attempt needs a relay of its own
  if (o.hub) fwd.push(`guestfwd=tcp:${guestHub.host}:${guestHub.port}-cmd:busybox nc ${o.hub.host} ${o.hub.port}`);
  const args = [
    '-accel', 'tcg', '-cpu', 'max', '-m', String(o.memoryMb ?? 1024),
    '-nographic', '-display', 'none', '-no-reboot',
    '-netdev', `user,id=n0,restrict=on,${fwd.join(',')}`,
    '-device', 'virtio-net-pci,netdev=n0',
    '-serial', `file:${consoleLog}`,
    '-monitor', `unix:${monitor},server,nowait`,
  ];
  if (o.iso) args.push(...(o.firmware === 'uefi' ? await uefiArgs(dir, o.ovmfVars) : []), ...mediaArgs(o.iso, o.media ?? 'cdrom'));
  else if (o.firmware === 'uefi') throw new Error('bootVm: firmware uefi boots the ISO (iso), not a kernel and initrd');
  else if (o.kernel && o.initrd) args.push('-kernel', o.kernel, '-initrd', o.initrd, '-append', o.append ?? 'console=ttyS0');
  else throw new Error('bootVm needs iso, or kernel and initrd');

  const startedAt = Date.now();
  // Its own session: a Ctrl-C at the terminal reaches the process that booted
  // it, which powers the guest off in order, instead of QEMU, which would
  // just stop. And a VM never outlives that process, whatever ended it: the
  // kernel sends SIGKILL when it dies (setpriv --pdeathsig, util-linux).
  const [cmd, argv] = existsSync('/usr/bin/setpriv')
    ? ['/usr/bin/setpriv', ['--pdeathsig', 'KILL', 'qemu-system-x86_64', ...args]]
    : ['qemu-system-x86_64', args];
  const child: ChildProcess = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  child.once('exit', () => process.removeListener('exit', reap));
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d.toString()));
  let exited = false;
  const exit = new Promise<void>((resolve) => child.on('exit', () => ((exited = true), resolve())));
  if (!child.pid) throw new Error('qemu-system-x86_64 did not start');
  const pid = child.pid;

  let echoed = 0;
  const consoleText = () => (existsSync(consoleLog) ? readFileSync(consoleLog, 'latin1') : '');
  const echo = o.stdio
    ? setInterval(() => {
        const t = consoleText();
        if (t.length > echoed) process.stdout.write(t.slice(echoed));
        echoed = t.length;
      }, 500)
    : undefined;

  // The human monitor: wait for its prompt, send one command, wait for the
  // next prompt (or give up after a few seconds), hang up.
  const monitorCommand = (cmd: string) =>
    new Promise<void>((resolve) => {
      const s = connect(monitor);
      let buf = '';
      let sent = false;
      const finish = () => {
        clearTimeout(timer);
        s.destroy();
        resolve();
      };
      const timer = setTimeout(finish, 5000);
      s.on('data', (d) => {
        buf += d.toString('latin1');
        const prompts = buf.split('(qemu)').length - 1;
        if (!sent && prompts >= 1) {
          sent = true;
          s.write(`${cmd}\n`);
        } else if (sent && prompts >= 2) finish();
      });
      s.on('error', finish);
      s.on('close', finish);
    });

  const vm: Vm = {
    pid,
    busPort,
    consoleLog,
    startedAt,
    exited: exit,
    console: consoleText,
    async waitFor(pattern, timeoutMs) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const m = consoleText().match(pattern);
        if (m) return m;
        if (exited) throw new Error(`QEMU exited before the console showed ${pattern}: ${stderr}\n${consoleText().slice(-3000)}`);
        if (Date.now() > until) throw new Error(`the console did not show ${pattern} in ${timeoutMs} ms:\n${consoleText().slice(-3000)}`);
        await sleep(250);
      }
    },
    async waitForBus(timeoutMs) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        if (await busAnswers(busPort, 2000)) return Date.now() - startedAt;
        if (exited) throw new Error(`QEMU exited before the bus answered: ${stderr}\n${consoleText().slice(-3000)}`);
        if (Date.now() > until) throw new Error(`the bus did not answer on 127.0.0.1:${busPort} in ${timeoutMs} ms:\n${consoleText().slice(-3000)}`);
        await sleep(500);
      }
    },
    async busReady(timeoutMs) {
      const m = await vm.waitFor(/sealkit: bus ready at ([\d.]+)s; memory total (\d+) MiB, used (\d+) MiB/, timeoutMs);
      return { atSec: Number(m[1]), totalMiB: Number(m[2]), usedMiB: Number(m[3]) };
    },
    async settled(timeoutMs) {
      const m = await vm.waitFor(/sealkit: after 60s: memory total (\d+) MiB, used (\d+) MiB; running: (.*)/, timeoutMs);
      return { totalMiB: Number(m[1]), usedMiB: Number(m[2]), running: m[3].trim().split(/\s+/).filter((x) => x && x !== 'none') };
    },
    // ACPI power button first (the guest's acpid runs an orderly poweroff),
    // then QEMU's quit, then SIGKILL: nothing is left running either way.
    async powerOff(timeoutMs = 30_000) {
      let how: 'acpi' | 'quit' | 'kill' | 'exited' = 'exited';
      const waitExit = (ms: number) => Promise.race([exit.then(() => true), sleep(ms).then(() => false)]);
      if (!exited) {
        how = 'acpi';
        await monitorCommand('system_powerdown');
        if (!(await waitExit(timeoutMs))) {
          how = 'quit';
          await monitorCommand('quit');
          if (!(await waitExit(5000))) {
            how = 'kill';
            process.kill(pid, 'SIGKILL');
            await exit;
          }
        }
      }
      if (echo) clearInterval(echo);
      if (ownDir) await rm(dir, { recursive: true, force: true });
      return how;
    },
  };
  return vm;
}
