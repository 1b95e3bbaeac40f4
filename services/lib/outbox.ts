import { appendFile, mkdir, readdir, readFile, unlink, writeFile, rename, rm } from 'node:fs/promises';
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
// Events published while a write is under way go to disk together in the next
// one (a group commit: one file, one line per event), so a burst costs a few
// writes instead of one per event; each publish still returns only once its
// own event is on disk.
//
// With a key, each event is signed and takes the next seq of its chain
// (lib/eventsig.ts) before it is written, so a republished event keeps its
// seq. The chain heads survive in <dir>/chain.state, written before a group
// file goes: a restart continues from the newest of that and the group files
// left, so it neither reuses a seq nor leaves a gap for events never sent.

interface Pending {
  file?: string; // the group file it is written in, with the other events of its commit
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

export class EventPublisher {
  private readonly js: JetStreamClient;
  private readonly queue: Pending[] = [];
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
  // the next group commit, and whether one is being written now
  private nextGroup: Array<{ p: Pending; written: () => void }> = [];
  private writing = false;
  private readonly unacked = new Map<string, number>(); // group file → its events not yet acknowledged
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

  get pending(): number {
    return this.queue.length;
  }

  // Reload what a previous run left unpublished, oldest first.
  async init(): Promise<void> {
    if (!this.o.dir) return;
    await mkdir(this.o.dir, { recursive: true });
    const names = (await readdir(this.o.dir)).filter((n) => n.endsWith('.json')).sort();
    const kept: SealedEvent[] = [];
    for (const name of names) {
      try {
        // one event a line; a file from before group commits is one line
        const lines = (await readFile(join(this.o.dir, name), 'utf8')).split('\n').filter((l) => l.trim());
        const acked = await this.ackedIn(name);
        const all = lines.map((l) => JSON.parse(l) as Omit<Pending, 'payload' | 'file'>);
        for (const r of all) kept.push(r.event as SealedEvent);
        const recs = all.filter((r) => !acked.has(r.event.id));
        this.seq = Math.max(this.seq, Number.parseInt(name, 10) || 0);
        if (!recs.length) {
          await this.removeGroup(name);
          continue;
        }
        for (const rec of recs) this.queue.push({ ...rec, file: name, payload: encode(rec.event), link: linkOf(rec.event as SealedEvent) });
        this.unacked.set(name, recs.length);
      } catch {
        // a torn file from a crash mid-write is never renamed into place; skip it
      }
    }
    if (this.o.key) this.sealer = new EventSealer(this.o.key, await this.restoreChains(kept));
    if (this.queue.length) this.o.log.info('outbox: republishing events from a previous run', { pending: this.queue.length });
    this.kick();
  }

  // The chains continue from the newest of chain.state and the events the
  // group files hold (acknowledged ones too: chain.state may lag them).
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
    if (this.queue.length + this.nextGroup.length >= (this.o.maxPending ?? 100_000)) {
      this.countLost('outbox-full', type);
      this.o.log.error('outbox full: event dropped; audit.lost will report it', { type });
      return event;
    }
    // sealed here, before any await: seqs follow the order of the calls,
    // which is the order of the group commits and of the queue
    let link: Link | undefined;
    if (this.sealer) ({ event, link } = this.sealer.seal(event));
    await this.enqueue({ subject: type, headers, event, payload: encode(event), link });
    return event;
  }

  private async enqueue(p: Pending): Promise<void> {
    if (this.o.dir) await this.persist(p);
    this.queue.push(p);
    this.kick();
  }

  // Resolves once p is on disk, or held in memory because the disk refused it.
  private persist(p: Pending): Promise<void> {
    return new Promise((written) => {
      this.nextGroup.push({ p, written });
      if (this.writing) return;
      this.writing = true;
      void this.commitGroups();
    });
  }

  private async commitGroups(): Promise<void> {
    try {
      while (this.nextGroup.length) {
        const group = this.nextGroup.splice(0);
        const file = `${String(++this.seq).padStart(16, '0')}.json`;
        const members = group.map((g) => g.p);
        for (const p of members) p.file = file;
        this.unacked.set(file, members.length);
        if (!(await this.save(file, members))) {
          // a full disk must not stop the service or drop the events: they go
          // out from memory, and the write is retried while they are not acked
          for (const p of members) p.unsaved = true;
          this.lastSaveTry = Date.now();
        } else this.advanceSafe(members);
        for (const g of group) g.written();
      }
    } finally {
      this.writing = false;
    }
  }

