import YAML from 'yaml';
import { SealkitError } from './errors.ts';
import { sha256Hex, SHA256_HEX } from './digest.ts';
import { checkPublicKey, verifyDetached, KEY_ID, type PublicKey } from './sign.ts';

// The node policy: schema, strict validation (unknown fields are errors, like
// containers-policy.json), and verification of the signed record that the
// policy service stores and every other service re-checks before use.

export const MAX_POLICY_BYTES = 256 * 1024;
export const MAX_POLICY_ALIASES = 16;

export type ImaMode = 'enforce' | 'log' | 'off';

export interface ImagePolicy {
  name: string;
  tag: string;
  source: string;
  sha256: string; // archive digest (URL sources) or manifest digest (oci://)
  size?: number;
  allowHttp: boolean;
  redirects: { max: number; hosts: string[] };
  signatures?: { keys: string[]; threshold: number; url?: string };
  import: { containerd: { namespace: string } | false; docker: boolean };
}

export interface VerifierPolicy {
  subject: string;
  required: boolean;
  timeoutMs: number;
}

export interface Limits {
  maxImageBytes: number;
  fetchTimeoutMs: number;
  stallTimeoutMs: number;
  maxArchiveEntries: number;
  maxUnpackedBytes: number;
}

export interface Policy {
  apiVersion: 'sealkit/v1';
  kind: 'NodePolicy';
  serial: number;
  keys: PublicKey[];
  images: ImagePolicy[];
  verifiers: VerifierPolicy[];
  ima: { mode: ImaMode; reverifyMs: number; signatures: boolean };
  limits: Limits;
}

export const defaultLimits: Limits = {
  maxImageBytes: 4 * 1024 ** 3,
  fetchTimeoutMs: 30 * 60 * 1000,
  stallTimeoutMs: 30 * 1000,
  maxArchiveEntries: 200_000,
  maxUnpackedBytes: 16 * 1024 ** 3,
};

// What the policy service stores (disk + KV) and every consumer verifies.
export interface SignedPolicy {
  yaml: string; // the exact pushed bytes
  signature: string; // base64 detached ed25519 over the bytes
  keyId: string;
  serial: number;
  sha256: string;
  appliedAt: string;
}

type Obj = Record<string, unknown>;

function fail(path: string, message: string): never {
  throw new SealkitError('SEALKIT_POLICY_SCHEMA', `policy ${path}: ${message}`, { path });
}

function object(v: unknown, path: string, allowed: string[], required: string[] = []): Obj {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(path, 'must be a mapping');
  const o = v as Obj;
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) fail(path ? `${path}.${k}` : k, `unknown field; allowed here: ${allowed.join(', ')}`);
  }
  for (const k of required) if (!(k in o)) fail(path ? `${path}.${k}` : k, 'is required');
  return o;
}

function str(v: unknown, path: string, re?: RegExp, hint?: string): string {
  if (typeof v !== 'string') fail(path, `must be a string, got ${kind(v)}`);
  if (re && !re.test(v)) fail(path, `"${v}" is not valid${hint ? `: ${hint}` : ''}`);
  return v;
}

function int(v: unknown, path: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) fail(path, `must be an integer, got ${kind(v)}`);
  if (v < min || v > max) fail(path, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

function bool(v: unknown, path: string): boolean {
  if (typeof v !== 'boolean') fail(path, `must be true or false, got ${kind(v)}`);
  return v;
}

function array(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) fail(path, `must be a list, got ${kind(v)}`);
  return v;
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'a mapping' : `${typeof v} ${JSON.stringify(v)}`;
}

// Node.js timers hold at most 2^31-1 ms; a longer (or zero) delay fires after
// 1 ms, which would turn a reverify interval into a busy loop.
const MAX_TIMER_MS = 2 ** 31 - 1;

export function parseDuration(v: unknown, path: string): number {
  let ms: number;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) ms = v * 1000;
  else {
    const s = str(v, path, /^\d+(ms|s|m|h)$/, 'use a number with ms, s, m or h, like "10m"');
    const n = Number.parseInt(s, 10);
    const unit = s.replace(/^\d+/, '');
    ms = n * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as Record<string, number>)[unit];
  }
  if (!(ms >= 1 && ms <= MAX_TIMER_MS)) fail(path, `must be between 1ms and 596h, got ${JSON.stringify(v)}`);
  return ms;
}

