import type { ArchiveFormat, Compression } from './archive/index.ts';
import type { CloudEvent } from './envelope.ts';
import { SealkitError, type ErrorCode } from './errors.ts';
import type { ImaMode, PolicyChange } from './policy.ts';
import { GROUP_NAME } from './fleet.ts';
import { boolean, count, fail, list, matching, nullable, number, object, oneOf, opaque, optional, string, union, ShapeError, type Check } from './shape.ts';
// what the ima service and the auditor find is theirs to shape; on the bus it is only carried
import type { EnforcementReport, Finding } from '../ima/enforcement/enforcement.ts';
import type { MatchKind } from '../auditor/manifests.ts';

// The bus contract: every subject sealkit uses, once, with who publishes on
// it, who listens, which stream keeps it, whether it is a request, and the
// shape of its payload. The nats-server permissions (natsconf.ts), the stream
// subjects and every service's view of another's payload are derived from
// here; a payload read off the bus goes through `checkData` first.
//
// Adding a service <name>:
//   1. add <name> to serviceNames below; it does not compile until
//   2. it owns at least one subject here (`from` of an event, `to` of a request),
//   3. natsconf.ts `jetstream` has its entry (the JetStream and KV API it uses),
//   4. and then services/<name>/main.ts calls runService('<name>', …),
//      pkg/<name>/ builds its image, and linuxkit.yml runs it with
//      /etc/sealkit/bus/creds/<name>.json: test/bus-contract.test.ts fails until
//      those exist.
//
// Audit subjects have exactly two tokens so that `nats sub 'audit.*'` sees
// all of them; node, container and image travel in the payload and in
// headers, never as extra tokens.

export const serviceNames = ['policy', 'fetcher', 'importer', 'ima', 'runner', 'auditor', 'nodeinfo'] as const;
export type ServiceName = (typeof serviceNames)[number];

export const streamNames = { audit: 'SEALKIT_AUDIT', events: 'SEALKIT_EVENTS' } as const;
export type Stream = keyof typeof streamNames;

export const policyBucket = 'sealkit-policy';
export const policyKey = 'current';

// ---- payloads ---------------------------------------------------------------

const SHA256 = matching(/^[0-9a-f]{64}$/, '64 lowercase hex characters');
const DIGEST = matching(/^sha256:[0-9a-f]{64}$/, 'sha256:<64 hex>');
// a newer node may send a code this one lacks: readers map unknown codes themselves
const errorCode = string as Check<ErrorCode>;
const imageRef = object({ name: string, tag: string, digest: string });

/** image.verified: what the fetcher verified, handed to the importer. */
export interface VerifiedImage {
  name: string;
  tag: string;
  source: string;
  sha256: string; // pinned digest: the archive (URL sources) or the registry manifest (oci://)
  size: number; // bytes of what sha256 covers
  policySerial: number;
  manifestDigest: string | null; // sha256:… of the OCI manifest inside the archive; null for a plain docker-archive
  format: ArchiveFormat;
  compression: Compression;
  archive: { path: string; sha256: string; size: number }; // the file in the cache to import
  signedBy: string[];
  verifiers: Array<{ subject: string; decision: 'allow' | 'deny' | 'absent' | 'timeout' }>;
}
const verifiedImage: Check<VerifiedImage> = object(
  {
    name: string,
    tag: string,
    source: string,
    sha256: SHA256,
    size: count,
    policySerial: count,
    manifestDigest: nullable(DIGEST),
    format: oneOf('docker-archive', 'oci-archive'),
    compression: oneOf('none', 'gzip', 'xz', 'zstd'),
    archive: object({ path: string, sha256: SHA256, size: count }),
    signedBy: list(string),
    verifiers: list(object({ subject: string, decision: oneOf('allow', 'deny', 'absent', 'timeout') })),
  },
  // a docker-archive carries no manifest blob, so the fetcher sends null
  (v, at) => {
    if (v.format === 'oci-archive' && v.manifestDigest === null) fail(`${at}.manifestDigest`, 'must be sha256:<64 hex> for an oci-archive, is null');
  },
);

