import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { mkdir, open, readdir, readFile, unlink, writeFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { NatsConnection, JetStreamClient } from 'nats';
import { makeEvent, type CloudEvent } from './envelope.ts';
import { encode, makeHeaders } from './bus.ts';
import type { Logger } from './log.ts';
import { subjects } from './subjects.ts';
import { diskFull, isDiskFull } from './errors.ts';
import { Backoff } from './backoff.ts';
import { checkChainState, EventSealer, linkOf, newChainState, standInSubject, type ChainHead, type ChainState, type EventKey, type Link, type SealedEvent } from './eventsig.ts';

// Events go to disk first, then to JetStream with Nats-Msg-Id = event id. An
// event leaves the outbox only when JetStream acknowledged it, so a lost bus
// or a restarted service loses nothing, and a retry after an unacknowledged
// publish is dropped by the stream's duplicate window instead of stored twice.
// The disk side is an append-only log in segments (<seq>.json, one event a
// line), and a publish returns once its line is written; the events published
// in one turn of the event loop are written together. A segment goes once
// every event in it is acknowledged and no more are written to it; it stops
// taking events at SEGMENT_BYTES, so a steady stream never keeps one growing.
// A crash mid write can only tear the last line of the newest segment, which
// a restart skips: that event's publish never returned.
// The appends (event lines, acknowledged ids) are synchronous writes on
// descriptors kept open: a small append to the page cache costs a few
// microseconds, where a thread-pool write costs tens plus its promise, and
// that was most of an event's cost (a profile of 20,000 publishes: 25 % of
// the CPU in the pool's write and open/close calls). Like pino's sync
// destination, the write has returned before the publish does.
// JetStream publishes go out in a sliding window: up to `window` in flight,
// the next sent as soon as one is acknowledged.
//
// With a key, each event is signed and takes the next seq of its chain
// (lib/eventsig.ts) before it is written, so a republished event keeps its
// seq. The chain heads survive in <dir>/chain.state, written before a segment
// goes: a restart continues from the newest of that and the segments left,
// so it neither reuses a seq nor leaves a gap for events never sent.

interface Pending {
  order: number; // its place in the queue: a retry after a failure goes out in this order
  file?: string; // the segment it is written in (or, refused by the disk, a file of its own)
  unsaved?: boolean; // the disk refused it: held in memory, written again until it is on disk or acked
  subject: string;
  headers: Record<string, string>;
  event: CloudEvent<unknown>;
  payload: Uint8Array;
  link?: Link; // its place in its chain, when signed
}

export interface PublishOptions {
  // filterable copies of payload fields: Sealkit-Image, Sealkit-Container...
  headers?: Record<string, string | undefined>;
  id?: string;
  subject?: string; // the CloudEvents `subject` attribute
}

export interface OutboxOptions {
  nc: NatsConnection;
  service: string;
  node: string;
  dir?: string; // where pending events wait; memory only when absent
  log: Logger;
  maxPending?: number;
  window?: number; // publishes in flight at once
  ackTimeoutMs?: number;
  key?: EventKey; // the node's event key: every event signed and chained
}

const CHAIN_FILE = 'chain.state';
const SEGMENT_BYTES = 4 << 20;

export class EventPublisher {
  private readonly js: JetStreamClient;
  // not yet sent (from head on), in flight, refused by a failure and sent
  // again once the bus answers, acknowledged and not yet released
  private unsent: Pending[] = [];
  private head = 0;
  private readonly inflight = new Set<Pending>();
  private failed: Pending[] = [];
  private failure: unknown;
  private acked: Pending[] = [];
  private standIns: Pending[] = [];
  private releasing = 0;
  private fileWork: Promise<void> = Promise.resolve(); // what release() left to the disk
  private settled?: () => void; // wakes the pump when a publish settles or an event comes
  private order = 0;
  private seq = 0;
  private pumping = false;
  private readonly closing = new AbortController();
  // between unacknowledged tries; a reconnect or a new event ends a wait early
  private readonly backoff = new Backoff({ firstMs: 100, maxMs: 2000, signal: this.closing.signal });
  // events dropped, by reason, until audit.lost has reported them
  private lost = new Map<string, { dropped: number; since: string; sample?: string }>();
  private idleWaiters: Array<() => void> = [];
  private warnedNoStream = false;
  private lastSaveTry = 0;
  private segment?: { name: string; fd: number; bytes: number }; // the one being appended to
  private batch: Pending[] = []; // published this turn, written when it ends
  private batchWritten?: Promise<void>;
  private readonly unacked = new Map<string, number>(); // segment or file → its events not yet acknowledged
  private readonly ackFds = new Map<string, number>(); // segment → its open <segment>.acked
  private sealer?: EventSealer;
  // per chain, the newest link on disk or acknowledged: where a restart may
  // continue; and what chain.state says now
  private readonly safe: Record<string, ChainHead> = {};
  private savedSafe: Record<string, number> = {};

  constructor(private readonly o: OutboxOptions) {
    this.js = o.nc.jetstream();
    if (o.key && o.key.node !== o.node) {
      o.log.error('the event key belongs to another node: the fleet will flag every event of this one as forged; enroll this node again', { keyNode: o.key.node, node: o.node });
    }
    if (o.key && !o.dir) this.sealer = new EventSealer(o.key, newChainState());
    void (async () => {
      for await (const s of o.nc.status()) if (s.type === 'reconnect') this.backoff.wake();
    })();
  }

  // events not yet acknowledged (or acknowledged, and their files not yet updated)
  get pending(): number {
    return this.batch.length + this.unsent.length - this.head + this.inflight.size + this.failed.length + this.acked.length + this.releasing;
  }

  // Reload what a previous run left unpublished, oldest first.
  async init(): Promise<void> {
    if (!this.o.dir) return;
    await mkdir(this.o.dir, { recursive: true });
    const names = (await readdir(this.o.dir)).filter((n) => n.endsWith('.json')).sort();
    const kept: SealedEvent[] = [];
    const seen = new Set<string>();
    for (const name of names) {
      this.seq = Math.max(this.seq, Number.parseInt(name, 10) || 0);
      let text: string;
      try {
        text = await readFile(join(this.o.dir, name), 'utf8');
      } catch {
        continue; // gone meanwhile
      }
      const acked = await this.ackedIn(name);
      const recs: Array<Omit<Pending, 'payload' | 'file' | 'order'>> = [];
      // one event a line; only the last line of a segment can be torn (a
      // crash mid-write, whose publish never returned): it is skipped. An
      // event in two files (a write cut short, then written again) is sent once.
      for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        let r: Omit<Pending, 'payload' | 'file' | 'order'>;
        try {
          r = JSON.parse(line) as typeof r;
        } catch {
          continue;
        }
        if (typeof r?.event?.id !== 'string' || seen.has(r.event.id)) continue;
        seen.add(r.event.id);
        kept.push(r.event as SealedEvent);
        if (!acked.has(r.event.id)) recs.push(r);
      }
      if (!recs.length) {
        await this.removeGroup(name);
        continue;
      }
      for (const rec of recs) this.unsent.push({ ...rec, order: this.order++, file: name, payload: encode(rec.event), link: linkOf(rec.event as SealedEvent) });
      this.unacked.set(name, recs.length);
    }
    if (this.o.key) this.sealer = new EventSealer(this.o.key, await this.restoreChains(kept));
    if (this.pending) this.o.log.info('outbox: republishing events from a previous run', { pending: this.pending });
    this.kick();
  }

  // The chains continue from the newest of chain.state and the events the
  // segments hold (acknowledged ones too: chain.state may lag them).
  private async restoreChains(kept: SealedEvent[]): Promise<ChainState> {
    const file = join(this.o.dir!, CHAIN_FILE);
    const saved = checkChainState(await readFile(file, 'utf8').then(JSON.parse, () => null));
    const epoch = saved?.epoch ?? [...kept].reverse().find((e) => e.sealkitepoch)?.sealkitepoch;
    const state: ChainState = epoch ? { epoch, heads: { ...saved?.heads } } : newChainState();
    for (const ev of kept) {
      const newer = ev.sealkitepoch === state.epoch && typeof ev.sealkitchain === 'string' && (ev.sealkitseq ?? 0) > (state.heads[ev.sealkitchain]?.seq ?? 0);
      const l = newer ? linkOf(ev) : undefined;
      if (l) state.heads[l.chain] = { seq: l.seq, hash: l.hash };
    }
    Object.assign(this.safe, structuredClone(state.heads));
    this.savedSafe = Object.fromEntries(Object.entries(saved?.heads ?? {}).map(([c, h]) => [c, h.seq]));
    return state;
  }

  // Persist, queue, return at once; JetStream delivery happens in the pump.
  async publish<T>(type: string, data: T, opts: PublishOptions = {}): Promise<CloudEvent<T>> {
    let event = makeEvent(this.o.service, type, data, { node: this.o.node, id: opts.id, subject: opts.subject });
    const headers: Record<string, string> = { 'Sealkit-Node': this.o.node, 'Sealkit-Service': this.o.service };
    for (const [k, v] of Object.entries(opts.headers ?? {})) if (v !== undefined) headers[k] = v;
    if (this.pending >= (this.o.maxPending ?? 100_000)) {
      this.countLost('outbox-full', type);
      this.o.log.error('outbox full: event dropped; audit.lost will report it', { type });
      return event;
    }
    // sealed here, before any await: seqs follow the order of the calls,
    // which is the order of the lines and of the queue
    let link: Link | undefined;
    if (this.sealer) ({ event, link } = this.sealer.seal(event));
    await this.enqueue({ order: this.order++, subject: type, headers, event, payload: encode(event), link });
    return event;
  }

  private async enqueue(p: Pending): Promise<void> {
    if (this.o.dir) return this.persist(p);
    this.unsent.push(p);
    this.kick();
  }

  // Resolves once p is on disk, or held in memory because the disk refused
  // it. The events published in one turn of the event loop (a storm's batch)
  // are written together, in one write, when the turn's code is done.
  private persist(p: Pending): Promise<void> {
    this.batch.push(p);
    return (this.batchWritten ??= new Promise((written) =>
      queueMicrotask(() => {
        const members = this.batch;
        this.batch = [];
        this.batchWritten = undefined;
        if (this.append(members)) this.advanceSafe(members);
        else {
          // a full disk must not stop the service or drop the events: they go
          // out from memory, and the write is retried while they are not acked
          for (const m of members) m.unsaved = true;
          this.lastSaveTry = Date.now();
        }
        for (const m of members) this.unsent.push(m);
        this.kick();
        written();
      }),
    ));
  }

  private nextName(): string {
    return `${String(++this.seq).padStart(16, '0')}.json`;
  }

  // the event's encoding as it goes on the bus, not a second JSON.stringify
  private lines(members: Pending[]): Buffer {
    const parts: Buffer[] = [];
    for (const p of members) {
      parts.push(Buffer.from(`{"subject":${JSON.stringify(p.subject)},"headers":${JSON.stringify(p.headers)},"event":`), p.payload as Buffer, Buffer.from('}\n'));
    }
    return Buffer.concat(parts);
  }

  // Their lines at the end of the current segment, in one write. False,
  // logged, when the disk refuses it; the members then have a file name of
  // their own, after every segment so far, for saveUnsaved to write them under.
  private append(members: Pending[]): boolean {
    const dir = this.o.dir!;
    let seg = this.segment;
    try {
      seg ??= this.segment = { name: this.nextName(), fd: -1, bytes: 0 };
      if (seg.fd < 0) seg.fd = openSync(join(dir, seg.name), 'a');
      for (const p of members) p.file = seg.name;
      this.unacked.set(seg.name, (this.unacked.get(seg.name) ?? 0) + members.length);
      const line = this.lines(members);
      const written = writeSync(seg.fd, line);
      if (written !== line.length) throw Object.assign(new Error(`short write to ${join(dir, seg.name)}: ${written} of ${line.length} bytes`), { code: 'ENOSPC' });
      seg.bytes += written;
      if (seg.bytes >= SEGMENT_BYTES) this.seal(seg);
      return true;
    } catch (err) {
      if (seg) {
        // the segment's tail may be torn: cut back to its whole lines, and
        // write no more to it (an append after a torn line would corrupt it)
        if (seg.fd >= 0) {
          try {
            ftruncateSync(seg.fd, seg.bytes);
          } catch {
            // the restart skips a torn last line
          }
        }
        this.seal(seg);
        const left = (this.unacked.get(seg.name) ?? 0) - (members[0].file === seg.name ? members.length : 0);
        if (left > 0) this.unacked.set(seg.name, left);
        else {
          this.unacked.delete(seg.name);
          void this.removeGroup(seg.name);
        }
      }
      const own = this.nextName();
      for (const p of members) p.file = own;
      this.unacked.set(own, members.length);
      this.logRefused(members, err);
      return false;
    }
  }

  // No more events go to seg; it stays until they are all acknowledged.
  private seal(seg: { fd: number }): void {
    if (this.segment === seg) this.segment = undefined;
    if (seg.fd >= 0) closeQuietly(seg.fd);
    seg.fd = -1;
  }

  private logRefused(members: Pending[], err: unknown): void {
    const dir = this.o.dir!;
    const p = members[0];
    const e = isDiskFull(err) ? diskFull(dir, `writing ${p.subject} to the outbox`, err) : err;
    this.o.log.error('outbox: cannot write the event to disk; it is kept in memory until acknowledged, and a restart before that loses it', { type: p.subject, id: p.event.id, events: members.length, code: (e as { code?: string }).code, err: e as Error });
  }

  // Write a group the disk refused, whole, under its own name (temp file,
  // rename): false when the disk still refuses.
  private async save(file: string, members: Pending[]): Promise<boolean> {
    const dir = this.o.dir!;
    const tmp = join(dir, `.${file}.tmp`);
    try {
      await writeFile(tmp, this.lines(members));
      await rename(tmp, join(dir, file));
      this.o.log.info('outbox: events written to disk after all', { types: [...new Set(members.map((p) => p.subject))], ids: members.map((p) => p.event.id) });
      for (const p of members) p.unsaved = false;
      return true;
    } catch {
      await rm(tmp, { force: true }).catch(() => {});
      return false;
    }
  }

  private *waiting(): Iterable<Pending> {
    yield* this.failed;
    yield* this.inflight;
    for (let i = this.head; i < this.unsent.length; i++) yield this.unsent[i];
  }

  // While the bus does not acknowledge, the groups the disk refused are
  // tried again (at most once a second), so they survive a restart once
  // space is back; under their own names, so a restart replays them in order.
  private async saveUnsaved(): Promise<void> {
    if (!this.o.dir || Date.now() - this.lastSaveTry < 1000) return;
    this.lastSaveTry = Date.now();
    const groups = new Map<string, Pending[]>();
    for (const p of this.waiting()) if (p.unsaved) groupOf(groups, p.file!).push(p);
    for (const [file, members] of [...groups].sort(([a], [b]) => (a < b ? -1 : 1))) {
      members.sort((a, b) => a.order - b.order);
      if (!(await this.save(file, members))) return;
    }
  }

  // Events acknowledged (or dropped for good): a segment goes once every
  // event in it has and none is written to it any more. Until then the ids
  // acknowledged so far are appended to <segment>.acked, so that a restart
  // republishes only the others: the stream's duplicate window (10 min)
  // would not catch a republish after a longer stop.
  // The counts and the acknowledged ids are updated at once; the chain
  // heads and the removals, which wait for the disk, go on in the background,
  // one release after another, so that the next event is sent meanwhile.
  private release(done: Pending[]): void {
    if (!this.o.dir) return;
    const byFile = new Map<string, Pending[]>();
    for (const p of done) if (p.file) groupOf(byFile, p.file).push(p);
    this.advanceSafe(done);
    const gone: string[] = [];
    for (const [file, members] of byFile) {
      const left = (this.unacked.get(file) ?? members.length) - members.length;
      const unsaved = members.some((p) => p.unsaved);
      if (left > 0) {
        this.unacked.set(file, left);
        if (!unsaved) this.recordAcked(file, members);
        continue;
      }
      // every event written to it is acknowledged: it takes no more
      this.unacked.delete(file);
      if (this.segment?.name === file) this.seal(this.segment);
      if (!unsaved) gone.push(file);
    }
    // a segment is about to go, or events only in memory were sent: the chain
    // heads they leave must be on disk first. Otherwise the segments still
    // hold them, and a restart reads the heads from there.
    const save = gone.length > 0 || done.some((p) => p.unsaved || !p.file);
    if (!save) return;
    this.releasing += done.length;
    this.fileWork = this.fileWork
      .then(async () => {
        await this.saveChains();
        await Promise.all(gone.map((file) => this.removeGroup(file)));
      })
      .catch((err) => this.o.log.error('outbox: cannot remove acknowledged events from disk; a restart republishes them, and the stream drops them as duplicates', { files: gone, err: err as Error }))
      .finally(() => {
        this.releasing -= done.length;
        this.wake();
      });
  }

  // Appended to <file>.acked, kept open while the file has events unacked.
  private recordAcked(file: string, members: Pending[]): void {
    try {
      let fd = this.ackFds.get(file);
      const closed = this.closing.signal.aborted; // after close(), nothing is kept open
      if (fd === undefined) fd = openSync(join(this.o.dir!, `${file}.acked`), 'a');
      if (!closed) this.ackFds.set(file, fd);
      writeSync(fd, members.map((p) => `${p.event.id}\n`).join(''));
      if (closed) closeQuietly(fd);
    } catch {
      // not recorded: a restart sends these again, and the stream's
      // duplicate window drops them
    }
  }

  private advanceSafe(ps: Pending[]): void {
    for (const p of ps) {
      const l = p.link;
      if (l && l.seq > (this.safe[l.chain]?.seq ?? 0)) this.safe[l.chain] = { seq: l.seq, hash: l.hash };
    }
  }

  // Written only when a head moved: once per acknowledged batch in a burst.
  private async saveChains(): Promise<void> {
    if (!this.sealer || Object.entries(this.safe).every(([c, h]) => (this.savedSafe[c] ?? 0) >= h.seq)) return;
    const state: ChainState = { epoch: this.sealer.state.epoch, heads: structuredClone(this.safe) };
    const file = join(this.o.dir!, CHAIN_FILE);
    // The file being replaced is held open across the rename, so that its
    // inode is freed when this descriptor closes, not inside the rename. A
    // rename that drops the last reference frees the old blocks while it
    // holds the outbox directory locked, and on a disk mounted with discard
    // that waits for the device (20-90 ms measured under load): the next
    // event's segment open, on the event loop, waited as long.
    const replaced = await open(file, 'r').catch(() => undefined);
    try {
      // temp file and rename, unsynced: the segments' own guarantee (a
      // process crash, not a power cut), at no fsync per acknowledged batch
      await writeFile(`${file}.tmp`, JSON.stringify(state) + '\n');
      await rename(`${file}.tmp`, file);
      this.savedSafe = Object.fromEntries(Object.entries(state.heads).map(([c, h]) => [c, h.seq]));
    } catch (err) {
      this.o.log.error('outbox: cannot write the chain heads; a restart before the next write may reuse a seq', { err: err as Error });
    } finally {
      await replaced?.close().catch(() => {});
    }
  }

  private async ackedIn(file: string): Promise<Set<string>> {
    const text = await readFile(join(this.o.dir!, `${file}.acked`), 'utf8').catch(() => '');
    return new Set(text.split('\n').filter(Boolean));
  }

  private async removeGroup(file: string): Promise<void> {
    const fd = this.ackFds.get(file);
    if (fd !== undefined) closeQuietly(fd);
    this.ackFds.delete(file);
    await unlink(join(this.o.dir!, file)).catch(() => {});
    await unlink(join(this.o.dir!, `${file}.acked`)).catch(() => {});
  }

  // Fire-and-forget for high-rate state that is not kept (progress, heartbeats).
  emit<T>(type: string, data: T, opts: PublishOptions = {}): CloudEvent<T> {
    let event = makeEvent(this.o.service, type, data, { node: this.o.node, id: opts.id, subject: opts.subject });
    const headers = makeHeaders({ 'Sealkit-Node': this.o.node, 'Sealkit-Service': this.o.service, ...opts.headers });
    if (this.sealer) event = this.sealer.signal(event);
    this.o.nc.publish(type, encode(event), { headers });
    return event;
  }

  // Resolves when everything queued so far is acknowledged, or after timeoutMs.
  async flush(timeoutMs = 5000): Promise<boolean> {
    if (this.pending === 0 && this.lost.size === 0) return true;
    return new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(t);
        resolve(true);
      });
      this.kick();
    });
  }

  // The stream refused p as a duplicate of an id it held: either p itself,
  // sent before (its seq is stored), or an earlier event under the same id
  // (its seq would be a gap). A signed stand-in takes the seq in both cases.
  private standIn(p: Pending): Pending[] {
    const ev = p.event as SealedEvent;
    const subject = p.link && !ev.sealkitfor ? standInSubject(p.link.chain) : undefined;
    if (!this.sealer || !subject) return [];
    const stand = makeEvent(this.o.service, subject, { id: ev.id, type: ev.type }, { node: this.o.node, id: `${ev.id}.duplicate.${ev.sealkitepoch}.${ev.sealkitseq}` });
    const event = this.sealer.standIn(ev, stand);
    return [{ order: this.order++, subject, headers: { 'Sealkit-Node': this.o.node, 'Sealkit-Service': this.o.service }, event, payload: encode(event), link: p.link }];
  }

  private countLost(reason: string, sample: string): void {
    const l = this.lost.get(reason);
    if (l) l.dropped++;
    else this.lost.set(reason, { dropped: 1, since: new Date().toISOString(), sample });
  }

  close(): void {
    this.closing.abort();
    this.wake();
    if (this.segment) this.seal(this.segment);
    for (const fd of this.ackFds.values()) closeQuietly(fd);
    this.ackFds.clear();
  }

  private wake(): void {
    const w = this.settled;
    this.settled = undefined;
    w?.();
  }

  private kick(): void {
    if (this.pumping) {
      this.backoff.wake();
      this.wake();
      return;
    }
    this.pumping = true;
    void this.pump();
  }

  private send(p: Pending): void {
    this.inflight.add(p);
    this.js
      .publish(p.subject, p.payload, { msgID: p.event.id, headers: makeHeaders(p.headers), timeout: this.o.ackTimeoutMs ?? 3000 })
      .then(
        (ack) => {
          this.acked.push(p);
          if (ack.duplicate) this.standIns.push(...this.standIn(p));
        },
        (err: unknown) => {
          if (/Permissions Violation/i.test(String((err as Error)?.message))) {
            // retrying cannot help: this service may not publish there. Drop
            // it, say so on audit.lost, and keep the queue moving.
            this.o.log.error('bus refused an event subject for this service; dropped', { type: p.subject });
            this.countLost('permission-denied', p.subject);
            this.acked.push(p);
          } else {
            this.failed.push(p);
            this.failure ??= err;
          }
        },
      )
      .finally(() => {
        this.inflight.delete(p);
        this.wake();
      });
  }

  // pumping ends in the step the pump returns in (a finally in this very
  // function), not a microtask later: a kick right after starts a new pump
  // instead of waking one that is gone
  private async pump(): Promise<void> {
    try {
      this.backoff.reset();
      const window = this.o.window ?? 64;
      while (!this.closing.signal.aborted) {
        if (this.lost.size > 0 && this.pending < (this.o.maxPending ?? 100_000)) {
          const lost = [...this.lost];
          this.lost.clear();
          for (const [reason, l] of lost) {
            await this.publish(subjects.audit.lost, { service: this.o.service, reason, dropped: l.dropped, since: l.since, sample: l.sample });
          }
        }
        await this.saveUnsaved();
        // after a failure nothing new goes out until what is in flight settled
        while (this.failure === undefined && this.inflight.size < window && this.head < this.unsent.length) this.send(this.unsent[this.head++]);
        if (this.head > 4096 && this.head * 2 > this.unsent.length) {
          this.unsent = this.unsent.slice(this.head);
          this.head = 0;
        }
        if (!this.acked.length && !this.standIns.length) {
          if (this.inflight.size) {
            await new Promise<void>((r) => (this.settled = r));
            continue;
          }
          if (this.failure !== undefined) {
            // the refused go out again first, in their order, after a wait
            const msg = this.failure instanceof Error ? this.failure.message : String(this.failure);
            this.failure = undefined;
            this.unsent = [...this.failed.sort((a, b) => a.order - b.order), ...this.unsent.slice(this.head)];
            this.failed = [];
            this.head = 0;
            if (!this.warnedNoStream) {
              this.o.log.warn('outbox: publish not acknowledged, will retry', { pending: this.pending, err: msg });
              this.warnedNoStream = true;
            }
            await this.backoff.wait();
            continue;
          }
          if (this.head >= this.unsent.length && this.lost.size === 0) {
            if (this.releasing > 0) {
              // acknowledged, not yet off the disk: flushed once they are
              await new Promise<void>((r) => (this.settled = r));
              continue;
            }
            for (const w of this.idleWaiters.splice(0)) w();
            return;
          }
          continue;
        }
        const done = this.acked.splice(0);
        const standIns = this.standIns.splice(0);
        this.releasing += done.length;
        try {
          // on disk before the refused events leave the outbox: a crash between
          // the two sends the event again, refused again, and stands in again
          await Promise.all(standIns.map((p) => this.enqueue(p)));
          this.release(done);
        } finally {
          this.releasing -= done.length;
        }
        if (this.failure === undefined) {
          this.backoff.reset();
          this.warnedNoStream = false;
        }
      }
    } catch (err) {
      this.o.log.error('outbox: the publisher stopped on an error; the events wait for the next publish', { err: err as Error });
    } finally {
      this.pumping = false;
    }
  }
}

// a storm's batch puts thousands of events in one group: push, never copy
function groupOf(m: Map<string, Pending[]>, file: string): Pending[] {
  let g = m.get(file);
  if (!g) m.set(file, (g = []));
  return g;
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