const NAME = /^[a-z0-9]+([._/-][a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const HOST = /^[A-Za-z0-9.-]+(:\d+)?$/;
const VERIFY_SUBJECT = /^verify(\.[A-Za-z0-9_-]+)+$/;

function source(v: unknown, path: string, allowHttp: boolean): string {
  const s = str(v, path);
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    fail(path, `"${s}" is not a URL; use https://, http:// (with allowHttp), file:///path or oci://host/repo@sha256:…`);
  }
  switch (url.protocol) {
    case 'https:':
    case 'file:':
      return s;
    case 'http:':
      if (!allowHttp) fail(path, `"${s}" is plain http; set allowHttp: true for this image or use https://`);
      return s;
    case 'oci:':
      if (!/^oci:\/\/[^/]+\/.+@sha256:[0-9a-f]{64}$/.test(s)) fail(path, `"${s}" must be oci://host[:port]/repository@sha256:<64 hex>`);
      return s;
    default:
      fail(path, `scheme ${url.protocol} is not supported; use https, http, file or oci`);
  }
}

function image(v: unknown, path: string, keyIds: Set<string>): ImagePolicy {
  const o = object(v, path, ['name', 'tag', 'source', 'sha256', 'size', 'allowHttp', 'redirects', 'signatures', 'import'], ['name', 'tag', 'source', 'sha256']);
  const allowHttp = o.allowHttp === undefined ? false : bool(o.allowHttp, `${path}.allowHttp`);
  const img: ImagePolicy = {
    name: str(o.name, `${path}.name`, NAME, 'lowercase path components like "library/alpine"'),
    tag: str(o.tag, `${path}.tag`, TAG, 'up to 128 of A-Z a-z 0-9 _ . -'),
    source: source(o.source, `${path}.source`, allowHttp),
    sha256: str(o.sha256, `${path}.sha256`, SHA256_HEX, 'give the 64 lowercase hex characters of the SHA-256'),
    allowHttp,
    redirects: { max: 3, hosts: [] },
    import: { containerd: { namespace: 'services.linuxkit' }, docker: false },
  };
  if (img.source.startsWith('oci://') && !img.source.endsWith(`@sha256:${img.sha256}`)) {
    fail(`${path}.sha256`, `must equal the digest in the oci:// source`);
  }
  if (o.size !== undefined) img.size = int(o.size, `${path}.size`, 1);
  if (o.redirects !== undefined) {
    const r = object(o.redirects, `${path}.redirects`, ['max', 'hosts']);
    img.redirects = {
      max: r.max === undefined ? 3 : int(r.max, `${path}.redirects.max`, 0, 10),
      hosts: r.hosts === undefined ? [] : array(r.hosts, `${path}.redirects.hosts`).map((h, i) => str(h, `${path}.redirects.hosts[${i}]`, HOST, 'a host name, optionally with :port')),
    };
  }
  if (o.signatures !== undefined) {
    const s = object(o.signatures, `${path}.signatures`, ['keys', 'threshold', 'url'], ['keys']);
    const keys = array(s.keys, `${path}.signatures.keys`).map((k, i) => {
      const id = str(k, `${path}.signatures.keys[${i}]`, KEY_ID);
      if (!keyIds.has(id)) fail(`${path}.signatures.keys[${i}]`, `key "${id}" is not defined under keys:`);
      return id;
    });
    if (keys.length === 0) fail(`${path}.signatures.keys`, 'must name at least one key');
    const threshold = s.threshold === undefined ? 1 : int(s.threshold, `${path}.signatures.threshold`, 1, keys.length);
    img.signatures = { keys, threshold };
    if (s.url !== undefined) img.signatures.url = str(s.url, `${path}.signatures.url`, /^(https?|file):\/\//, 'an https://, http:// or file:// URL');
  }
  if (o.import !== undefined) {
    const im = object(o.import, `${path}.import`, ['containerd', 'docker']);
    if (im.containerd !== undefined) {
      if (im.containerd === false) img.import.containerd = false;
      else {
        const c = object(im.containerd, `${path}.import.containerd`, ['namespace']);
        img.import.containerd = { namespace: c.namespace === undefined ? 'services.linuxkit' : str(c.namespace, `${path}.import.containerd.namespace`, /^[A-Za-z0-9][A-Za-z0-9._-]*$/) };
      }
    }
    if (im.docker !== undefined) img.import.docker = bool(im.docker, `${path}.import.docker`);
  }
  return img;
}

export function validatePolicy(doc: unknown): Policy {
  const o = object(doc, '', ['apiVersion', 'kind', 'serial', 'keys', 'images', 'verifiers', 'ima', 'limits'], ['apiVersion', 'kind', 'serial']);
  if (o.apiVersion !== 'sealkit/v1') fail('apiVersion', `must be "sealkit/v1", got ${kind(o.apiVersion)}`);
  if (o.kind !== 'NodePolicy') fail('kind', `must be "NodePolicy", got ${kind(o.kind)}`);
  const serial = int(o.serial, 'serial', 1);

  const keys = o.keys === undefined ? [] : array(o.keys, 'keys').map((k, i) => {
    object(k, `keys[${i}]`, ['id', 'ed25519'], ['id', 'ed25519']);
    try {
      return checkPublicKey(k, `keys[${i}]`);
    } catch (err) {
      fail(`keys[${i}]`, (err as Error).message);
    }
  });
  const keyIds = new Set<string>();
  keys.forEach((k, i) => {
    if (keyIds.has(k.id)) fail(`keys[${i}].id`, `duplicate key id "${k.id}"`);
    keyIds.add(k.id);
  });

  const images = o.images === undefined ? [] : array(o.images, 'images').map((v, i) => image(v, `images[${i}]`, keyIds));
  const seen = new Set<string>();
  images.forEach((img, i) => {
    if (seen.has(img.name)) fail(`images[${i}].name`, `duplicate image name "${img.name}"; each image appears once`);
    seen.add(img.name);
  });

  const verifiers = o.verifiers === undefined ? [] : array(o.verifiers, 'verifiers').map((v, i) => {
    const p = `verifiers[${i}]`;
    const vo = object(v, p, ['subject', 'required', 'timeoutMs'], ['subject']);
    return {
      subject: str(vo.subject, `${p}.subject`, VERIFY_SUBJECT, 'a subject under verify., like verify.image.cosign'),
      required: vo.required === undefined ? true : bool(vo.required, `${p}.required`),
      timeoutMs: vo.timeoutMs === undefined ? 2000 : int(vo.timeoutMs, `${p}.timeoutMs`, 1, 60_000),
    };
  });

  let ima: Policy['ima'] = { mode: 'enforce', reverifyMs: 10 * 60_000, signatures: false };
  if (o.ima !== undefined) {
    const io = object(o.ima, 'ima', ['mode', 'reverify', 'signatures']);
    const mode = io.mode === undefined ? 'enforce' : str(io.mode, 'ima.mode', /^(enforce|log|off)$/, 'one of enforce, log, off');
    ima = {
      mode: mode as ImaMode,
      reverifyMs: io.reverify === undefined ? ima.reverifyMs : parseDuration(io.reverify, 'ima.reverify'),
      signatures: io.signatures === undefined ? false : bool(io.signatures, 'ima.signatures'),
    };
  }

  const limits: Limits = { ...defaultLimits };
  if (o.limits !== undefined) {
    const lo = object(o.limits, 'limits', ['maxImageBytes', 'fetchTimeout', 'stallTimeout', 'maxArchiveEntries', 'maxUnpackedBytes']);
    if (lo.maxImageBytes !== undefined) limits.maxImageBytes = int(lo.maxImageBytes, 'limits.maxImageBytes', 1);
    if (lo.fetchTimeout !== undefined) limits.fetchTimeoutMs = parseDuration(lo.fetchTimeout, 'limits.fetchTimeout');
    if (lo.stallTimeout !== undefined) limits.stallTimeoutMs = parseDuration(lo.stallTimeout, 'limits.stallTimeout');
    if (lo.maxArchiveEntries !== undefined) limits.maxArchiveEntries = int(lo.maxArchiveEntries, 'limits.maxArchiveEntries', 1);
    if (lo.maxUnpackedBytes !== undefined) limits.maxUnpackedBytes = int(lo.maxUnpackedBytes, 'limits.maxUnpackedBytes', 1);
  }

  return { apiVersion: 'sealkit/v1', kind: 'NodePolicy', serial, keys, images, verifiers, ima, limits };
}

// The YAML parser and composer recurse per level: 130k nested "[" in 256 KiB
// took 80 s to refuse. Counted over the raw text, quotes and comments
// included, so nothing can hide a level; no field of a policy holds brackets
// beyond a URL's, and a policy needs about six levels.
export const MAX_POLICY_DEPTH = 64;

function nestingDepth(text: string): number {
  let max = 0;
  let flow = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5b || c === 0x7b) max = Math.max(max, ++flow);
    else if ((c === 0x5d || c === 0x7d) && flow > 0) flow--;
  }
  // compact block collections on one line: "- - - - x", "? - ? x"
  for (const m of text.matchAll(/^[ \t]*(?:[-?:][ \t]+)+/gm)) max = Math.max(max, (m[0].match(/[-?:][ \t]/g) ?? []).length);
  return max;
}

