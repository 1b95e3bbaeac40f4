import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SealkitError } from '../lib/errors.ts';
import { GrpcClient, Status, type GrpcError } from './grpc.ts';
import { ProtoWriter, decode, msg, msgs, num, str, strMap, type Fields } from './protobuf.ts';

// containerd: the archive goes in through `ctr images import` (containerd's
// own importer, one process per import), every other call (list, get,
// create/update, delete, content reads, namespaces) over containerd's gRPC
// API directly, on one kept connection: a `ctr` process costs a Go binary
// start and a dial each time, 50–300 ms on this machine's two cores. A
// containerd that cannot be reached becomes SEALKIT_UNAVAILABLE, which the
// importer retries.

export interface CtrImage {
  ref: string;
  mediaType: string;
  digest: string;
  size: number;
  annotations: Record<string, string>;
  labels: Record<string, string>;
}

const UNREACHABLE = /failed to dial|connection refused|connection reset|no such file or directory.*sock|Unavailable|transport is closing|error reading from server|context deadline exceeded|broken pipe/i;

export class Containerd {
  private readonly grpc: GrpcClient;

  constructor(
    readonly sock: string,
    private readonly bin = process.env.SEALKIT_CTR ?? 'ctr',
  ) {
    this.grpc = new GrpcClient(sock);
  }

  async run(ns: string, args: string[], stdin?: Readable): Promise<string> {
    await this.socketExists();
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

  private async socketExists(): Promise<void> {
    try {
      await access(this.sock);
    } catch {
      throw this.unavailable(`socket ${this.sock} does not exist`);
    }
  }

  private async call(ns: string | undefined, service: string, method: string, req: ProtoWriter): Promise<Buffer[]> {
    await this.socketExists();
    try {
      return await this.grpc.call(`/containerd.services.${service}/${method}`, req.finish(), ns === undefined ? {} : { 'containerd-namespace': ns });
    } catch (err) {
      const e = err as GrpcError;
      if (e.code === -1 || e.code === Status.Unavailable || e.code === Status.DeadlineExceeded) throw this.unavailable(e.message);
      throw err;
    }
  }

  private failed(err: unknown, ns: string, what: string): SealkitError {
    if (err instanceof SealkitError) return err;
    return new SealkitError('SEALKIT_IMPORT_FAILED', `containerd ${what} in namespace ${ns} failed: ${(err as Error).message}`, { ns });
  }

  close(): void {
    this.grpc.close();
  }

  async ping(): Promise<void> {
    await this.call(undefined, 'version.v1.Version', 'Version', new ProtoWriter());
  }

  // Import a tar stream under `staging` only: no unpack, and --digests so the
  // manifests come back as `staging@sha256:…` refs we can check and promote.
  async importTar(ns: string, staging: string, tar: Readable): Promise<void> {
    await this.run(ns, ['images', 'import', '--no-unpack', '--digests', '--base-name', staging, '--index-name', staging, '-'], tar);
  }

  // containerd's filter syntax, as `ctr images ls` takes it
  async list(ns: string, filter: string): Promise<CtrImage[]> {
    try {
      const [res] = await this.call(ns, 'images.v1.Images', 'List', new ProtoWriter().string(1, filter));
      return msgs(decode(res), 1).map(image);
    } catch (err) {
      throw this.failed(err, ns, `list of images matching ${filter}`);
    }
  }

  async get(ns: string, ref: string): Promise<CtrImage | undefined> {
    try {
      const [res] = await this.call(ns, 'images.v1.Images', 'Get', new ProtoWriter().string(1, ref));
      return image(msg(decode(res), 1));
    } catch (err) {
      if ((err as GrpcError).code === Status.NotFound) return undefined;
      throw this.failed(err, ns, `get of ${ref}`);
    }
  }

  async withPrefix(ns: string, prefix: string): Promise<CtrImage[]> {
    const re = `^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`;
    return (await this.list(ns, `name~=${JSON.stringify(re)}`)).filter((i) => i.ref.startsWith(prefix));
  }

  async namespaces(): Promise<string[]> {
    try {
      const [res] = await this.call(undefined, 'namespaces.v1.Namespaces', 'List', new ProtoWriter());
      return msgs(decode(res), 1).map((n) => str(n, 1)).filter(Boolean);
    } catch (err) {
      throw this.failed(err, 'any', 'list of namespaces');
    }
  }

  // Name `ref` the target `from` holds, with these labels, in one record:
  // created, or when the name exists replaced whole in one update (never
  // absent in between). Returns the record as containerd stored it.
  async put(ns: string, ref: string, from: CtrImage, labels: Record<string, string>): Promise<CtrImage> {
    const target = new ProtoWriter().string(1, from.mediaType).string(2, from.digest).uint(3, from.size).map(5, from.annotations);
    const record = new ProtoWriter().string(1, ref).map(2, labels).message(3, target);
    try {
      try {
        const [res] = await this.call(ns, 'images.v1.Images', 'Create', new ProtoWriter().message(1, record));
        return image(msg(decode(res), 1));
      } catch (err) {
        if ((err as GrpcError).code !== Status.AlreadyExists) throw err;
        // no field mask: every field (target and labels) is replaced
        const [res] = await this.call(ns, 'images.v1.Images', 'Update', new ProtoWriter().message(1, record));
        return image(msg(decode(res), 1));
      }
    } catch (err) {
      throw this.failed(err, ns, `naming ${ref} ${from.digest}`);
    }
  }

  // A name already gone is not an error: removing it was the point.
  async remove(ns: string, refs: string[]): Promise<void> {
    await Promise.all(
      refs.map(async (ref) => {
        try {
          await this.call(ns, 'images.v1.Images', 'Delete', new ProtoWriter().string(1, ref));
        } catch (err) {
          if ((err as GrpcError).code !== Status.NotFound) throw this.failed(err, ns, `removal of ${ref}`);
        }
      }),
    );
  }

  async content(ns: string, digest: string): Promise<Buffer> {
    try {
      const res = await this.call(ns, 'content.v1.Content', 'Read', new ProtoWriter().string(1, digest));
      return Buffer.concat(res.map((r) => (decode(r).get(2)?.at(-1) as Buffer | undefined) ?? Buffer.alloc(0)));
    } catch (err) {
      throw this.failed(err, ns, `read of ${digest}`);
    }
  }
}

// containerd.services.images.v1.Image and its containerd.types.Descriptor
function image(f: Fields): CtrImage {
  const t = msg(f, 3);
  return { ref: str(f, 1), labels: strMap(f, 2), mediaType: str(t, 1), digest: str(t, 2), size: num(t, 3), annotations: strMap(t, 5) };
}
