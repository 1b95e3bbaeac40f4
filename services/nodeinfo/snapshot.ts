import type si from 'systeminformation';
import { readFile, access } from 'node:fs/promises';
import { spawn, type ChildProcess } from 'node:child_process';

// What a node is: OS, kernel, CPU, memory, disks, network, what the kernel
// offers for IMA, and the build manifest the ISO was assembled from.

export interface KernelIma {
  ima: boolean; // securityfs exposes ima/
  appraise: string | null; // ima_appraise= on the kernel command line
  namespaces: boolean; // a patched kernel's ima/namespaces
}

export async function kernelIma(securityfs = '/sys/kernel/security', cmdline = '/proc/cmdline'): Promise<KernelIma> {
  const present = async (p: string) => access(p).then(() => true, () => false);
  const line = await readFile(cmdline, 'utf8').catch(() => '');
  return {
    ima: await present(`${securityfs}/ima`),
    appraise: /(?:^|\s)ima_appraise=(\S+)/.exec(line)?.[1] ?? null,
    namespaces: await present(`${securityfs}/ima/namespaces`),
  };
}

type Probed = [si.Systeminformation.OsData, si.Systeminformation.CpuData, si.Systeminformation.MemData, si.Systeminformation.FsSizeData[], si.Systeminformation.NetworkInterfacesData[] | si.Systeminformation.NetworkInterfacesData];

// systeminformation is large (about 5 MB resident once loaded) and needed for
// a moment every 30 s at most: it runs in a child node that exits after each
// snapshot, so an idle nodeinfo holds none of it (a worker thread would leave
// its malloc arena behind, as large again). Plain JS, so no loader is needed,
// from source and compiled alike.
const PROBE_SOURCE = `
import(process.argv[1]).then(({ default: si }) => Promise.all([
  si.osInfo(),
  si.cpu(),
  si.mem(),
  si.fsSize().catch(() => []),
  si.networkInterfaces().catch(() => []),
])).then((probed) => process.stdout.write(JSON.stringify(probed)), (err) => { process.stderr.write(String((err && err.stack) || err)); process.exitCode = 1; });
`;

// The probes under way, each in a process group of its own with the programs
// systeminformation starts: stopProbes ends them all when nodeinfo stops, so
// nothing it started outlives it.
const probes = new Set<ChildProcess>();

// a probe that hangs this long (a stuck mount under fsSize) is killed
const PROBE_TIMEOUT_MS = 60_000;

export function stopProbes(): void {
  for (const child of probes) killGroup(child);
}

function killGroup(child: ChildProcess): void {
  try {
    if (child.pid) process.kill(-child.pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

function probe(): Promise<Probed> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', PROBE_SOURCE, import.meta.resolve('systeminformation')], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    probes.add(child);
    const timer = setTimeout(() => killGroup(child), PROBE_TIMEOUT_MS);
    timer.unref();
    const out: Buffer[] = [];
    let err = '';
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    child.once('error', (e) => {
      clearTimeout(timer);
      probes.delete(child);
      reject(new Error(`systeminformation failed: cannot run ${process.execPath}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      probes.delete(child);
      if (code !== 0) return reject(new Error(`systeminformation failed (${signal ?? `exit ${code}`}): ${err.trim()}`));
      try {
        resolve(JSON.parse(Buffer.concat(out).toString('utf8')) as Probed);
      } catch (e) {
        reject(new Error(`systeminformation failed: its output is not JSON (${(e as Error).message})`));
      }
    });
  });
}

export async function snapshot(opts: { buildManifest?: string } = {}) {
  const [[os, cpu, mem, disks, nets], ima] = await Promise.all([probe(), kernelIma()]);
  let build: unknown = null;
  if (opts.buildManifest) {
    try {
      build = JSON.parse(await readFile(opts.buildManifest, 'utf8'));
    } catch {
      build = null;
    }
  }
  return {
    os: { platform: os.platform, distro: os.distro, release: os.release, kernel: os.kernel, arch: os.arch, hostname: os.hostname },
    cpu: { manufacturer: cpu.manufacturer, brand: cpu.brand, cores: cpu.cores, physicalCores: cpu.physicalCores, speedGHz: cpu.speed },
    memory: { total: mem.total, available: mem.available, used: mem.used },
    disks: disks.map((d) => ({ fs: d.fs, type: d.type, mount: d.mount, size: d.size, used: d.used })),
    network: (Array.isArray(nets) ? nets : [nets]).map((n) => ({ iface: n.iface, ip4: n.ip4, ip6: n.ip6, mac: n.mac, operstate: n.operstate })),
    ima,
    build,
  };
}