// Parse with bounds: size, nesting, one document, few aliases, no duplicate keys.
export function parsePolicyYaml(bytes: Uint8Array | string): Policy {
  const text = typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8');
  const size = Buffer.byteLength(text);
  if (size > MAX_POLICY_BYTES) {
    throw new SealkitError('SEALKIT_POLICY_TOO_LARGE', `policy is ${size} bytes; the limit is ${MAX_POLICY_BYTES}`, { size });
  }
  const depth = nestingDepth(text);
  if (depth > MAX_POLICY_DEPTH) {
    throw new SealkitError('SEALKIT_POLICY_YAML', `policy nests ${depth} levels deep; the limit is ${MAX_POLICY_DEPTH}`, { depth });
  }
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [docs];
  if (list.length !== 1) {
    throw new SealkitError('SEALKIT_POLICY_YAML', `policy must be exactly one YAML document, found ${list.length}`);
  }
  const doc = list[0];
  if (doc.errors.length) {
    throw new SealkitError('SEALKIT_POLICY_YAML', `policy is not valid YAML: ${doc.errors[0].message}`);
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_POLICY_ALIASES });
  } catch (err) {
    throw new SealkitError('SEALKIT_POLICY_YAML', `policy YAML rejected: ${(err as Error).message}`);
  }
  return validatePolicy(value);
}