/** image.rejected and audit.rejected. */
export interface RejectedImage {
  name: string;
  tag: string;
  source: string;
  expectedSha256: string;
  actualSha256?: string;
  code: string;
  reason: string;
  policySerial: number;
}

export type Runtime = 'containerd' | 'docker';
export type Target = { runtime: 'containerd'; namespace: string; ref: string; digest: string } | { runtime: 'docker'; ref: string; id: string };
const target: Check<Target> = union(
  object({ runtime: oneOf('containerd'), namespace: string, ref: string, digest: string }),
  object({ runtime: oneOf('docker'), ref: string, id: string }),
  'runtime',
  ['containerd', 'docker'],
);

/** image.imported: the runtimes holding a verified image, handed to ima. */
export interface ImportedImage {
  name: string;
  tag: string;
  sha256: string;
  source: string;
  manifestDigest: string | null;
  policySerial: number;
  archive: { path: string; sha256: string; format: ArchiveFormat; compression: Compression };
  targets: Target[];
  skipped?: boolean; // every runtime already held it
}
const importedImage: Check<ImportedImage> = object({
  name: string,
  tag: string,
  sha256: SHA256,
  source: string,
  manifestDigest: nullable(DIGEST),
  policySerial: count,
  archive: object({ path: string, sha256: SHA256, format: oneOf('docker-archive', 'oci-archive'), compression: oneOf('none', 'gzip', 'xz', 'zstd') }),
  targets: list(target),
  skipped: optional(boolean),
});

/** image.import_failed: one per runtime, or runtime none for the whole image. */
export interface ImportFailure {
  name: string;
  tag: string;
  sha256: string;
  code: ErrorCode;
  reason: string;
  runtime: Runtime | 'none';
}
const importFailure: Check<ImportFailure> = object({ name: string, tag: string, sha256: string, code: errorCode, reason: string, runtime: oneOf('containerd', 'docker', 'none') });

/** image.collected: state a service held for an image the policy in force no longer names, removed. */
export type CollectedKind = 'cache' | 'containerd' | 'docker' | 'rootfs';
export interface Collected {
  image: { name: string; tag: string; digest: string }; // digest: the pinned sha256 (hex) it was held for
  kind: CollectedKind;
  where: string[]; // cache files, <namespace>/<ref>, docker tags, the rootfs and its manifest
  bytes: number | null; // freed, where the service can tell
  policySerial: number; // the policy in force, which no longer names it
}
const collected: Check<Collected> = object({ image: imageRef, kind: oneOf('cache', 'containerd', 'docker', 'rootfs'), where: list(string), bytes: nullable(count), policySerial: count });

/** image.progress: bytes of one download so far. */
export interface Progress {
  name: string;
  bytes: number;
  total: number | null;
  rate: number; // bytes per second since the download started
}
const progress: Check<Progress> = object({ name: string, bytes: count, total: nullable(count), rate: number });

/** ima.labeled: a rootfs labelled from an imported image, watched from now on. */
export interface Labeled {
  image: { name: string; tag: string; digest: string };
  container: string;
  rootfs: string;
  files: number;
  bytes: number;
  ms: number;
  policySerial: number;
}
const labeled: Check<Labeled> = object({ image: imageRef, container: string, rootfs: string, files: count, bytes: count, ms: number, policySerial: count });

/** ima.label_failed. */
export interface LabelFailed {
  image: { name: string; tag: string; digest: string };
  code: ErrorCode;
  reason: string;
  policySerial: number;
}
const labelFailed: Check<LabelFailed> = object({ image: imageRef, code: errorCode, reason: string, policySerial: count });

/** audit.tamper: a file of a labelled rootfs that no longer matches its manifest. */
export interface Tamper extends Finding {
  container: string;
  image: { name: string; tag: string; digest: string };
  policySerial: number;
  action: 'reported' | 'blocked' | 'relabeled';
}

