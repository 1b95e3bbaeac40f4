import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BuiltImage } from './images.ts';

// Debian's docker-registry (the distribution registry) on 127.0.0.1 with a
// temp filesystem store; images go in with skopeo, as an operator would.
export interface Registry {
  host: string; // 127.0.0.1:PORT
  root: string; // storage root dir
  push(img: BuiltImage, repo: string): Promise<string>; // returns the manifest digest as the registry has it
  blobPath(digest: string): string; // where the registry keeps a blob's bytes
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startRegistry(): Promise<Registry> {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-registry-'));
  const root = join(dir, 'store');
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    ['version: 0.1', 'log:', '  level: error', 'storage:', '  filesystem:', `    rootdirectory: ${root}`, '  delete:', '    enabled: true', 'http:', `  addr: ${host}`, ''].join('\n'),
  );
  const proc: ChildProcess = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const r = await fetch(`http://${host}/v2/`);
      if (r.ok) break;
    } catch {
      // not yet
    }
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`docker-registry did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host,
    root,
    async push(img, repo) {
      const file = join(dir, `${repo.replace(/\//g, '_')}.tar`);
      await writeFile(file, img.archive);
      const src = img.format === 'oci' ? `oci-archive:${file}` : `docker-archive:${file}`;
      const r = spawnSync('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', src, `docker://${host}/${repo}:${img.tag}`], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`skopeo copy failed: ${r.stderr}`);
      const head = await fetch(`http://${host}/v2/${repo}/manifests/${img.tag}`, {
        method: 'HEAD',
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
      });
      const digest = head.headers.get('docker-content-digest');
      if (!digest) throw new Error('registry did not report a manifest digest');
      return digest;
    },
    blobPath(digest) {
      const hex = digest.replace(/^sha256:/, '');
      return join(root, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    },
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
