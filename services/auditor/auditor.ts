import { createHash } from 'node:crypto';
import { subjects } from '../lib/subjects.ts';
import type { DenialData, LostData, SpoofData } from '../lib/contract.ts';
import type { Logger } from '../lib/log.ts';
import type { PublishOptions } from '../lib/outbox.ts';
import { KERNEL_FACILITY, parseKmsgRecord } from './kmsg.ts';
import { denialFacts, isDenial, parseAuditMessage, type IntegrityRecord } from './integrity.ts';
import { Storm, type Output } from './storm.ts';
import { readCursor, writeCursor, type Cursor } from './cursor.ts';
import type { Source } from './source.ts';
import type { FileOwner, ManifestIndex } from './manifests.ts';
import type { Containers, ProcessBatch, WorkloadOwner } from './containers.ts';

// The auditor's core: read what the source has, keep kernel integrity
// failures, tie each to its container and image, let the storm control
// collapse and cap them, publish, and only then move the cursor.

export type Format = 'kmsg' | 'audit-log';

export interface Publisher {
  publish<T>(type: string, data: T, opts?: PublishOptions): Promise<unknown>;
}

export interface AuditorOptions {
  source: Source;
  format: Format;
  manifests: ManifestIndex;
  // the workload containers the runner started; without them a denial is
  // tied to a rootfs by its path alone
  containers?: Containers;
  events: Publisher;
  cursorFile: string;
  log: Logger;
  windowMs: number;
  maxPerSec: number;
  // the source wakes the auditor when it grows; this timer only covers the
  // wake-ups that never come (inotify on some filesystems, no `cat`)
  fallbackMs?: number;
  batch?: number;
  now?: () => number;
}

const RAW_MAX = 2048;
export const DEFAULT_FALLBACK_MS = 1000;

export class Auditor {
  private storm!: Storm<DenialData>;
  private cursor!: Cursor<DenialData>;
  private chain: Promise<void> = Promise.resolve();
  private saved: Promise<void> = Promise.resolve();
  private nextCursor?: Cursor<DenialData>;
  private stopped = false;
  private pendingDrain = false;
  private loop?: Promise<void>;
  private ticker?: NodeJS.Timeout;
  private wake?: () => void;
  private changed = false; // the source said it grew since the last read began
  private caughtUp = false;
  private readonly now: () => number;
  readonly stats = { records: 0, denials: 0, published: 0, spoofed: 0, lost: 0 };

  constructor(private readonly o: AuditorOptions) {
    this.now = o.now ?? Date.now;
  }

