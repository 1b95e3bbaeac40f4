import { createHash, createPrivateKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import nacl from 'tweetnacl';
import type { CloudEvent } from './envelope.ts';
import { SealkitError } from './errors.ts';
import { createFileOnce } from './atomic.ts';
import { eventKeyPath, type EventKeyFile } from './fleet.ts';
import { b64, framed, publicKeyObject, unb64, verifyWith } from './sign.ts';

import { streams } from './subjects.ts';
import { matches } from './contract.ts';

// Every event a node publishes is signed by the node's ed25519 key and, when
// a stream keeps it, chained: per publisher (the event `source`,
// sealkit/<service>/<node>) and per stream, so that a verifier reading one
// stream sees a whole chain. CloudEvents extension attributes (names a-z0-9):
//
//   sealkitkey    the signer: hex of the first 8 bytes of SHA-256(public key),
//                 so a verifier tells "signed by another node's key" (forged)
//                 from "content changed after signing" (altered)
//   sealkitchain  the chain within its publisher: the stream family, audit | events
//   sealkitepoch  16 hex, drawn when a publisher has no chain state (first
//                 start, or its state was lost): a new epoch starting at seq 1
//                 is a legitimate new chain, not a gap
//   sealkitseq    1, 2, 3 … within (source, chain, epoch)
//   sealkitprev   hex SHA-256 of the previous event's signed bytes; 64 zeros at seq 1
//   sealkitfor    only on a stand-in (audit.duplicate, events.duplicate): the
//                 stream refused the event at this seq as a duplicate of an id
//                 it already held; the stand-in takes its seq and names its hash
//   sealkitsig    base64 ed25519 over "sealkit-event-v1\n" + the signed bytes
//
// The signed bytes are the JSON canonicalization (RFC 8785: keys sorted by
// UTF-16 code units, no whitespace, ECMAScript number form) of the whole
// event but sealkitsig, so a verifier holding only the parsed JSON computes
// them. Signals (node.heartbeat, image.progress) are signed but not chained:
// they are lossy by design (core NATS, kept by no stream), so a gap in them
// would mean nothing; their signed `time` is what dates them.

export const EVENT_DOMAIN = 'sealkit-event-v1';
export const GENESIS = '0'.repeat(64);
const EPOCH = /^[0-9a-f]{16}$/;

export interface Seal {
  sealkitkey: string;
  sealkitchain?: string;
  sealkitepoch?: string;
  sealkitseq?: number;
  sealkitprev?: string;
  sealkitfor?: string;
  sealkitsig: string;
}
export type SealedEvent<T = unknown> = CloudEvent<T> & Seal;

// RFC 8785 for what JSON.stringify produces: values it drops (undefined,
// functions) are dropped here too, toJSON is honoured, so the producer's
// object and the verifier's parsed copy give the same bytes. Loops rather
// than filter/map/join: every event of an audit storm passes here.
export function canonicalJson(v: unknown): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'number':
      return Number.isFinite(v) ? JSON.stringify(v) : 'null';
    case 'boolean':
      return v ? 'true' : 'false';
    case 'object': {
      const o = v as Record<string, unknown> & { toJSON?: () => unknown };
      if (typeof o.toJSON === 'function') return canonicalJson(o.toJSON());
      if (Array.isArray(v)) {
        let out = '[';
        for (let i = 0; i < v.length; i++) out += (i ? ',' : '') + (dropped(v[i]) ? 'null' : canonicalJson(v[i]));
        return out + ']';
      }
      const keys = Object.keys(o).sort();
      let out = '{';
      for (const k of keys) {
        const x = o[k];
        if (dropped(x)) continue;
        out += (out.length > 1 ? ',' : '') + JSON.stringify(k) + ':' + canonicalJson(x);
      }
      return out + '}';
    }
    default:
      return 'null';
  }
}

function dropped(x: unknown): boolean {
  return x === undefined || typeof x === 'function' || typeof x === 'symbol';
}

export function signedBytes(ev: object): Buffer {
  return Buffer.from(canonicalJson(withoutSig(ev)), 'utf8');
}