// Verify a stored or pushed record against the bootstrap trust and return
// the policy it carries.
export function verifySignedPolicy(rec: SignedPolicy, trust: PublicKey[], where: string): Policy {
  const key = trust.find((k) => k.id === rec.keyId);
  if (!key) {
    throw new SealkitError('SEALKIT_KEY_UNTRUSTED', `${where} is signed by "${rec.keyId}", which is not in the node's bootstrap trust [${trust.map((k) => k.id).join(', ')}]`, { keyId: rec.keyId });
  }
  const bytes = Buffer.from(rec.yaml, 'utf8');
  if (!verifyDetached('sealkit-policy-v1', bytes, rec.signature, key)) {
    throw new SealkitError('SEALKIT_SIGNATURE_INVALID', `${where}: the signature by "${rec.keyId}" does not match the policy bytes; sign exactly the file you push`, { keyId: rec.keyId });
  }
  const policy = parsePolicyYaml(bytes);
  if (rec.serial !== policy.serial || rec.sha256 !== sha256Hex(bytes)) {
    throw new SealkitError('SEALKIT_POLICY_CORRUPT', `${where}: the record's serial or digest does not match its signed YAML`);
  }
  return policy;
}

export interface PolicyChange {
  serial: { from: number | null; to: number };
  images: { added: string[]; removed: string[]; changed: string[] };
  keys: { added: string[]; removed: string[] };
  verifiers: { added: string[]; removed: string[]; changed: string[] };
  ima: { from: ImaMode | null; to: ImaMode };
}

function diffBy<T>(before: T[], after: T[], id: (t: T) => string) {
  const b = new Map(before.map((x) => [id(x), JSON.stringify(x)]));
  const a = new Map(after.map((x) => [id(x), JSON.stringify(x)]));
  return {
    added: [...a.keys()].filter((k) => !b.has(k)),
    removed: [...b.keys()].filter((k) => !a.has(k)),
    changed: [...a.keys()].filter((k) => b.has(k) && b.get(k) !== a.get(k)),
  };
}

export function diffPolicy(before: Policy | null, after: Policy): PolicyChange {
  const keys = diffBy(before?.keys ?? [], after.keys, (k) => k.id);
  return {
    serial: { from: before?.serial ?? null, to: after.serial },
    images: diffBy(before?.images ?? [], after.images, (i) => i.name),
    keys: { added: keys.added, removed: [...keys.removed, ...keys.changed] },
    verifiers: diffBy(before?.verifiers ?? [], after.verifiers, (v) => v.subject),
    ima: { from: before?.ima.mode ?? null, to: after.ima.mode },
  };
}