/** container.started: a workload's task is running from its labelled rootfs. */
export interface ContainerRef {
  name: string; // the policy's container name, also its containerd id
  image: { name: string; tag: string; digest: string }; // digest: the pinned image sha256 (hex), as in ima.labeled
  rootfs: string; // the labelled rootfs it runs from, read-only
  policySerial: number;
}
const containerRef = { name: string, image: imageRef, rootfs: string, policySerial: count };
export interface ContainerStarted extends ContainerRef {
  pid: number; // the task's init, in the runner's (host) pid namespace
  mntNs: number | null; // inode of /proc/<pid>/ns/mnt: what the kernel's records name
  cgroup: string; // the cgroup path its processes are in
  restarts: number;
  verifiedFiles: number; // files re-hashed against the manifest before this start
  startedAt: string;
  imaNamespace?: ImaNamespaceUse;
}
// Whether the kernel offers IMA namespaces (securityfs ima/namespaces): where
// it does, a per-container appraisal policy would be written between create
// and start. No kernel here has them, and sealkit writes none yet: 'detected'
// says the kernel could, not that it does.
export type ImaNamespaceUse = 'absent' | 'detected';
const imaNamespaceUse = optional(oneOf('absent', 'detected'));
const containerStarted: Check<ContainerStarted> = object({ ...containerRef, pid: count, mntNs: nullable(count), cgroup: string, restarts: count, verifiedFiles: count, startedAt: string, imaNamespace: imaNamespaceUse });
/** container.exited: its task ended on its own (code) or by a signal. */
export interface ContainerExited extends ContainerRef {
  pid: number;
  code: number | null;
  signal: string | null;
  ranMs: number;
}
const containerExited: Check<ContainerExited> = object({ ...containerRef, pid: count, code: nullable(count), signal: nullable(string), ranMs: number });
/** container.restarting: it exited and is started again after a delay. */
export interface ContainerRestarting extends ContainerRef {
  attempt: number;
  inMs: number;
}
const containerRestarting: Check<ContainerRestarting> = object({ ...containerRef, attempt: count, inMs: count });
/** container.stopped: the runner stopped it, or it exited and will not be started again. */
export type StopReason = 'removed' | 'replaced' | 'tamper' | 'exited' | 'shutdown';
export interface ContainerStopped extends ContainerRef {
  reason: StopReason;
  detail: string;
}
const containerStopped: Check<ContainerStopped> = object({ ...containerRef, reason: oneOf('removed', 'replaced', 'tamper', 'exited', 'shutdown'), detail: string });
/** container.refused: a start refused; its rootfs failed re-verification, or it cannot be run as the policy says. */
export interface ContainerRefused {
  name: string;
  image: { name: string; tag: string; digest: string | null };
  rootfs: string | null;
  code: ErrorCode;
  reason: string;
  file: string | null; // the file that failed re-verification, as the container sees it
  policySerial: number;
}
const containerRefused: Check<ContainerRefused> = object({
  name: string,
  image: object({ name: string, tag: string, digest: nullable(string) }),
  rootfs: nullable(string),
  code: errorCode,
  reason: string,
  file: nullable(string),
  policySerial: count,
});

/** The answer to runner.ps: one line per container the policy names or the runner still runs. */
export type ContainerState = 'waiting' | 'starting' | 'running' | 'restarting' | 'stopped' | 'refused' | 'exited';
export interface PsEntry {
  name: string;
  image: { name: string; tag: string; digest: string | null };
  state: ContainerState;
  pid: number | null;
  restarts: number;
  startedAt: string | null; // the current run's start, for the uptime
  reason: string | null; // why it is waiting, stopped or refused
  imaNamespace?: ImaNamespaceUse;
}
const psEntry: Check<PsEntry> = object({
  name: string,
  image: object({ name: string, tag: string, digest: nullable(string) }),
  state: oneOf('waiting', 'starting', 'running', 'restarting', 'stopped', 'refused', 'exited'),
  pid: nullable(count),
  restarts: count,
  startedAt: nullable(string),
  reason: nullable(string),
  imaNamespace: imaNamespaceUse,
});
/** runner.logs: a byte range of a container's log (stdout and stderr), from `from`. */
export interface LogsRequest {
  name: string;
  from?: number; // byte offset; the last `max` bytes when not given
  max?: number;
}
export interface LogsReply {
  name: string;
  from: number;
  next: number; // ask from here for what follows
  size: number;
  data: string; // utf8
}

