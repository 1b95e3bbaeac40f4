import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

// A real containerd per test file on a temp dir, as nats.js's suite does with
// nats-server: a small config (no CRI, no tracing, unused snapshotters off)
// so it boots in a fraction of a second, stopped by PID in teardown.

const run = promisify(execFile);

export interface ContainerdServer {
  dir: string;
  sock: string;
  pid(): number | undefined;
  ctr(args: string[], ns?: string): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<void>; // containerd down, state kept
  start(): Promise<void>; // again, same dir and socket
  cleanup(): Promise<void>;
}

const DISABLED = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
];

export async function startContainerd(): Promise<ContainerdServer> {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-ctd-'));
  const sock = join(dir, 'sock');
  const config = join(dir, 'config.toml');
  await writeFile(
    config,
    [
      'version = 2',
      `root = ${JSON.stringify(join(dir, 'root'))}`,
      `state = ${JSON.stringify(join(dir, 'state'))}`,
      `disabled_plugins = ${JSON.stringify(DISABLED)}`,
      '[grpc]',
      `  address = ${JSON.stringify(sock)}`,
      '[ttrpc]',
      `  address = ${JSON.stringify(`${sock}.ttrpc`)}`,
      '[debug]',
      '  address = ""',
      '[metrics]',
      '  address = ""',
      '',
    ].join('\n'),
  );
  let proc: ChildProcess | undefined;
  let log = '';

  const ctr = async (args: string[], ns = 'default') => (await run('ctr', ['--address', sock, '--connect-timeout', '2s', '--namespace', ns, ...args], { maxBuffer: 64 << 20 })).stdout;

  const server: ContainerdServer = {
    dir,
    sock,
    pid: () => proc?.pid,
    ctr,
    async start() {
      await rm(sock, { force: true });
      log = '';
      proc = spawn('containerd', ['-c', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      proc.stderr!.on('data', (d: Buffer) => (log = (log + d).slice(-4000)));
      const deadline = Date.now() + 15_000;
      for (;;) {
        if (proc.exitCode !== null) throw new Error(`containerd exited with ${proc.exitCode}: ${log}`);
        try {
          await run('ctr', ['--address', sock, '--connect-timeout', '1s', 'version']);
          return;
        } catch {
          if (Date.now() > deadline) throw new Error(`containerd did not answer on ${sock} within 15 s: ${log}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      const p = proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill(signal);
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
    async cleanup() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}