  async start(): Promise<void> {
    const saved = await readCursor<DenialData>(this.o.cursorFile);
    const same = saved && saved.path === this.o.source.path && saved.identity === this.o.source.identity;
    if (saved && !same) this.o.log.info('kernel log restarted (new boot or new file); reading it from the start', { was: saved.identity, now: this.o.source.identity });
    this.cursor = same
      ? saved
      : { version: 1, path: this.o.source.path, identity: this.o.source.identity, seq: null, offset: 0, storm: null, updatedAt: new Date().toISOString() };
    this.storm = new Storm<DenialData>({ windowMs: this.o.windowMs, maxPerSec: this.o.maxPerSec }, idPrefix(saved?.identity ?? this.o.source.identity));
    // counts held by a previous run are carried over, whatever the source
    if (saved?.storm) this.storm.restore(saved.storm, this.now());
    if (!same) this.pendingDrain = true;
    await this.o.manifests.reload();
    const tickMs = Math.max(50, Math.min(1000, Math.floor(this.o.windowMs / 4)));
    this.ticker = setInterval(() => void this.serial(() => this.tick()), tickMs);
    this.o.source.watch(() => {
      this.changed = true;
      this.wake?.();
    }, this.o.log);
    this.loop = this.follow();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.ticker);
    this.wake?.();
    await this.loop;
    await this.chain;
    await this.saved;
    await this.o.source.close();
    this.o.manifests.close();
  }

  private idTag(): string {
    return idPrefix(this.cursor.identity);
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn).catch((err) => this.o.log.error('auditor step failed', { err: err as Error }));
    this.chain = next;
    return next;
  }

  private async follow(): Promise<void> {
    while (!this.stopped) {
      let got = 0;
      this.changed = false;
      await this.serial(async () => {
        got = await this.step();
      });
      if (got > 0) this.caughtUp = false;
      else if (!this.caughtUp) {
        this.caughtUp = true;
        this.o.log.debug('read the kernel log to its end; waiting for it to grow', { path: this.o.source.path, seq: this.cursor.seq, offset: this.cursor.offset });
      }
      if (got === 0 && !this.stopped && !this.changed) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, this.o.fallbackMs ?? DEFAULT_FALLBACK_MS);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wake = undefined;
      }
    }
  }

  // One batch: everything the source has now (up to `batch` records).
  private async step(): Promise<number> {
    const { source } = this.o;
    const batch = await source.read(this.o.batch ?? 1000);
    if (batch.overflow) this.o.log.warn('the kernel ring overwrote records before they were read', { path: source.path });
    const now = this.now();
    const outputs: Array<Output<DenialData>> = [];
    if (source.identity !== this.cursor.identity || this.pendingDrain) {
      if (source.identity !== this.cursor.identity) this.o.log.info('kernel log replaced; following the new one from its start', { was: this.cursor.identity, now: source.identity });
      // what the old stream still held is reported under the old stream's ids
      outputs.push(...this.storm.drain(now));
      this.cursor = { ...this.cursor, identity: source.identity, seq: null, offset: 0 };
      this.storm.prefix = idPrefix(source.identity);
      this.pendingDrain = false;
    }
    if (batch.records.length === 0) {
      if (outputs.length) {
        await Promise.all(this.emit(outputs));
        this.save();
      }
      return 0;
    }
    const parseLost = { n: 0, firstSeq: 0, sample: '' };
    const spoof: SpoofData = { count: 0, firstSeq: 0, lastSeq: 0, samples: [] };
    const extra: Array<{ subject: string; data: LostData | SpoofData; id: string }> = [];
    const lookups: ProcessBatch = {};

    for (const rec of batch.records) {
      this.stats.records++;
      let message = rec.text;
      let kernel: { seq: number | null; usec: number | null } = { seq: null, usec: null };
      let pos = rec.end;
      if (this.o.format === 'kmsg') {
        const k = parseKmsgRecord(rec.text);
        if (!k) {
          if (/type=18\d\d/.test(rec.text)) this.countParse(parseLost, this.cursor.seq ?? 0, rec.text);
          continue;
        }
        if (this.cursor.seq !== null && k.seq <= this.cursor.seq) continue; // handled before a restart
        if (this.cursor.seq !== null && k.seq > this.cursor.seq + 1) {
          const from = this.cursor.seq + 1;
          const dropped = k.seq - from;
          extra.push({
            subject: subjects.audit.lost,
            id: `${this.idTag()}-lost-ring-${from}`,
            data: { service: 'auditor', reason: 'ring-overflow', dropped, since: new Date(now).toISOString(), fromSeq: from, toSeq: k.seq - 1 },
          });
        }
        this.cursor.seq = k.seq;
        pos = k.seq;
        kernel = { seq: k.seq, usec: k.usec };
        message = k.message;
        if (k.facility !== KERNEL_FACILITY) {
          // userspace wrote this into /dev/kmsg; it is never a kernel denial
          if (parseAuditMessage(message).kind !== 'other') {
            if (spoof.count++ === 0) spoof.firstSeq = k.seq;
            spoof.lastSeq = k.seq;
            if (spoof.samples.length < 3) spoof.samples.push(rec.text.slice(0, RAW_MAX));
          }
          continue;
        }
        const suppressed = /^kauditd_printk_skb: (\d+) callbacks suppressed/.exec(message);
        if (suppressed) {
          extra.push({
            subject: subjects.audit.lost,
            id: `${this.idTag()}-lost-kernel-${k.seq}`,
            data: { service: 'auditor', reason: 'kernel-ratelimit', dropped: Number(suppressed[1]), since: new Date(now).toISOString(), fromSeq: k.seq },
          });
          continue;
        }
      }
      const parsed = parseAuditMessage(message);
      if (parsed.kind === 'other') continue;
      if (parsed.kind === 'malformed') {
        this.countParse(parseLost, pos, rec.text);
        continue;
      }
      if (!isDenial(parsed.record)) continue;
      this.stats.denials++;
      const data = await this.describe(parsed.record, kernel, rec.text, lookups);
      // two containers run from one rootfs failing on one file are two facts
      outputs.push(...this.storm.offer({ key: `${data.file}\0${data.cause}\0${data.process.comm}\0${data.workload ?? ''}`, seq: pos, data }, now));
    }
    this.cursor.offset = batch.records[batch.records.length - 1].end;

    if (parseLost.n > 0) {
      extra.push({
        subject: subjects.audit.lost,
        id: `${this.idTag()}-lost-parse-${parseLost.firstSeq}`,
        data: { service: 'auditor', reason: 'parse', dropped: parseLost.n, since: new Date(now).toISOString(), sample: parseLost.sample },
      });
    }
    if (spoof.count > 0) {
      this.stats.spoofed += spoof.count;
      this.o.log.warn('lines forged into /dev/kmsg by userspace look like integrity records; not reported as denials', { count: spoof.count });
      extra.push({ subject: subjects.audit.spoof, id: `${this.idTag()}-spoof-${spoof.firstSeq}`, data: spoof });
    }
    const written = this.emit(outputs);
    for (const e of extra) {
      if (e.subject === subjects.audit.lost) this.stats.lost += (e.data as LostData).dropped;
      written.push(this.o.events.publish(e.subject, e.data, { id: e.id }));
    }
    await Promise.all(written);
    this.save();
    return batch.records.length;
  }

  private countParse(p: { n: number; firstSeq: number; sample: string }, pos: number, raw: string): void {
    if (p.n++ === 0) {
      p.firstSeq = pos;
      p.sample = raw.slice(0, 512);
    }
    this.o.log.warn('integrity record could not be parsed; counted on audit.lost', { raw: raw.slice(0, 512) });
  }

  private async tick(): Promise<void> {
    const out = this.storm.tick(this.now());
    if (out.length === 0) return;
    await Promise.all(this.emit(out));
    this.save();
  }

  // Hands every output to the outbox at once, so they share its disk writes;
  // the cursor may move only once all of the returned promises resolved.
  private emit(outputs: Array<Output<DenialData>>): Array<Promise<unknown>> {
    const written: Array<Promise<unknown>> = [];
    for (const out of outputs) {
      if (out.kind === 'lost') {
        this.stats.lost += out.dropped;
        const data: LostData = { service: 'auditor', reason: 'rate-limit', dropped: out.dropped, since: out.since, until: out.until };
        written.push(this.o.events.publish(subjects.audit.lost, data, { id: out.id }));
        continue;
      }
      const data: DenialData = out.repeats ? { ...out.data, repeats: out.repeats, window: out.window } : out.data;
      this.stats.published++;
      written.push(this.o.events.publish(subjects.audit.denial, data, {
        id: out.id,
        headers: {
          'Sealkit-Container': data.container ?? undefined,
          'Sealkit-Workload': data.workload ?? undefined,
          'Sealkit-Image': data.image ? `${data.image.name}:${data.image.tag}` : undefined,
          'Sealkit-Digest': data.image?.digest,
        },
      }));
    }
    return written;
  }

  // The cursor as it is now, written after the writes asked for before it.
  // The next batch is read while this one is being synced (an fsync took up
  // to 45 ms on a loaded machine, and a denial waited behind it): its events
  // are in the outbox already, and a crash before the write only means they
  // are read and published again under the same ids, which the stream drops.
  // Only the newest cursor waiting is written: in a storm each batch saves,
  // and a queue of stale cursors (each with its storm snapshot) would be
  // synced one after another behind the batches.
  private save(): void {
    const queued = this.nextCursor !== undefined;
    this.nextCursor = { ...this.cursor, storm: this.storm.snapshot(), updatedAt: new Date().toISOString() };
    if (!queued) this.saved = this.saved.then(() => this.writeNext());
  }

  private async writeNext(): Promise<void> {
    const cursor = this.nextCursor!;
    this.nextCursor = undefined;
    await writeCursor(this.o.cursorFile, cursor).catch((err) =>
      this.o.log.error('cannot write the auditor cursor; the records since the last one written are read again after a restart', { file: this.o.cursorFile, err: err as Error }),
    );
  }

  private async describe(r: IntegrityRecord, kernel: { seq: number | null; usec: number | null }, raw: string, lookups: ProcessBatch): Promise<DenialData> {
    const f = denialFacts(r);
    let owner: FileOwner | null = null;
    let inWorkload: WorkloadOwner | null = null;
    if (f.file) {
      owner = await this.o.manifests.lookup(f.file, f.ino, lookups);
      // a path under the store is the host's view of it: no container to look
      // for, and no /proc to read in a storm of them
      if (owner?.match !== 'rootfs-prefix' && this.o.containers && !this.o.containers.idle) {
        inWorkload = await this.o.containers.ofDenial({ pid: f.process.pid, mntNs: f.mntNs, path: f.file, ino: f.ino }, lookups);
        if (inWorkload) owner = inWorkload;
      }
    }
    return {
      mechanism: f.mechanism,
      rule: f.rule,
      file: inWorkload?.file ?? f.file,
      path: f.file,
      cause: f.cause,
      op: f.op,
      type: r.type,
      process: f.process,
      dev: f.dev,
      ino: f.ino,
      mntNs: f.mntNs,
      errno: f.errno,
      container: owner?.container ?? null,
      workload: inWorkload?.workload ?? null,
      image: owner?.image ?? null,
      expectedSha256: owner?.expectedSha256 ?? null,
      policySerial: owner?.policySerial ?? null,
      match: owner?.match ?? null,
      kernel: { ...kernel, auditId: r.auditId, time: r.time },
      truncated: r.truncated,
      raw: raw.slice(0, RAW_MAX),
    };
  }
}

function idPrefix(identity: string): string {
  return `auditor-${createHash('sha256').update(identity).digest('hex').slice(0, 12)}`;
}