/** audit.denial: the kernel refused a file, with the container and image it belongs to. */
export interface DenialData {
  mechanism: 'ima' | 'ipe'; // whose record: IMA appraisal (1800–1807) or IPE (1420)
  rule: string | null; // IPE: the policy rule that decided; null for IMA
  file: string | null; // on the host: in the rootfs, for a denial inside a workload container
  path: string | null; // as the kernel printed it: the process's view ("/bin/app" inside a container)
  cause: string | null;
  op: string | null;
  type: number;
  process: { pid: number | null; comm: string | null; uid: number | null };
  dev: string | null;
  ino: number | null;
  mntNs: number | null;
  errno: number | null;
  container: string | null; // the rootfs (label manifest) the file belongs to
  workload: string | null; // the runner's container the process ran in
  image: { name: string; tag: string; digest: string } | null;
  expectedSha256: string | null;
  policySerial: number | null;
  match: MatchKind | null;
  kernel: { seq: number | null; usec: number | null; auditId: string | null; time: string | null };
  truncated: boolean;
  raw: string;
  repeats?: number;
  window?: { from: string; to: string };
}

/** audit.lost: events a service dropped, counted. The auditor also counts kernel records it could not keep. */
export type LostReason = 'outbox-full' | 'permission-denied' | 'rate-limit' | 'ring-overflow' | 'parse' | 'kernel-ratelimit';
export interface LostData {
  service: ServiceName;
  reason: LostReason;
  dropped: number;
  since: string;
  until?: string;
  fromSeq?: number;
  toSeq?: number;
  sample?: string;
}

/** audit.spoof: lines userspace forged into /dev/kmsg that mimic kernel audit records. */
export interface SpoofData {
  count: number;
  firstSeq: number;
  lastSeq: number;
  samples: string[];
}

/** audit.policy: a push refused (local, or a fleet update of one of the node's groups), or a stored policy that failed to load. */
export interface PolicyAudit {
  action: 'push' | 'load' | 'fleet';
  file?: string;
  group?: string; // action fleet: the group whose key carried it
  sha256?: string; // of the refused YAML bytes, as the fleet push names it

  pusher?: string | null;
  keyId?: string | null;
  serial?: number | null;
  code: string;
  reason: string;
  inForce: number | null;
}

/** policy.applied, and the reply to policy.push. */
export interface PolicyApplied {
  serial: number;
  sha256: string;
  keyId: string;
  pusher?: string;
  changes: PolicyChange;
  via?: 'push' | 'fleet'; // fleet: taken from the hub's key of `group`; the fleet push's acknowledgement
  group?: string;
}
// a group's name is checked when the check runs: fleet.ts imports this module
const groupName: Check<string> = (v, at) => matching(GROUP_NAME, 'a fleet group name')(v, at);
const policyApplied: Check<PolicyApplied> = object(
  { serial: count, sha256: SHA256, keyId: string, pusher: optional(string), changes: opaque<PolicyChange>(), via: optional(oneOf('push', 'fleet')), group: optional(groupName) },
  (v, at) => {
    if ((v.via === 'fleet') !== (v.group !== undefined)) fail(`${at}.group`, 'must be present exactly when via is fleet');
  },
);

/** The reply to policy.get: the signed record in force and a summary of it. */
export interface PolicyRecord {
  yaml: string;
  signature: string;
  keyId: string;
  serial: number;
  sha256: string;
  appliedAt: string;
  summary: { serial: number; images: string[]; containers: string[]; keys: string[]; verifiers: string[]; ima: ImaMode };
}
const policyRecord: Check<PolicyRecord> = object({ yaml: string, signature: string, keyId: string, serial: count, sha256: string, appliedAt: string, summary: opaque<PolicyRecord['summary']>() });

/** The answer to sealkit.ping: who a service is. */
export interface PingReply {
  service: string;
  node: string;
  pid: number; // in the service's own pid namespace
  pidNs?: string; // that namespace, as /proc/self/ns/pid names it: nodeinfo maps pid to the host's view
  cgroup?: string; // /proc/self/cgroup, for the same mapping
  uptimeSec: number;
  version: string;
}
const pingReply: Check<PingReply> = object({ service: string, node: string, pid: count, pidNs: optional(string), cgroup: optional(string), uptimeSec: number, version: string });

