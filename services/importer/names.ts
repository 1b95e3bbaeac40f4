import { Transform, type TransformCallback } from 'node:stream';
import { SealkitError } from '../lib/errors.ts';
import { cstr, headerName, headerSize, parsePax } from './tarindex.ts';

// A streaming tar filter that removes the image names an archive carries
// about itself (OCI index.json annotations, docker manifest.json RepoTags).
// containerd creates an image for every such name, bypassing --base-name, so
// an archive pinned as "a/b:1" could otherwise create or overwrite "c/d:2" in
// the namespace, unverified. Only the two small metadata entries are
// rewritten; every other byte passes through untouched.

const BLOCK = 512;
const MAX_META = 4 * 1024 * 1024;
const OCI_NAME = 'io.containerd.image.name';
const OCI_REF = 'org.opencontainers.image.ref.name';

export interface ArchiveMeta {
  index?: { manifests?: Array<{ digest?: string; annotations?: Record<string, string> }> };
  manifest?: Array<{ Config?: string; RepoTags?: string[] | null; Layers?: string[] }>;
}

type Mode = { kind: 'header' } | { kind: 'pass'; left: number } | { kind: 'hold'; left: number; pad: number; what: 'pax' | 'longname' | 'meta'; name?: string } | { kind: 'trailer' };

export class StripNames extends Transform {
  readonly meta: ArchiveMeta = {};
  private buf: Buffer = Buffer.alloc(0);
  private mode: Mode = { kind: 'header' };
  private held: Buffer[] = []; // pax / longname entries waiting for their file
  private heldBody: Buffer[] = [];
  private header?: Buffer;
  private paxPath?: string;
  private paxSize?: number;
  private longName?: string;

