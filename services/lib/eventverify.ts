import type { KeyObject } from 'node:crypto';
import YAML from 'yaml';
import { SealkitError } from './errors.ts';
import { GENESIS, keyFingerprint, sha256hex, signedBytes, verifySignature, type SealedEvent } from './eventsig.ts';
import { publicKeyObject, unb64 } from './sign.ts';

// Checks events against the fleet's registry of node keys, fed in arrival
// order (a stream, a subscription, a file): each gets a verdict, and a seq
// that never came is a gap. The chain rules are those of lib/eventsig.ts.
//
//   const v = new ChainVerifier(keys);
//   for (const ev of events) { const r = v.check(ev); if (r.kind !== 'ok') … ; if (r.gap) … }
//   v.gaps()      the seqs still missing at the end
//   v.summary()   per publisher: its chains, counts of each verdict

export type Kind = 'ok' | 'forged' | 'altered' | 'reordered' | 'duplicate' | 'forked';
// forged     not signed by the key the registry holds for the node in `source`
//            (unsigned, unknown node, another node's key)
// altered    signed by the node's key, but the content is not what was signed
// reordered  arrived after a later event of its chain (it fills a gap)
// duplicate  its seq was seen already, with the same content
// forked     two different events claim one place in a chain (a seq or a
//            prev hash): only the node's key can make that happen

export interface Verdict {
  kind: Kind;
  reason?: string;
  publisher: string; // the event's source, as it claims
  id?: string;
  type?: string;
  chain?: string;
  epoch?: string;
  seq?: number;
  signal?: boolean; // signed, chained in nothing
  newChain?: boolean; // seq 1 of a new epoch of a chain already seen
  gap?: Gap; // missing seqs this event revealed
}

export interface Gap {
  publisher: string;
  chain: string;
  epoch: string;
  from: number;
  to: number;
}

export interface ChainSummary {
  chain: string;
  epoch: string;
  first: number;
  last: number;
  events: number;
  missing: number; // seqs still missing
}

export interface PublisherSummary {
  publisher: string;
  chains: ChainSummary[];
  counts: Record<Kind, number>;
}

// node → base64 ed25519 public key (FleetNodeEntry.eventKey)
export type NodeKeys = Map<string, string>;

interface Signer {
  node: string;
  key: KeyObject;
  fingerprint: string;
}

interface Entry {
  hash: string;
  prev: string;
  standIn: boolean;
}

interface Hole {
  from: number;
  to: number;
}

interface Track {
  publisher: string;
  chain: string;
  epoch: string;
  first: number;
  head: number;
  events: number;
  holes: Hole[];
  recent: Map<number, Entry>; // the last WINDOW seqs: what a late event or a duplicate is compared with
}

// Bounds the memory of a long watch; a duplicate older than this is still a
// duplicate (its seq is behind the head and in no gap), compared by seq only.
const WINDOW = 65_536;
const SOURCE = /^sealkit\/([^/]+)\/([^/]+)$/;
const HEX64 = /^[0-9a-f]{64}$/;
const EPOCH = /^[0-9a-f]{16}$/;
const KINDS: Kind[] = ['ok', 'forged', 'altered', 'reordered', 'duplicate', 'forked'];

export class ChainVerifier {
  private readonly byNode = new Map<string, Signer>();
  private readonly byFingerprint = new Map<string, string>();
  private readonly tracks = new Map<string, Track>();
  private readonly publishers = new Map<string, PublisherSummary>();

  // fromStart: the input holds every chain from seq 1, so a chain first seen
  // later is missing its start (not so for a stream whose limits dropped old events)
  constructor(keys: NodeKeys, private readonly opts: { fromStart?: boolean } = {}) {
    for (const [node, publicKey] of keys) {
      const s = { node, key: publicKeyObject(publicKey), fingerprint: keyFingerprint(publicKey) };
      this.byNode.set(node, s);
      this.byFingerprint.set(s.fingerprint, node);
    }
  }

  check(input: unknown): Verdict {
    const v = this.judge(input);
    const p = this.publisher(v.publisher);
    p.counts[v.kind]++;
    return v;
  }