// ---- subjects ---------------------------------------------------------------

interface Spec<S extends string, P> {
  readonly subject: S;
  readonly kind: 'event' | 'signal' | 'request';
  readonly stream: Stream | null;
  readonly from: readonly ServiceName[]; // publish: an event's publishers, a request's askers
  readonly to: readonly ServiceName[]; // subscribe: an event's listeners, a request's answerers
  readonly anyone: boolean; // an anonymous client may publish (ask) too
  readonly data: Check<P>;
}
export interface EventSpec<S extends string = string, P = unknown> extends Spec<S, P> {
  readonly kind: 'event' | 'signal';
}
export interface RequestSpec<S extends string = string, P = unknown, R = unknown, H extends Record<string, string> = Record<string, string>> extends Spec<S, P> {
  readonly kind: 'request';
  readonly reply: Check<R>;
  readonly headers: H;
}
export type SubjectSpec = EventSpec | RequestSpec;
export type PayloadOf<T> = T extends Spec<string, infer P> ? P : never;
export type ReplyOf<T> = T extends RequestSpec<string, unknown, infer R> ? R : never;

const everyService = serviceNames;

// Kept by a stream: published through the service's outbox, acknowledged.
function event<const S extends string, const F extends readonly ServiceName[], P>(subject: S, o: { from: F; stream: Stream; to?: readonly ServiceName[]; data: Check<P> }): EventSpec<S, P> & { readonly from: F } {
  return { subject, kind: 'event', stream: o.stream, from: o.from, to: o.to ?? [], anyone: false, data: o.data };
}

// High-rate state kept by no stream (a lost one is superseded by the next).
function signal<const S extends string, const F extends readonly ServiceName[], P>(subject: S, o: { from: F; data: Check<P> }): EventSpec<S, P> & { readonly from: F } {
  return { subject, kind: 'signal', stream: null, from: o.from, to: [], anyone: false, data: o.data };
}

// Kept by no stream, ever: a stream that captured a request subject would
// answer the requester with a PubAck.
function request<const S extends string, const A extends readonly ServiceName[], P, R, const H extends Record<string, string> = Record<never, string>>(
  subject: S,
  o: { answeredBy: A; askedBy?: readonly ServiceName[]; anyone?: boolean; body: Check<P>; reply: Check<R>; headers?: H },
): RequestSpec<S, P, R, H> & { readonly to: A } {
  return { subject, kind: 'request', stream: null, from: o.askedBy ?? [], to: o.answeredBy, anyone: o.anyone ?? false, data: o.body, reply: o.reply, headers: o.headers ?? ({} as H) };
}

const duplicateData = object({ id: string, type: string });
const anyReply = opaque<Record<string, unknown>>();
const noBody = opaque<Record<string, unknown>>();