  constructor(private readonly what: string) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
      this.drain();
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    if (this.mode.kind !== 'trailer' && (this.mode.kind !== 'header' || this.buf.length)) {
      done(new SealkitError('SEALKIT_ARCHIVE_INVALID', `${this.what} ends in the middle of a tar entry; the archive is truncated`));
      return;
    }
    done();
  }

  private drain(): void {
    while (this.buf.length) {
      const m = this.mode;
      if (m.kind === 'trailer') {
        this.push(this.buf);
        this.buf = Buffer.alloc(0);
        return;
      }
      if (m.kind === 'pass') {
        const n = Math.min(m.left, this.buf.length);
        this.push(this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        m.left -= n;
        if (m.left === 0) this.mode = { kind: 'header' };
        continue;
      }
      if (m.kind === 'hold') {
        const n = Math.min(m.left, this.buf.length);
        this.heldBody.push(this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        m.left -= n;
        if (m.left === 0) this.finishHeld(m);
        continue;
      }
      if (this.buf.length < BLOCK) return;
      const h = this.buf.subarray(0, BLOCK);
      this.buf = this.buf.subarray(BLOCK);
      this.onHeader(h);
    }
  }

  private onHeader(h: Buffer): void {
    if (h.every((b) => b === 0)) {
      this.push(Buffer.concat([...this.held, h]));
      this.held = [];
      this.mode = { kind: 'trailer' };
      return;
    }
    const type = String.fromCharCode(h[156] || 0x30);
    const meta = type === 'x' || type === 'L';
    const bad = (why: string) => new SealkitError('SEALKIT_ARCHIVE_INVALID', `${this.what} has ${why}`);
    const size = meta ? headerSize(h, bad) : (this.paxSize ?? headerSize(h, bad));
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    if (meta) {
      if (size > MAX_META) throw new SealkitError('SEALKIT_ARCHIVE_INVALID', `${this.what} has a ${size}-byte tar extended header; refusing`);
      this.held.push(Buffer.from(h));
      this.mode = { kind: 'hold', left: padded, pad: padded - size, what: type === 'x' ? 'pax' : 'longname' };
      this.heldBody = [];
      return;
    }
    const name = normalize(this.paxPath ?? this.longName ?? headerName(h));
    this.paxPath = this.paxSize = this.longName = undefined;
    if ((type === '0' || type === '\0' || type === '7') && (name === 'index.json' || name === 'manifest.json') && size <= MAX_META) {
      this.held = []; // rewritten below with a plain ustar header
      this.header = Buffer.from(h);
      this.heldBody = [];
      if (padded === 0) this.finishHeld({ kind: 'hold', left: 0, pad: 0, what: 'meta', name });
      else this.mode = { kind: 'hold', left: padded, pad: padded - size, what: 'meta', name };
      return;
    }
    this.push(Buffer.concat([...this.held, h]));
    this.held = [];
    this.mode = padded ? { kind: 'pass', left: padded } : { kind: 'header' };
  }

  private finishHeld(m: Extract<Mode, { kind: 'hold' }>): void {
    const full = Buffer.concat(this.heldBody);
    const body = full.subarray(0, full.length - m.pad);
    this.heldBody = [];
    this.mode = { kind: 'header' };
    if (m.what === 'pax') {
      this.held.push(full);
      const rec = parsePax(body);
      if (rec.path !== undefined) this.paxPath = rec.path;
      if (rec.size !== undefined) {
        // decimal digits only: Number() reads "1e3" as 1000 and "-512" as negative,
        // where tar readers disagree or loop
        const n = /^\d+$/.test(rec.size) ? Number(rec.size) : NaN;
        if (!Number.isSafeInteger(n)) throw new SealkitError('SEALKIT_ARCHIVE_INVALID', `${this.what} has a tar extended header with a bad size "${rec.size.slice(0, 40)}"`);
        this.paxSize = n;
      }
      return;
    }
    if (m.what === 'longname') {
      this.held.push(full);
      this.longName = body.toString('utf8').replace(/\0+$/, '');
      return;
    }
    const rewritten = this.rewrite(m.name!, body);
    this.push(ustarHeader(m.name!, rewritten.length, this.header!));
    this.push(rewritten);
    const pad = (BLOCK - (rewritten.length % BLOCK)) % BLOCK;
    if (pad) this.push(Buffer.alloc(pad));
  }

  private rewrite(name: string, body: Buffer): Buffer {
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('utf8'));
    } catch {
      throw new SealkitError('SEALKIT_ARCHIVE_INVALID', `${this.what}: ${name} is not JSON`);
    }
    const isObject = (v: unknown) => v !== null && typeof v === 'object' && !Array.isArray(v);
    const bad = (why: string) => new SealkitError('SEALKIT_ARCHIVE_INVALID', `${this.what}: ${name} ${why}`);
    if (name === 'index.json') {
      if (!isObject(doc)) throw bad('is not an object');
      const list = (doc as { manifests?: unknown }).manifests;
      if (list !== undefined && (!Array.isArray(list) || !list.every((m) => isObject(m) && ((m as { annotations?: unknown }).annotations === undefined || isObject((m as { annotations?: unknown }).annotations))))) throw bad('has manifests that are not a list of descriptors');
      const index = doc as ArchiveMeta['index'] & Record<string, unknown>;
      this.meta.index = structuredClone(index);
      for (const m of index?.manifests ?? []) {
        if (m.annotations) {
          delete m.annotations[OCI_NAME];
          delete m.annotations[OCI_REF];
        }
      }
      return Buffer.from(JSON.stringify(index));
    }
    if (!Array.isArray(doc) || !doc.every(isObject)) throw bad('is not a list of objects');
    this.meta.manifest = structuredClone(doc) as ArchiveMeta['manifest'];
    for (const m of doc as Array<Record<string, unknown>>) m.RepoTags = null;
    return Buffer.from(JSON.stringify(doc));
  }
}

function normalize(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/^\/+/, '');
}

// A fresh ustar header for a rewritten entry: same name and mode, new size.
function ustarHeader(name: string, size: number, orig: Buffer): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  orig.copy(h, 100, 100, 124); // mode, uid, gid
  h.write(size.toString(8).padStart(11, '0') + '\0', 124, 12, 'latin1');
  orig.copy(h, 136, 136, 148); // mtime
  h.write('0', 156, 1, 'latin1');
  h.write('ustar\0', 257, 6, 'latin1');
  h.write('00', 263, 2, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return h;
}
