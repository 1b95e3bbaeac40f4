import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SealkitError } from '../lib/errors.ts';

// containerd through its own CLI, `ctr`: the importer needs import, list,
// label, tag, remove and content reads, all of which ctr does, and ctr speaks
// the gRPC API so we need no client library. A ctr that cannot reach the
// daemon becomes SEALKIT_UNAVAILABLE, which the importer retries.

export interface CtrImage {
  ref: string;
  mediaType: string;
  digest: string;
  labels: Record<string, string>;
}

const UNREACHABLE = /failed to dial|connection refused|connection reset|no such file or directory.*sock|Unavailable|transport is closing|error reading from server|context deadline exceeded|broken pipe/i;

export class Containerd {
  constructor(
    readonly sock: string,
    private readonly bin = process.env.SEALKIT_CTR ?? 'ctr',
  ) {}

  async run(ns: string, args: string[], stdin?: Readable): Promise<string> {
    try {
      await access(this.sock);
    } catch {
      throw this.unavailable(`socket ${this.sock} does not exist`);
    }
    const child = spawn(this.bin, ['--address', this.sock, '--connect-timeout', '3s', '--namespace', ns, ...args], {
      stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d));
    child.stderr!.on('data', (d: Buffer) => (err = (err + d).slice(-4000)));
    if (stdin && child.stdin) {
      // pipeline, not pipe + 'error' listeners: a source that already failed
      // (a bad archive fails on its first block, which can be read before we
      // get here) must still end ctr's input, or ctr waits for more forever.
      // Either side failing destroys the other; the reading side reports why.
      pipeline(stdin, child.stdin).catch(() => {});
    }
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', (e) => reject(new SealkitError('SEALKIT_CONFIG', `cannot run ${this.bin}: ${e.message}; install containerd's ctr or set SEALKIT_CTR`)));
      child.once('close', (c) => resolve(c));
    });
    if (stdin && !stdin.readableEnded) stdin.destroy(new Error('ctr exited before reading all input'));
    if (code === 0) return out;
    const msg = err.trim().replace(/^ctr: /, '');
    if (UNREACHABLE.test(msg)) throw this.unavailable(msg);
    throw new SealkitError('SEALKIT_IMPORT_FAILED', `ctr ${args[0]} ${args[1] ?? ''} in namespace ${ns} failed: ${msg || `exit ${code}`}`, { ns, args });
  }

  private unavailable(detail: string): SealkitError {
    return new SealkitError('SEALKIT_UNAVAILABLE', `containerd at ${this.sock} is not answering (${detail}); the import is retried when it is back`, { sock: this.sock });
  }

  async ping(): Promise<void> {
    await this.run('default', ['version']);
  }

  // Import a tar stream under `staging` only: no unpack, and --digests so the
  // manifests come back as `staging@sha256:…` refs we can check and promote.
  async importTar(ns: string, staging: string, tar: Readable): Promise<void> {
    await this.run(ns, ['images', 'import', '--no-unpack', '--digests', '--base-name', staging, '--index-name', staging, '-'], tar);
  }

  async list(ns: string, filter: string): Promise<CtrImage[]> {
    const out = await this.run(ns, ['images', 'ls', filter]);
    return out
      .split('\n')
      .slice(1)
      .map((l) => l.trim().split(/\s+/))
      .filter((t) => t.length >= 4 && t[2].startsWith('sha256:'))
      .map((t) => ({ ref: t[0], mediaType: t[1], digest: t[2], labels: parseLabels(t[t.length - 1]) }));
  }

  async get(ns: string, ref: string): Promise<CtrImage | undefined> {
    return (await this.list(ns, `name==${JSON.stringify(ref)}`)).find((i) => i.ref === ref);
  }

  async withPrefix(ns: string, prefix: string): Promise<CtrImage[]> {
    const re = `^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`;
    return (await this.list(ns, `name~=${JSON.stringify(re)}`)).filter((i) => i.ref.startsWith(prefix));
  }

  async namespaces(): Promise<string[]> {
    return (await this.run('default', ['namespaces', 'ls', '-q'])).split('\n').map((l) => l.trim()).filter(Boolean);
  }

  async label(ns: string, ref: string, labels: Record<string, string>): Promise<void> {
    await this.run(ns, ['images', 'label', ref, ...Object.entries(labels).map(([k, v]) => `${k}=${v}`)]);
  }

  // Point `to` at what `from` points at, labels included. ctr creates the
  // name, or replaces it when it exists (delete + create).
  async tag(ns: string, from: string, to: string): Promise<void> {
    await this.run(ns, ['images', 'tag', '--force', from, to]);
  }

  async remove(ns: string, refs: string[]): Promise<void> {
    if (refs.length) await this.run(ns, ['images', 'rm', ...refs]);
  }

  async content(ns: string, digest: string): Promise<Buffer> {
    return Buffer.from(await this.run(ns, ['content', 'get', digest]), 'utf8');
  }
}

// "k=v,k2=v2" as ctr prints it; a value may itself hold commas (URLs).
export function parseLabels(col: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!col || col === '-') return out;
  for (const pair of col.split(/,(?=[A-Za-z0-9._/-]+=)/)) {
    const eq = pair.indexOf('=');
    if (eq > 0) out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}
