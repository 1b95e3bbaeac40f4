import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { startContainerd, type ContainerdServer } from './containerd.ts';

// A real dockerd per test file on a temp dir: vfs storage, no bridge, no
// iptables, its own socket; it uses a containerd from ./containerd.ts (its own
// one unless the test passes one in), and everything is stopped by PID.

export interface DockerServer {
  dir: string;
  sock: string;
  docker: Docker;
  containerd: ContainerdServer;
  stop(): Promise<void>;
  cleanup(): Promise<void>;
}

export async function startDocker(opts: { containerd?: ContainerdServer } = {}): Promise<DockerServer> {
  const containerd = opts.containerd ?? (await startContainerd());
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-dockerd-'));
  const sock = join(dir, 'sock');
  let log = '';
  const proc: ChildProcess = spawn(
    'dockerd',
    [
      '--data-root', join(dir, 'data'),
      '--exec-root', join(dir, 'x'),
      '-H', `unix://${sock}`,
      '--pidfile', join(dir, 'pid'),
      '--iptables=false',
      '--ip6tables=false',
      '--bridge=none',
      '--storage-driver=vfs',
      '--containerd', containerd.sock,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  proc.stderr!.on('data', (d: Buffer) => (log = (log + d).slice(-4000)));
  const docker = new Docker({ socketPath: sock });
  const deadline = Date.now() + 30_000;
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  };
  // a dockerd that does not come up is stopped, with the containerd started for it
  try {
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`dockerd exited with ${proc.exitCode}: ${log}`);
      try {
        await docker.ping();
        break;
      } catch {
        if (Date.now() > deadline) throw new Error(`dockerd did not answer on ${sock} within 30 s: ${log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (err) {
    await stop();
    if (!opts.containerd) await containerd.cleanup();
    throw err;
  }
  return {
    dir,
    sock,
    docker,
    containerd,
    stop,
    async cleanup() {
      await stop();
      await rm(dir, { recursive: true, force: true });
      if (!opts.containerd) await containerd.cleanup();
    },
  };
}
