import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SealkitError } from '../lib/errors.ts';
import { GrpcClient, Status, type GrpcError } from './grpc.ts';
import { ProtoWriter, decode, msg, msgs, num, str, strMap, type Fields } from './protobuf.ts';

// containerd over its gRPC API, on one kept connection: blobs written into
// the content store (Content.Write, each committed with its digest, under a
// lease), images named, listed, removed. A `ctr` process costs a Go binary
// start and a dial each time, 50–300 ms on this machine's two cores; it is
// still what imports a compressed archive (`ctr images import`). A
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

export interface BlobWrite {
  fh?: FileHandle; // read positionally
  bytes?: Buffer; // or these (a blob that is not in the file)
  offset: number;
  size: number;
  expected?: string; // sha256:…; containerd refuses other bytes
  labels?: Record<string, string>;
}

export const LEASE_PREFIX = 'sealkit-import-';
// a lease left by a crash lets its content be collected after this long
const LEASE_EXPIRE_MS = 60 * 60_000;
const CHUNK = 1 << 20;
const WRITE = 1;
const COMMIT = 2;

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

  // Content written under a lease is kept until the lease goes: an import
  // that fails half-way deletes it and the garbage collector takes the blobs.
  async lease(ns: string): Promise<string> {
    const id = `${LEASE_PREFIX}${randomBytes(8).toString('hex')}`;
    const expire = new Date(Date.now() + LEASE_EXPIRE_MS).toISOString().replace(/\.\d+Z$/, 'Z');
    try {
      await this.call(ns, 'leases.v1.Leases', 'Create', new ProtoWriter().string(1, id).map(3, { 'containerd.io/gc.expire': expire }));
      return id;
    } catch (err) {
      throw this.failed(err, ns, 'lease creation');
    }
  }

  async dropLease(ns: string, id: string): Promise<void> {
    try {
      await this.call(ns, 'leases.v1.Leases', 'Delete', new ProtoWriter().string(1, id));
    } catch (err) {
      if ((err as GrpcError).code !== Status.NotFound) throw this.failed(err, ns, `removal of lease ${id}`);
    }
  }

  async leases(ns: string): Promise<string[]> {
    try {
      const [res] = await this.call(ns, 'leases.v1.Leases', 'List', new ProtoWriter());
      return msgs(decode(res), 1).map((l) => str(l, 1));
    } catch (err) {
      throw this.failed(err, ns, 'list of leases');
    }
  }

  // One blob from the file into the content store, streamed in 1 MiB
  // messages from reused buffers. Returns its digest: the expected one, or,
  // when none is known, the one containerd computed.
  async writeBlob(ns: string, lease: string, b: BlobWrite): Promise<string> {
    await this.socketExists();
    const ref = `${LEASE_PREFIX}${randomBytes(12).toString('hex')}`;
    const s = this.grpc.stream('/containerd.services.content.v1.Content/Write', { 'containerd-namespace': ns, 'containerd-lease': lease });
    const head = (action: number, offset: number, dataLen: number, last?: string) => {
      const w = new ProtoWriter().uint(1, action).string(2, ref).uint(3, b.size).string(4, b.expected).uint(5, offset);
      if (action === COMMIT) w.string(4, last).map(7, b.labels ?? {});
      const fields = w.finish();
      const tag = dataLen ? Buffer.from([0x32, ...varintBytes(dataLen)]) : Buffer.alloc(0);
      const h = Buffer.alloc(5 + fields.length + tag.length);
      h.writeUInt32BE(fields.length + tag.length + dataLen, 1);
      fields.copy(h, 5);
      tag.copy(h, 5 + fields.length);
      return h;
    };
    const bufs = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
    const pending: Array<Promise<void>> = [Promise.resolve(), Promise.resolve()];
    let settled = false;
    s.done.then(
      () => (settled = true),
      () => (settled = true),
    );
    let sent = 0;
    try {
      for (let off = 0, i = 0; off < b.size && !settled; off += CHUNK, i++) {
        const n = Math.min(CHUNK, b.size - off);
        await pending[i % 2];
        const buf = bufs[i % 2];
        const bytesRead = b.bytes ? b.bytes.copy(buf, 0, b.offset + off, b.offset + off + n) : (await b.fh!.read(buf, 0, n, b.offset + off)).bytesRead;
        if (bytesRead !== n) throw new SealkitError('SEALKIT_CACHE_CORRUPT', `the cached archive ended early while reading a blob at byte ${b.offset + off}; it changed after the check`);
        void s.write(head(WRITE, off, n));
        sent++;
        pending[i % 2] = s.write(buf.subarray(0, n));
      }
      await Promise.all(pending);
      if (settled) {
        await s.done; // its status says why containerd ended the write
        throw new SealkitError('SEALKIT_IMPORT_FAILED', `containerd ended the write of ${b.expected ?? 'a blob'} in namespace ${ns} before its commit`);
      }
      // the digest containerd hashed, from the last write's answer, names a
      // blob whose digest the archive does not give
      const hashed = b.expected ?? (b.size ? lastDigest(await s.receivedAtLeast(sent)) : EMPTY);
      s.end(head(COMMIT, b.size, 0, hashed));
      await s.done;
      return hashed!;
    } catch (err) {
      s.cancel();
      const e = err as GrpcError;
      if (e.code === Status.AlreadyExists) return b.expected ?? lastDigest(s.received());
      if (err instanceof SealkitError) throw err;
      if (e.code === -1 || e.code === Status.Unavailable || e.code === Status.DeadlineExceeded) throw this.unavailable(e.message);
      if (b.expected && /unexpected commit (digest|size)/.test(e.message)) {
        throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `a blob of the archive is not ${b.expected} it is named as (containerd: ${e.message})`, { ns, expected: b.expected });
      }
      throw this.failed(err, ns, `write of ${b.expected ?? 'a blob'}`);
    }
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

const EMPTY = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function varintBytes(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

// WriteContentResponse.digest of the last answer that has one
function lastDigest(responses: Buffer[]): string {
  for (let i = responses.length - 1; i >= 0; i--) {
    const d = str(decode(responses[i]), 6);
    if (d) return d;
  }
  throw new SealkitError('SEALKIT_IMPORT_FAILED', 'containerd did not report the digest of a written blob');
}

// containerd.services.images.v1.Image and its containerd.types.Descriptor
function image(f: Fields): CtrImage {
  const t = msg(f, 3);
  return { ref: str(f, 1), labels: strMap(f, 2), mediaType: str(t, 1), digest: str(t, 2), size: num(t, 3), annotations: strMap(t, 5) };
}
