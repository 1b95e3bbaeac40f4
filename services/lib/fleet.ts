import { join } from 'node:path';
import { SealkitError } from './errors.ts';
import { streamNames } from './contract.ts';

// The fleet, built on NATS itself: a hub cluster (JetStream domain `hub`)
// that every node's own nats-server joins as a leaf node, keeping its own
// JetStream domain (the node's name), so its streams work while the hub is
// away. Desired state is a KV bucket on the hub, one key per group; the hub
// sources every node's streams into its own, so what a node published while
// cut off arrives once it is back.

export const hubDomain = 'hub';

// On the hub: the signed policy per group, and the registry of enrolled nodes
// (node → groups, event key, leaf user), both written by the operator only.
export const fleetBucket = 'sealkit-fleet';
export const nodesBucket = 'sealkit-fleet-nodes';

// On the hub: every node's audit and event streams, sourced from the node's
// domain (no subjects of their own, so nothing published on the hub is kept
// twice).
export const hubStreams = { audit: 'FLEET_AUDIT', events: 'FLEET_EVENTS' } as const;

export function groupKey(group: string): string {
  return `group.${checkGroup(group)}`;
}

// Where a source delivers a node's stream on the hub: one prefix per node and
// stream, the only delivery subjects that node's leaf user may publish.
export function sourceDeliverPrefix(node: string, stream: (typeof streamNames)[keyof typeof streamNames]): string {
  return `fleet.src.${checkNode(node)}.${stream}`;
}

// Where a node's domain answers a pusher asking it directly (fleet push's
// last path): the node's leaf may publish there and nowhere else of the kind,
// so an answer's subject names the node it came through.
export function answerPrefix(node: string): string {
  return `fleet.answer.${checkNode(node)}`;
}

// A node name is its JetStream domain, a subject token, a NATS user name and
// a host name label at once: the intersection of what the four allow.
export const NODE_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
export const GROUP_NAME = /^[a-z0-9](?:[a-z0-9_-]{0,62})$/;

export function checkNode(name: string, what = 'node name'): string {
  if (!NODE_NAME.test(name) || name === hubDomain) {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `${what} "${name}" is not allowed; use 1-63 characters of a-z, 0-9 and '-' (not starting or ending with '-', and not "${hubDomain}")`);
  }
  return name;
}

export function checkGroup(name: string, what = 'group'): string {
  if (!GROUP_NAME.test(name)) {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `${what} "${name}" is not allowed; use 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit`);
  }
  return name;
}

// The node's side of its enrolment, written by `sealkit fleet enroll` into
// the node bundle and read by the node's services from
// <state>/fleet/node.json (mode 0600: it holds the leaf password).
export interface FleetNodeConfig {
  node: string;
  groups: string[];
  hub: string[]; // leaf URLs of the hub members, nats-leaf://host:port
  leafUser: string;
  leafPassword: string;
}

// The hub's registry entry for one node (nodesBucket, key = node name).
export interface FleetNodeEntry {
  node: string;
  groups: string[];
  eventKey: string; // ed25519 public key, base64: every event the node publishes is signed by it
  leafUser: string;
  enrolledAt: string;
}

// The node's event-signing key: <state>/keys/events.json, mode 0600,
// { node, publicKey, secretKey } base64 (tweetnacl sign key pair).
export interface EventKeyFile {
  node: string;
  publicKey: string;
  secretKey: string;
}

export function fleetConfigPath(state: string): string {
  return join(state, 'fleet', 'node.json');
}

export function eventKeyPath(state: string): string {
  return process.env.SEALKIT_EVENT_KEY ?? join(state, 'keys', 'events.json');
}

// The value of a group's key in fleetBucket: the same signed YAML a local
// push carries, with its detached signature. The YAML travels as a string:
// the signature covers its UTF-8 bytes, so the writer refuses what is not
// UTF-8 and the node re-checks the bytes it verifies.
export interface FleetPolicyValue {
  yaml: string;
  signature: string;
  keyId: string;
  pusher?: string;
}

export function encodeFleetPolicy(v: FleetPolicyValue): Uint8Array {
  return Buffer.from(JSON.stringify(v));
}

// What a node reads off the bucket, not trusted: a malformed value is a
// refusal (reported like any other), never an exception out of the watch.
export function decodeFleetPolicy(raw: Uint8Array, group: string): FleetPolicyValue {
  let v: Partial<Record<keyof FleetPolicyValue, unknown>>;
  try {
    v = JSON.parse(Buffer.from(raw).toString('utf8')) as typeof v;
  } catch {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `the fleet policy of group "${group}" is not JSON {yaml, signature, keyId}; push it again with "sealkit fleet push"`);
  }
  if (v === null || typeof v !== 'object' || typeof v.yaml !== 'string') {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `the fleet policy of group "${group}" has no "yaml" string; push it again with "sealkit fleet push"`);
  }
  return {
    yaml: v.yaml,
    signature: typeof v.signature === 'string' ? v.signature : '',
    keyId: typeof v.keyId === 'string' ? v.keyId : '',
    ...(typeof v.pusher === 'string' ? { pusher: v.pusher } : {}),
  };
}