export const contract = {
  audit: {
    denial: event('audit.denial', { from: ['auditor'], stream: 'audit', data: opaque<DenialData>() }),
    // the runner stops a container whose policy says onTamper: stop
    tamper: event('audit.tamper', { from: ['ima', 'runner'], stream: 'audit', to: ['runner'], data: opaque<Tamper>() }),
    rejected: event('audit.rejected', { from: ['fetcher'], stream: 'audit', data: opaque<RejectedImage>() }),
    policy: event('audit.policy', { from: ['policy'], stream: 'audit', data: opaque<PolicyAudit>() }),
    // every service reports its own drops here
    lost: event('audit.lost', { from: everyService, stream: 'audit', data: opaque<LostData>() }),
    spoof: event('audit.spoof', { from: ['auditor'], stream: 'audit', data: opaque<SpoofData>() }),
    // stand-ins keeping a publisher's chain whole where the stream refused an
    // event as a duplicate of an id it held (lib/eventsig.ts)
    duplicate: event('audit.duplicate', { from: everyService, stream: 'audit', data: duplicateData }),
  },
  events: {
    duplicate: event('events.duplicate', { from: everyService, stream: 'events', data: duplicateData }),
  },
  policy: {
    // the body is the exact YAML bytes that were signed, not JSON
    push: request('policy.push', {
      answeredBy: ['policy'],
      body: (v, at) => (v instanceof Uint8Array ? v : fail(at, 'must be the policy YAML bytes')),
      reply: policyApplied,
      headers: { signature: 'Sealkit-Signature', keyId: 'Sealkit-Key-Id', pusher: 'Sealkit-Pusher' },
    }),
    get: request('policy.get', { answeredBy: ['policy'], anyone: true, body: noBody, reply: policyRecord }),
    // every service re-reads the policy KV when it hears this
    applied: event('policy.applied', { from: ['policy'], stream: 'events', to: everyService, data: policyApplied }),
  },
  image: {
    fetch: request('image.fetch', { answeredBy: ['fetcher'], body: object({ name: string }), reply: object({ ok: boolean, image: verifiedImage }) }),
    progress: signal('image.progress', { from: ['fetcher'], data: progress }),
    verified: event('image.verified', { from: ['fetcher'], stream: 'events', to: ['importer'], data: verifiedImage }),
    rejected: event('image.rejected', { from: ['fetcher'], stream: 'events', data: opaque<RejectedImage>() }),
    imported: event('image.imported', { from: ['importer'], stream: 'events', to: ['ima'], data: importedImage }),
    importFailed: event('image.import_failed', { from: ['importer'], stream: 'events', data: importFailure }),
    // each service collects its own state: cache entries, runtime images, rootfs trees
    collected: event('image.collected', { from: ['fetcher', 'importer', 'ima'], stream: 'events', data: collected }),
  },
  ima: {
    labeled: event('ima.labeled', { from: ['ima'], stream: 'events', to: ['auditor', 'runner'], data: labeled }),
    labelFailed: event('ima.label_failed', { from: ['ima'], stream: 'events', data: labelFailed }),
    enforcing: event('ima.enforcing', { from: ['ima'], stream: 'events', data: opaque<EnforcementReport>() }),
    verify: request('ima.verify', { answeredBy: ['ima'], body: object({ container: string }), reply: anyReply }),
    status: request('ima.status', { answeredBy: ['ima'], anyone: true, body: noBody, reply: anyReply }),
    // an owner-signed IPE policy (PKCS#7, base64): the kernel checks the signature and the version
    ipe: request('ima.ipe', { answeredBy: ['ima'], body: object({ p7b: string }), reply: anyReply }),
  },
  container: {
    // the auditor maps a denial's pid and mount namespace to the container
    started: event('container.started', { from: ['runner'], stream: 'events', to: ['auditor'], data: containerStarted }),
    exited: event('container.exited', { from: ['runner'], stream: 'events', to: ['auditor'], data: containerExited }),
    restarting: event('container.restarting', { from: ['runner'], stream: 'events', data: containerRestarting }),
    stopped: event('container.stopped', { from: ['runner'], stream: 'events', to: ['auditor'], data: containerStopped }),
    refused: event('container.refused', { from: ['runner'], stream: 'events', data: containerRefused }),
  },
  runner: {
    // the auditor and the ima service ask which containers run (and from which rootfs)
    ps: request('runner.ps', { answeredBy: ['runner'], askedBy: ['auditor', 'ima'], anyone: true, body: noBody, reply: object({ containers: list(psEntry) }) }),
    // a workload's output may hold what only the operator should read: admin only
    logs: request('runner.logs', {
      answeredBy: ['runner'],
      body: object({ name: string, from: optional(count), max: optional(count) }),
      reply: object({ name: string, from: count, next: count, size: count, data: string }),
    }),
  },
  node: {
    info: event('node.info', { from: ['nodeinfo'], stream: 'events', data: opaque<Record<string, unknown>>() }),
    infoGet: request('node.info.get', { answeredBy: ['nodeinfo'], anyone: true, body: object({ services: optional(list(pingReply)) }), reply: anyReply }),
    heartbeat: signal('node.heartbeat', { from: ['nodeinfo'], data: opaque<{ node: string; services: unknown[] }>() }),
  },
  // every service answers a ping (request-many) with who it is, once its own
  // subscriptions are in place; nodeinfo asks for its heartbeat
  ping: request('sealkit.ping', { answeredBy: everyService, askedBy: ['nodeinfo'], anyone: true, body: noBody, reply: pingReply }),
  // verifier plugins (the verifier user, not a service) answer on subjects
  // under verify.> named by the policy
  verify: request('verify.>', { answeredBy: [], askedBy: ['fetcher'], body: opaque<Record<string, unknown>>(), reply: opaque<{ allow?: unknown; reason?: unknown }>() }),
} as const;