  // Write one group file (temp file, rename): false, logged, when the disk refuses.
  private async save(file: string, members: Pending[]): Promise<boolean> {
    const dir = this.o.dir!;
    const tmp = join(dir, `.${file}.tmp`);
    const retry = members[0].unsaved;
    try {
      await writeFile(tmp, members.map((p) => JSON.stringify({ subject: p.subject, headers: p.headers, event: p.event })).join('\n') + '\n');
      await rename(tmp, join(dir, file));
      if (retry) this.o.log.info('outbox: events written to disk after all', { types: [...new Set(members.map((p) => p.subject))], ids: members.map((p) => p.event.id) });
      for (const p of members) p.unsaved = false;
      return true;
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {});
      if (!retry) {
        const p = members[0];
        const e = isDiskFull(err) ? diskFull(dir, `writing ${p.subject} to the outbox`, err) : err;
        this.o.log.error('outbox: cannot write the event to disk; it is kept in memory until acknowledged, and a restart before that loses it', { type: p.subject, id: p.event.id, events: members.length, code: (e as { code?: string }).code, err: e as Error });
      }
      return false;
    }
  }

  // While the bus does not acknowledge, the groups the disk refused are
  // tried again (at most once a second), so they survive a restart once
  // space is back; under their own names, so a restart replays them in order.
  private async saveUnsaved(): Promise<void> {
    if (!this.o.dir || Date.now() - this.lastSaveTry < 1000) return;
    this.lastSaveTry = Date.now();
    const groups = new Map<string, Pending[]>();
    for (const p of this.queue) if (p.unsaved) groupOf(groups, p.file!).push(p);
    for (const [file, members] of groups) if (!(await this.save(file, members))) return;
  }

  // Events acknowledged (or dropped for good): a group file goes once every
  // event in it has. Until then the ids acknowledged so far are appended to
  // <file>.acked, so that a restart republishes only the others: the stream's
  // duplicate window (10 min) would not catch a republish after a longer stop.
  private async release(done: Pending[]): Promise<void> {
    if (!this.o.dir) return;
    const byFile = new Map<string, Pending[]>();
    for (const p of done) if (p.file) groupOf(byFile, p.file).push(p);
    // a group file is about to go, or events only in memory were sent: the
    // chain heads they leave must be on disk first
    this.advanceSafe(done);
    await this.saveChains();
    await Promise.all([...byFile].map(async ([file, members]) => {
      const left = (this.unacked.get(file) ?? members.length) - members.length;
      if (left > 0) {
        this.unacked.set(file, left);
        if (!members[0].unsaved) await appendFile(join(this.o.dir!, `${file}.acked`), members.map((p) => `${p.event.id}\n`).join('')).catch(() => {});
        return;
      }
      this.unacked.delete(file);
      if (!members[0].unsaved) await this.removeGroup(file);
    }));
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
    try {
      // temp file and rename, unsynced: the group files' own guarantee (a
      // process crash, not a power cut), at no fsync per acknowledged batch
      const file = join(this.o.dir!, CHAIN_FILE);
      await writeFile(`${file}.tmp`, JSON.stringify(state) + '\n');
      await rename(`${file}.tmp`, file);
      this.savedSafe = Object.fromEntries(Object.entries(state.heads).map(([c, h]) => [c, h.seq]));
    } catch (err) {
      this.o.log.error('outbox: cannot write the chain heads; a restart before the next write may reuse a seq', { err: err as Error });
    }
  }

  private async ackedIn(file: string): Promise<Set<string>> {
    const text = await readFile(join(this.o.dir!, `${file}.acked`), 'utf8').catch(() => '');
    return new Set(text.split('\n').filter(Boolean));
  }

  private async removeGroup(file: string): Promise<void> {
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
    if (this.queue.length === 0 && this.lost.size === 0) return true;
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
    return [{ subject, headers: { 'Sealkit-Node': this.o.node, 'Sealkit-Service': this.o.service }, event, payload: encode(event), link: p.link }];
  }

  private countLost(reason: string, sample: string): void {
    const l = this.lost.get(reason);
    if (l) l.dropped++;
    else this.lost.set(reason, { dropped: 1, since: new Date().toISOString(), sample });
  }

  close(): void {
    this.closing.abort();
  }

  private kick(): void {
    if (this.pumping) {
      this.backoff.wake();
      return;
    }
    this.pumping = true;
    void this.pump().finally(() => {
      this.pumping = false;
    });
  }

  private async pump(): Promise<void> {
    this.backoff.reset();
    while (!this.closing.signal.aborted) {
      if (this.lost.size > 0 && this.queue.length < (this.o.maxPending ?? 100_000)) {
        const lost = [...this.lost];
        this.lost.clear();
        for (const [reason, l] of lost) {
          await this.publish(subjects.audit.lost, { service: this.o.service, reason, dropped: l.dropped, since: l.since, sample: l.sample });
        }
      }
      if (this.queue.length === 0) {
        for (const w of this.idleWaiters.splice(0)) w();
        return;
      }
      await this.saveUnsaved();
      const batch = this.queue.slice(0, this.o.window ?? 64);
      const results = await Promise.allSettled(
        batch.map((p) =>
          this.js.publish(p.subject, p.payload, {
            msgID: p.event.id,
            headers: makeHeaders(p.headers),
            timeout: this.o.ackTimeoutMs ?? 3000,
          }),
        ),
      );
      const done = new Set<Pending>();
      const standIns: Pending[] = [];
      let failure: unknown;
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') {
          done.add(batch[i]);
          if (r.value.duplicate) standIns.push(...this.standIn(batch[i]));
        } else if (/Permissions Violation/i.test(String((r.reason as Error)?.message))) {
          // retrying cannot help: this service may not publish there. Drop
          // it, say so on audit.lost, and keep the queue moving.
          this.o.log.error('bus refused an event subject for this service; dropped', { type: batch[i].subject });
          this.countLost('permission-denied', batch[i].subject);
          done.add(batch[i]);
        } else failure ??= r.reason;
      });
      // on disk before the refused events leave the outbox: a crash between
      // the two sends the event again, refused again, and stands in again
      await Promise.all(standIns.map((p) => this.enqueue(p)));
      if (done.size) {
        await this.release([...done]);
        for (let i = this.queue.length - 1; i >= 0; i--) if (done.has(this.queue[i])) this.queue.splice(i, 1);
      }
      if (failure === undefined) {
        this.backoff.reset();
        this.warnedNoStream = false;
        continue;
      }
      const msg = failure instanceof Error ? failure.message : String(failure);
      if (!this.warnedNoStream) {
        this.o.log.warn('outbox: publish not acknowledged, will retry', { pending: this.queue.length, err: msg });
        this.warnedNoStream = true;
      }
      await this.backoff.wait();
    }
  }
}

// a storm's batch puts thousands of events in one group: push, never copy
function groupOf(m: Map<string, Pending[]>, file: string): Pending[] {
  let g = m.get(file);
  if (!g) m.set(file, (g = []));
  return g;
}
