import { spawn } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage, type BuiltImage } from '../test/helpers/images.ts';
import type { BenchContext } from './measure.ts';

// Inputs shared by row groups: incompressible bytes from AES-256-CTR (fast,
// unlike a JS PRNG), real image archives built by the test helper, and the
// test HTTP server run as a child process.

export function noise(size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  const cipher = createCipheriv('aes-256-ctr', randomBytes(32), randomBytes(16));
  const zeros = Buffer.alloc(Math.min(size, 64 << 20));
  for (let off = 0; off < size; off += zeros.length) {
    const n = Math.min(zeros.length, size - off);
    cipher.update(zeros.subarray(0, n)).copy(out, off);
  }
  return out;
}

export interface ArchiveFile {
  path: string;
  img: Omit<BuiltImage, 'archive' | 'layers' | 'files'>; // the big buffers are dropped
}

/** A docker-archive (Docker and containerd load it) of `layers` layers of incompressible data, written to ctx.tmp. */
export async function imageArchive(ctx: BenchContext, file: string, spec: { layers: number; layerBytes: number; name?: string; format?: 'oci' | 'docker' }): Promise<ArchiveFile & { full: BuiltImage }> {
  const layers = Array.from({ length: spec.layers }, (_, i) => ({ [`data/layer${i}.bin`]: noise(spec.layerBytes) }));
  const full = await buildImage({ name: spec.name ?? 'bench/image', tag: 'v1', format: spec.format ?? 'docker', layerCompression: 'none', layers });
  const path = join(ctx.tmp, file);
  await writeFile(path, full.archive);
  const { archive: _a, layers: _l, files: _f, ...img } = full;
  return { path, img, full };
}

export interface HttpChild {
  origin: string;
  pid: number;
  stop(): Promise<void>;
}

/** test/helpers/http.ts in a child process, serving files by path. */
export async function serveFiles(routes: Record<string, string>): Promise<HttpChild> {
  const entry = fileURLToPath(new URL('./serve.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...Object.entries(routes).map(([p, f]) => `${p}=${f}`)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d).slice(-4000)));
  const origin = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl).trim());
    });
    child.once('exit', (code) => reject(new Error(`HTTP server child exited ${code}: ${err}`)));
  });
  return {
    origin,
    pid: child.pid!,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