  gaps(): Gap[] {
    return [...this.tracks.values()].flatMap((t) => t.holes.map((h) => ({ publisher: t.publisher, chain: t.chain, epoch: t.epoch, ...h })));
  }

  summary(): PublisherSummary[] {
    for (const p of this.publishers.values()) p.chains = [];
    for (const t of this.tracks.values()) {
      this.publisher(t.publisher).chains.push({ chain: t.chain, epoch: t.epoch, first: t.first, last: t.head, events: t.events, missing: t.holes.reduce((n, h) => n + h.to - h.from + 1, 0) });
    }
    return [...this.publishers.values()].sort((a, b) => a.publisher.localeCompare(b.publisher));
  }

  private judge(input: unknown): Verdict {
    const ev = input as Partial<SealedEvent> | null;
    if (!ev || typeof ev !== 'object' || Array.isArray(ev) || ev.specversion !== '1.0' || typeof ev.id !== 'string' || typeof ev.type !== 'string') {
      return { kind: 'forged', publisher: '(none)', reason: 'not a CloudEvents 1.0 event' };
    }
    const publisher = typeof ev.source === 'string' ? ev.source : '(none)';
    // where it claims to sit, for the report, before anything vouches for it
    const base: Verdict = { kind: 'ok', publisher, id: ev.id, type: ev.type };
    if (typeof ev.sealkitchain === 'string' && typeof ev.sealkitseq === 'number') Object.assign(base, { chain: ev.sealkitchain, epoch: ev.sealkitepoch, seq: ev.sealkitseq });
    const node = SOURCE.exec(publisher)?.[2];
    if (!node) return { ...base, kind: 'forged', reason: `source "${publisher}" is not sealkit/<service>/<node>` };
    const signer = this.byNode.get(node);
    if (!signer) return { ...base, kind: 'forged', reason: `node ${node} is not in the registry` };
    if (typeof ev.sealkitsig !== 'string') return { ...base, kind: 'forged', reason: 'unsigned' };
    if (ev.sealkitkey !== signer.fingerprint) {
      const other = this.byFingerprint.get(String(ev.sealkitkey));
      return { ...base, kind: 'forged', reason: other ? `signed with the key of node ${other}, not of ${node}` : `signed with key ${String(ev.sealkitkey)}, not the registered key of ${node}` };
    }
    const bytes = signedBytes(ev);
    if (!verifySignature(bytes, ev.sealkitsig, signer.key)) return { ...base, kind: 'altered', reason: `the signature of ${node} does not verify over the content` };
    if (ev.sealkitseq === undefined && ev.sealkitchain === undefined) return { ...base, signal: true };
    const { sealkitchain: chain, sealkitepoch: epoch, sealkitseq: seq, sealkitprev: prev, sealkitfor: standFor } = ev;
    if (typeof chain !== 'string' || typeof epoch !== 'string' || !EPOCH.test(epoch) || !Number.isSafeInteger(seq) || seq! < 1 || typeof prev !== 'string' || !HEX64.test(prev) || (standFor !== undefined && !HEX64.test(String(standFor)))) {
      return { ...base, kind: 'forged', reason: 'signed, but its chain attributes are malformed' };
    }
    return this.place({ ...base, chain, epoch, seq: seq! }, { hash: standFor ?? sha256hex(bytes), prev, standIn: standFor !== undefined });
  }

