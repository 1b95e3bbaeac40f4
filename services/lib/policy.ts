import YAML from 'yaml';
import { SealkitError } from './errors.ts';
import { sha256Hex } from './digest.ts';
import { verifyDetached, type PublicKey } from './sign.ts';
import { checkPolicySchema, policySchemaError } from './policy-schema.ts';

// The node policy: strict validation against policy.schema.json (unknown
// fields are errors, like containers-policy.json) and the checks a schema
// cannot express, and verification of the signed record that the policy
// service stores and every other service re-checks before use.

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

// The document as written, once it matches policy.schema.json.
type Duration = number | string;
interface ImageDoc {
  name: string;
  tag: string;
  source: string;
  sha256: string;
  size?: number;
  allowHttp?: boolean;
  redirects?: { max?: number; hosts?: string[] };
  signatures?: { keys: string[]; threshold?: number; url?: string };
  import?: { containerd?: false | { namespace?: string }; docker?: boolean };
}
interface PolicyDoc {
  serial: number;
  keys?: PublicKey[];
  images?: ImageDoc[];
  verifiers?: Array<{ subject: string; required?: boolean; timeoutMs?: number }>;
  ima?: { mode?: ImaMode; reverify?: Duration; signatures?: boolean };
  limits?: { maxImageBytes?: number; fetchTimeout?: Duration; stallTimeout?: Duration; maxArchiveEntries?: number; maxUnpackedBytes?: number };
}

function fail(path: string, message: string): never {
  throw policySchemaError(path, message);
}

// Node.js timers hold at most 2^31-1 ms; a longer (or zero) delay fires after
// 1 ms, which would turn a reverify interval into a busy loop. The schema
// bounds whole seconds; a string's bound depends on its unit.
const MAX_TIMER_MS = 2 ** 31 - 1;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function durationMs(v: Duration, path: string): number {
  if (typeof v === 'number') return v * 1000;
  const ms = Number.parseInt(v, 10) * UNIT_MS[v.replace(/^\d+/, '')];
  if (!(ms >= 1 && ms <= MAX_TIMER_MS)) fail(path, `must be between 1ms and 596h, got ${JSON.stringify(v)}`);
  return ms;
}

// What a URL parser accepts, and what each scheme needs, is more than a
// pattern can say.
function checkSource(s: string, path: string, allowHttp: boolean): void {
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    fail(path, `"${s}" is not a URL; use https://, http:// (with allowHttp), file:///path or oci://host/repo@sha256:…`);
  }
  switch (url.protocol) {
    case 'https:':
    case 'file:':
      return;
    case 'http:':
      if (!allowHttp) fail(path, `"${s}" is plain http; set allowHttp: true for this image or use https://`);
      return;
    case 'oci:':
      if (!/^oci:\/\/[^/]+\/.+@sha256:[0-9a-f]{64}$/.test(s)) fail(path, `"${s}" must be oci://host[:port]/repository@sha256:<64 hex>`);
      return;
    default:
      fail(path, `scheme ${url.protocol} is not supported; use https, http, file or oci`);
  }
}

// the index of the first value that came before, or -1
function repeated(values: string[]): number {
  const seen = new Set<string>();
  return values.findIndex((v) => seen.has(v) || !seen.add(v));
}

function image(o: ImageDoc, path: string, keyIds: Set<string>): ImagePolicy {
  const allowHttp = o.allowHttp ?? false;
  checkSource(o.source, `${path}.source`, allowHttp);
  if (o.source.startsWith('oci://') && !o.source.endsWith(`@sha256:${o.sha256}`)) {
    fail(`${path}.sha256`, `must equal the digest in the oci:// source`);
  }
  const containerd = o.import?.containerd;
  const img: ImagePolicy = {
    name: o.name,
    tag: o.tag,
    source: o.source,
    sha256: o.sha256,
    allowHttp,
    redirects: { max: o.redirects?.max ?? 3, hosts: [...(o.redirects?.hosts ?? [])] },
    import: {
      containerd: containerd === false ? false : { namespace: containerd?.namespace ?? 'services.linuxkit' },
      docker: o.import?.docker ?? false,
    },
  };
  if (o.size !== undefined) img.size = o.size;
  if (o.signatures) {
    const { keys, threshold = 1, url } = o.signatures;
    keys.forEach((id, i) => {
      if (!keyIds.has(id)) fail(`${path}.signatures.keys[${i}]`, `key "${id}" is not defined under keys:`);
    });
    if (threshold > keys.length) fail(`${path}.signatures.threshold`, `must be between 1 and ${keys.length}, got ${threshold}`);
    img.signatures = { keys: [...keys], threshold };
    if (url !== undefined) img.signatures.url = url;
  }
  return img;
}

// The schema checks each field; what it cannot say (unique names, keys that
// must be defined, URLs, a threshold bounded by a list's length) follows.
export function validatePolicy(value: unknown): Policy {
  checkPolicySchema(value);
  const doc = value as PolicyDoc;

  const keys = (doc.keys ?? []).map((k) => ({ id: k.id, ed25519: k.ed25519 }));
  const dupKey = repeated(keys.map((k) => k.id));
  if (dupKey >= 0) fail(`keys[${dupKey}].id`, `duplicate key id "${keys[dupKey].id}"`);
  const keyIds = new Set(keys.map((k) => k.id));

  const images = (doc.images ?? []).map((v, i) => image(v, `images[${i}]`, keyIds));
  const dupImage = repeated(images.map((img) => img.name));
  if (dupImage >= 0) fail(`images[${dupImage}].name`, `duplicate image name "${images[dupImage].name}"; each image appears once`);

  const verifiers = (doc.verifiers ?? []).map((v) => ({ subject: v.subject, required: v.required ?? true, timeoutMs: v.timeoutMs ?? 2000 }));

  const ima: Policy['ima'] = {
    mode: doc.ima?.mode ?? 'enforce',
    reverifyMs: doc.ima?.reverify === undefined ? 10 * 60_000 : durationMs(doc.ima.reverify, 'ima.reverify'),
    signatures: doc.ima?.signatures ?? false,
  };

  const lo = doc.limits ?? {};
  const limits: Limits = {
    maxImageBytes: lo.maxImageBytes ?? defaultLimits.maxImageBytes,
    fetchTimeoutMs: lo.fetchTimeout === undefined ? defaultLimits.fetchTimeoutMs : durationMs(lo.fetchTimeout, 'limits.fetchTimeout'),
    stallTimeoutMs: lo.stallTimeout === undefined ? defaultLimits.stallTimeoutMs : durationMs(lo.stallTimeout, 'limits.stallTimeout'),
    maxArchiveEntries: lo.maxArchiveEntries ?? defaultLimits.maxArchiveEntries,
    maxUnpackedBytes: lo.maxUnpackedBytes ?? defaultLimits.maxUnpackedBytes,
  };

  return { apiVersion: 'sealkit/v1', kind: 'NodePolicy', serial: doc.serial, keys, images, verifiers, ima, limits };
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