// What the signature covers ("sealkit-event-v1\n" + the signed bytes) in
// one buffer, the signed bytes a view of it: one encoding per event.
const FRAME_PREFIX = `${EVENT_DOMAIN}\n`;
export function framedEvent(ev: object): { framed: Buffer; bytes: Buffer } {
  const framed = Buffer.from(FRAME_PREFIX + canonicalJson(withoutSig(ev)), 'utf8');
  return { framed, bytes: framed.subarray(FRAME_PREFIX.length) };
}

function withoutSig(ev: object): object {
  const { sealkitsig: _sig, ...rest } = ev as Record<string, unknown>;
  return rest;
}

export function sha256hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function keyFingerprint(publicKey: string): string {
  return sha256hex(unb64(publicKey, 'event public key')).slice(0, 16);
}

// The chain of an event: the stream that keeps its subject (audit.* or the
// events stream's list), else its first subject token.
export function chainOf(subject: string): string {
  let chain = chains.get(subject);
  if (chain === undefined) {
    if (streams.audit.subjects.some((f) => matches(f, subject))) chain = 'audit';
    else if ((streams.events.subjects as readonly string[]).includes(subject)) chain = 'events';
    else chain = subject.split('.')[0];
    if (chains.size < 1024) chains.set(subject, chain);
  }
  return chain;
}
const chains = new Map<string, string>();

// node:crypto signs the same deterministic ed25519 signatures as tweetnacl
// from the same key file, about a hundred times faster (10 000/s against 75/s
// measured here), which an audit storm needs.
export class EventKey {
  readonly node: string;
  readonly publicKey: string;
  readonly fingerprint: string;
  private readonly secret: KeyObject;

  constructor(file: EventKeyFile) {
    const secret = unb64(file.secretKey, 'event secret key');
    this.node = file.node;
    this.publicKey = file.publicKey;
    this.fingerprint = keyFingerprint(file.publicKey);
    this.secret = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: b64url(secret.subarray(0, 32)), x: b64url(secret.subarray(32)) }, format: 'jwk' });
  }

  sign(bytes: Uint8Array): string {
    return this.signFramed(framed(EVENT_DOMAIN, bytes));
  }

  // bytes already behind the domain line (framedEvent)
  signFramed(framedBytes: Uint8Array): string {
    return b64(sign(null, framedBytes, this.secret));
  }
}

export function verifySignature(bytes: Uint8Array, signature: string, key: KeyObject): boolean {
  return verifyWith(EVENT_DOMAIN, bytes, signature, key);
}

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

// ---- the node's key ---------------------------------------------------------

export function generateEventKey(node: string): EventKeyFile {
  const pair = nacl.sign.keyPair();
  return { node, publicKey: b64(pair.publicKey), secretKey: b64(pair.secretKey) };
}

export async function readEventKey(path: string): Promise<EventKeyFile> {
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch (err) {
    throw new SealkitError('SEALKIT_KEY_INVALID', `cannot read the event key ${path}: ${(err as Error).message}; "make keys" or "sealkit fleet enroll" writes one`);
  }
  let k: Partial<EventKeyFile> | null;
  try {
    k = JSON.parse(raw) as Partial<EventKeyFile> | null;
  } catch {
    throw new SealkitError('SEALKIT_KEY_INVALID', `event key ${path} is not JSON; remove it to have a new one made, or enroll the node again`);
  }
  if (!k || typeof k.node !== 'string' || typeof k.publicKey !== 'string' || typeof k.secretKey !== 'string') {
    throw new SealkitError('SEALKIT_KEY_INVALID', `event key ${path} lacks node, publicKey or secretKey`);
  }
  const secret = unb64(k.secretKey, `secretKey in ${path}`);
  if (secret.length !== nacl.sign.secretKeyLength || b64(secret.subarray(32)) !== k.publicKey) {
    throw new SealkitError('SEALKIT_KEY_INVALID', `event key ${path}: secretKey is not the 64-byte ed25519 key of its publicKey`);
  }
  return { node: k.node, publicKey: k.publicKey, secretKey: k.secretKey };
}

