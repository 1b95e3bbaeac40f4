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

export type RestartPolicy = 'always' | 'on-failure' | 'never';

export type ContainerMount = { type: 'tmpfs'; destination: string; sizeBytes: number } | { type: 'bind'; destination: string; source: string };

// A workload the runner keeps running from the labelled rootfs of `image`.
// command/args follow Kubernetes: command replaces the image's entrypoint
// (and drops its cmd), args replaces its cmd.
export interface ContainerPolicy {
  name: string;
  image: string; // an ImagePolicy name
  command?: string[];
  args?: string[];
  env: string[];
  workingDir?: string;
  user?: { uid: number; gid: number };
  restart: RestartPolicy;
  backoff: { initialMs: number; maxMs: number };
  resources: { memoryBytes?: number; cpus?: number; pids?: number };
  network: 'none' | 'host';
  mounts: ContainerMount[];
  capabilities: string[];
  onTamper: 'stop' | 'report';
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
  containers: ContainerPolicy[];
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
type Bytes = number | string;
interface ContainerDoc {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: string[];
  workingDir?: string;
  user?: number | string;
  restart?: RestartPolicy;
  backoff?: { initial?: Duration; max?: Duration };
  resources?: { memory?: Bytes; cpus?: number; pids?: number };
  network?: 'none' | 'host';
  mounts?: Array<{ type: 'tmpfs' | 'bind'; destination: string; source?: string; size?: Bytes }>;
  capabilities?: string[];
  onTamper?: 'stop' | 'report';
}
interface PolicyDoc {
  serial: number;
  keys?: PublicKey[];
  images?: ImageDoc[];
  containers?: ContainerDoc[];
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

const BYTE_UNIT: Record<string, number> = { '': 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 };
const MIN_BYTES = 4 * 1024 ** 2;

function bytes(v: Bytes, path: string, min = MIN_BYTES): number {
  if (typeof v === 'number') return v;
  const n = Number.parseInt(v, 10) * BYTE_UNIT[v.replace(/^\d+/, '')];
  if (!(n >= min && Number.isSafeInteger(n))) fail(path, `must be at least ${min} bytes, got ${JSON.stringify(v)}`);
  return n;
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

const CAP_NAMES = new Set([
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW',
  'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD',
  'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG',
  'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
]);

function container(o: ContainerDoc, path: string, images: Set<string>): ContainerPolicy {
  if (!images.has(o.image)) fail(`${path}.image`, `image "${o.image}" is not defined under images:; name one of [${[...images].join(', ')}]`);
  o.capabilities?.forEach((cap, i) => {
    if (!CAP_NAMES.has(cap)) fail(`${path}.capabilities[${i}]`, `"${cap}" is not a Linux capability`);
  });
  const mounts = (o.mounts ?? []).map((m, i): ContainerMount => {
    const at = `${path}.mounts[${i}]`;
    if (m.type === 'bind') {
      if (m.source === undefined) fail(`${at}.source`, 'a bind mount needs the host path to mount read-only');
      if (m.size !== undefined) fail(`${at}.size`, 'only a tmpfs has a size');
      return { type: 'bind', destination: m.destination, source: m.source };
    }
    if (m.source !== undefined) fail(`${at}.source`, 'a tmpfs has no source');
    return { type: 'tmpfs', destination: m.destination, sizeBytes: m.size === undefined ? 64 * 1024 ** 2 : bytes(m.size, `${at}.size`, 4096) };
  });
  const dupMount = repeated(mounts.map((m) => m.destination));
  if (dupMount >= 0) fail(`${path}.mounts[${dupMount}].destination`, `"${mounts[dupMount].destination}" is mounted twice`);
  const backoff = {
    initialMs: o.backoff?.initial === undefined ? 1000 : durationMs(o.backoff.initial, `${path}.backoff.initial`),
    maxMs: o.backoff?.max === undefined ? 5 * 60_000 : durationMs(o.backoff.max, `${path}.backoff.max`),
  };
  if (backoff.initialMs > backoff.maxMs) fail(`${path}.backoff.initial`, 'must not be longer than backoff.max');
  const c: ContainerPolicy = {
    name: o.name,
    image: o.image,
    env: [...(o.env ?? [])],
    restart: o.restart ?? 'always',
    backoff,
    resources: {},
    network: o.network ?? 'none',
    mounts,
    capabilities: [...(o.capabilities ?? [])],
    onTamper: o.onTamper ?? 'stop',
  };
  if (o.command) c.command = [...o.command];
  if (o.args) c.args = [...o.args];
  if (o.workingDir !== undefined) c.workingDir = o.workingDir;
  if (o.user !== undefined) {
    const [uid, gid = uid] = String(o.user).split(':').map(Number);
    if (!(uid <= 4294967294 && gid <= 4294967294)) fail(`${path}.user`, `uid and gid must be at most 4294967294, got ${JSON.stringify(o.user)}`);
    c.user = { uid, gid };
  }
  const r = o.resources;
  if (r?.memory !== undefined) c.resources.memoryBytes = bytes(r.memory, `${path}.resources.memory`);
  if (r?.cpus !== undefined) c.resources.cpus = r.cpus;
  if (r?.pids !== undefined) c.resources.pids = r.pids;
  return c;
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

  const imageNames = new Set(images.map((i) => i.name));
  const containers = (doc.containers ?? []).map((v, i) => container(v, `containers[${i}]`, imageNames));
  const dupContainer = repeated(containers.map((c) => c.name));
  if (dupContainer >= 0) fail(`containers[${dupContainer}].name`, `duplicate container name "${containers[dupContainer].name}"; each container appears once`);

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

  return { apiVersion: 'sealkit/v1', kind: 'NodePolicy', serial: doc.serial, keys, images, containers, verifiers, ima, limits };
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
  containers: { added: string[]; removed: string[]; changed: string[] };
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
    containers: diffBy(before?.containers ?? [], after.containers, (c) => c.name),
    keys: { added: keys.added, removed: [...keys.removed, ...keys.changed] },
    verifiers: diffBy(before?.verifiers ?? [], after.verifiers, (v) => v.subject),
    ima: { from: before?.ima.mode ?? null, to: after.ima.mode },
  };
}