export const verifyPrefix = 'verify.';

type Tree = { readonly [k: string]: SubjectSpec | Tree };
function leaves(t: Tree): SubjectSpec[] {
  return Object.values(t).flatMap((v) => ('subject' in v && typeof v.subject === 'string' ? [v as SubjectSpec] : leaves(v as Tree)));
}

/** Every subject of the contract. */
export const specs: readonly SubjectSpec[] = leaves(contract);

// A service that owns no subject (publishes no event of its own, answers no
// request) is missing from the contract: the build fails naming it.
type Owners = { [K in keyof typeof contract]: (typeof contract)[K] extends SubjectSpec ? never : (typeof contract)[K][keyof (typeof contract)[K]] }[keyof typeof contract];
type Owned<T> = T extends { kind: 'request'; to: readonly (infer N)[] } ? N : T extends { from: readonly (infer N)[] } ? N : never;
type OwnsNothing = Exclude<ServiceName, Owned<Exclude<Owners, { from: typeof everyService }>>>;
const everyServiceOwnsASubject: [OwnsNothing] extends [never] ? true : { serviceWithoutSubjects: OwnsNothing } = true;
void everyServiceOwnsASubject;

// ---- reading what arrives -----------------------------------------------------

/** The payload of a message on `spec`'s subject, checked: a SEALKIT_BAD_REQUEST naming subject and field otherwise. */
export function checkData<T extends SubjectSpec>(spec: T, data: unknown): PayloadOf<T> {
  return run(spec.data, data, 'data', `${spec.subject} payload`, spec.subject) as PayloadOf<T>;
}

/** A reply to `spec`'s request, checked. */
export function checkReply<T extends RequestSpec>(spec: T, reply: unknown): ReplyOf<T> {
  return run(spec.reply, reply, 'reply', `reply on ${spec.subject}`, spec.subject) as ReplyOf<T>;
}

/** A CloudEvent whose data was checked against `spec`. */
export function checkEvent<T extends EventSpec>(spec: T, ev: CloudEvent<unknown>): CloudEvent<PayloadOf<T>> {
  checkData(spec, ev.data);
  return ev as CloudEvent<PayloadOf<T>>;
}

function run<P>(check: Check<P>, value: unknown, root: string, what: string, subject: string): P {
  try {
    return check(value, root);
  } catch (err) {
    if (!(err instanceof ShapeError)) throw err;
    throw new SealkitError('SEALKIT_BAD_REQUEST', `${what} is malformed: ${err.message}; it was not acted on`, { subject, field: err.at });
  }
}

type HeaderValues<H> = { [K in keyof H]?: string };

/** The headers `spec` defines, by name; an empty header is absent. */
export function readHeaders<H extends Record<string, string>>(spec: RequestSpec<string, unknown, unknown, H>, headers: { get(k: string): string } | undefined): HeaderValues<H> {
  const out: HeaderValues<H> = {};
  for (const [k, name] of Object.entries(spec.headers) as Array<[keyof H, string]>) out[k] = headers?.get(name) || undefined;
  return out;
}

/** Header names and values for a request on `spec`, for makeHeaders. */
export function writeHeaders<H extends Record<string, string>>(spec: RequestSpec<string, unknown, unknown, H>, values: HeaderValues<H>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [k, name] of Object.entries(spec.headers) as Array<[keyof H, string]>) out[name] = values[k];
  return out;
}

/** Whether a NATS subject filter (`*`, `>`) matches a subject. */
export function matches(filter: string, subject: string): boolean {
  const f = filter.split('.');
  const s = subject.split('.');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '>') return s.length > i;
    if (i >= s.length || (f[i] !== '*' && f[i] !== s[i])) return false;
  }
  return f.length === s.length;
}