// The node's key, made on first use when neither `make keys` nor an
// enrolment wrote one: services of one node starting together race here,
// and a hard link makes exactly one candidate the key that all of them use.
export async function ensureEventKey(state: string, node: string): Promise<{ key: EventKeyFile; path: string; created: boolean }> {
  const path = eventKeyPath(state);
  const created = await createFileOnce(path, JSON.stringify(generateEventKey(node), null, 2) + '\n', 0o600);
  return { key: await readEventKey(path), path, created };
}

// ---- sealing ------------------------------------------------------------------

export interface ChainHead {
  seq: number;
  hash: string; // of the event at seq: the next one's sealkitprev
}

// What a publisher must keep across restarts to continue its chains.
export interface ChainState {
  epoch: string;
  heads: Record<string, ChainHead>;
}

export function newChainState(): ChainState {
  return { epoch: randomBytes(8).toString('hex'), heads: {} };
}

export function checkChainState(v: unknown): ChainState | null {
  const s = v as Partial<ChainState> | null;
  if (!s || typeof s.epoch !== 'string' || !EPOCH.test(s.epoch) || !s.heads || typeof s.heads !== 'object') return null;
  for (const h of Object.values(s.heads)) if (!Number.isSafeInteger(h?.seq) || typeof h?.hash !== 'string') return null;
  return s as ChainState;
}

// Where an event sits in its chain, and the hash a successor names.
export interface Link {
  chain: string;
  seq: number;
  hash: string;
}

export class EventSealer {
  constructor(
    readonly key: EventKey,
    readonly state: ChainState,
  ) {}

  // The next link of the event's chain; the caller persists it in order.
  seal<T>(ev: CloudEvent<T>): { event: SealedEvent<T>; link: Link } {
    const chain = chainOf(ev.type);
    const head = this.state.heads[chain] ?? { seq: 0, hash: GENESIS };
    const sealed = { ...ev, sealkitkey: this.key.fingerprint, sealkitchain: chain, sealkitepoch: this.state.epoch, sealkitseq: head.seq + 1, sealkitprev: head.hash } as SealedEvent<T>;
    const { framed: whole, bytes } = framedEvent(sealed);
    sealed.sealkitsig = this.key.signFramed(whole);
    const link = { chain, seq: head.seq + 1, hash: sha256hex(bytes) };
    this.state.heads[chain] = { seq: link.seq, hash: link.hash };
    return { event: sealed, link };
  }

  // Signed, outside every chain.
  signal<T>(ev: CloudEvent<T>): SealedEvent<T> {
    const sealed = { ...ev, sealkitkey: this.key.fingerprint } as SealedEvent<T>;
    sealed.sealkitsig = this.key.signFramed(framedEvent(sealed).framed);
    return sealed;
  }

  // In place of `original`, which the stream refused as a duplicate of an id
  // it already held: same chain, seq and prev, so the chain stays whole.
  standIn(original: SealedEvent, stand: CloudEvent<DuplicateData>): SealedEvent<DuplicateData> {
    const sealed = {
      ...stand,
      sealkitkey: this.key.fingerprint,
      sealkitchain: original.sealkitchain,
      sealkitepoch: original.sealkitepoch,
      sealkitseq: original.sealkitseq,
      sealkitprev: original.sealkitprev,
      sealkitfor: sha256hex(signedBytes(original)),
    } as SealedEvent<DuplicateData>;
    sealed.sealkitsig = this.key.sign(signedBytes(sealed));
    return sealed;
  }
}

/** audit.duplicate / events.duplicate: the stream already held an event with this id. */
export interface DuplicateData {
  id: string;
  type: string;
}

export function standInSubject(chain: string): string | undefined {
  return chain === 'audit' ? 'audit.duplicate' : chain === 'events' ? 'events.duplicate' : undefined;
}

// The head a stored event leaves its chain at.
export function linkOf(ev: SealedEvent): Link | undefined {
  if (typeof ev.sealkitseq !== 'number' || typeof ev.sealkitchain !== 'string') return undefined;
  return { chain: ev.sealkitchain, seq: ev.sealkitseq, hash: ev.sealkitfor ?? sha256hex(signedBytes(ev)) };
}