  // Where a genuine event falls in its chain.
  private place(v: Verdict & { chain: string; epoch: string; seq: number }, e: Entry): Verdict {
    const key = `${v.publisher}\n${v.chain}\n${v.epoch}`;
    let t = this.tracks.get(key);
    if (!t) {
      const seenBefore = [...this.tracks.values()].some((o) => o.publisher === v.publisher && o.chain === v.chain);
      t = { publisher: v.publisher, chain: v.chain, epoch: v.epoch, first: v.seq, head: v.seq - 1, events: 0, holes: [], recent: new Map() };
      this.tracks.set(key, t);
      if (seenBefore && v.seq === 1) v.newChain = true;
      if (this.opts.fromStart && v.seq > 1) {
        t.first = 1;
        t.head = 0;
      }
    }
    const s = v.seq;
    const seen = t.recent.get(s);
    if (s <= t.head && !inHole(t.holes, s)) {
      if (seen && seen.hash !== e.hash) return { ...v, kind: 'forked', reason: `another event with seq ${s} was seen, with different content` };
      if (seen?.standIn || e.standIn) {
        if (seen) seen.standIn &&= e.standIn;
        return v;
      }
      return { ...v, kind: 'duplicate', reason: `seq ${s} was seen already` };
    }
    const fork = this.links(t, s, e);
    if (s > t.head) {
      if (s > t.head + 1) {
        v.gap = { publisher: t.publisher, chain: t.chain, epoch: t.epoch, from: t.head + 1, to: s - 1 };
        t.holes.push({ from: t.head + 1, to: s - 1 });
      }
      t.head = s;
    } else {
      fill(t.holes, s);
      // a stand-in comes after the events that follow the refused one, by nature
      if (!e.standIn && !fork) Object.assign(v, { kind: 'reordered', reason: `arrived after seq ${t.head}` });
    }
    if (s < t.first) t.first = s;
    t.events++;
    t.recent.set(s, e);
    if (t.recent.size > WINDOW) t.recent.delete(t.recent.keys().next().value as number);
    return fork ? { ...v, kind: 'forked', reason: fork } : v;
  }

  // The hash links with both neighbours, where they are known.
  private links(t: Track, s: number, e: Entry): string | undefined {
    const before = s === 1 ? GENESIS : t.recent.get(s - 1)?.hash;
    if (before !== undefined && e.prev !== before) return `its prev hash is not that of seq ${s - 1}`;
    const after = t.recent.get(s + 1);
    if (after && after.prev !== e.hash) return `seq ${s + 1} names another event as its predecessor`;
    return undefined;
  }

  private publisher(name: string): PublisherSummary {
    let p = this.publishers.get(name);
    if (!p) this.publishers.set(name, (p = { publisher: name, chains: [], counts: Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number> }));
    return p;
  }
}

function inHole(holes: Hole[], s: number): boolean {
  return holes.some((h) => h.from <= s && s <= h.to);
}

function fill(holes: Hole[], s: number): void {
  const i = holes.findIndex((h) => h.from <= s && s <= h.to);
  const h = holes[i];
  const parts = [{ from: h.from, to: s - 1 }, { from: s + 1, to: h.to }].filter((p) => p.from <= p.to);
  holes.splice(i, 1, ...parts);
}

// A registry file: YAML or JSON mapping node → base64 public key, or a
// node's own event key file ({node, publicKey, …}) for its events alone.
export function parseNodeKeys(text: string, where: string): NodeKeys {
  let doc: unknown;
  try {
    doc = YAML.parse(text, { maxAliasCount: 0 });
  } catch (err) {
    throw new SealkitError('SEALKIT_CONFIG', `key registry ${where} is neither YAML nor JSON: ${(err as Error).message}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new SealkitError('SEALKIT_CONFIG', `key registry ${where} must map node names to base64 ed25519 public keys ("node-a: <key>"), or be a node's events.json`);
  }
  const d = doc as Record<string, unknown>;
  const pairs = typeof d.node === 'string' && typeof d.publicKey === 'string' ? [[d.node, d.publicKey] as const] : Object.entries(d);
  const keys: NodeKeys = new Map();
  for (const [node, key] of pairs) keys.set(node, checkEventKey(key, `${where}: ${node}`));
  if (keys.size === 0) throw new SealkitError('SEALKIT_CONFIG', `key registry ${where} names no node`);
  return keys;
}

export function checkEventKey(key: unknown, where: string): string {
  let ok = false;
  try {
    ok = typeof key === 'string' && unb64(key, where).length === 32;
  } catch {
    // not base64: said below
  }
  if (!ok) throw new SealkitError('SEALKIT_KEY_INVALID', `${where}: not a base64 ed25519 public key of 32 bytes`);
  return key as string;
}
