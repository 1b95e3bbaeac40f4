import { randomBytes } from 'node:crypto';
import { specs, streamNames } from './contract.ts';
import { SealkitError } from './errors.ts';
import { answerPrefix, checkGroup, checkNode, fleetBucket, groupKey, hubDomain, sourceDeliverPrefix } from './fleet.ts';
import { shardsOf, shardStream } from './hubshards.ts';
import { fleetInboxPrefix } from './leafconf.ts';
import { permissions as nodePermissions, replayPermissions, type BusCreds, type Permissions } from './natsconf.ts';

// The nats-server configuration of each hub member: a cluster (three in the
// tests, one allowed for development) with JetStream in domain `hub`, a leaf
// listener the nodes join, an admin user (the operator), anonymous clients as
// a read-only monitor, and one leaf user per enrolled node with its own
// password and the narrowest permissions its leaf connection works with.

export interface HubMember {
  name: string; // server_name, unique in the cluster
  host: string; // where the other members and the nodes reach it
  port: number; // clients (the operator's CLI, monitors)
  clusterPort: number;
  leafPort: number;
  httpPort?: number; // nats-server monitoring, on loopback
}

export interface EnrolledNode {
  groups: string[];
  leafPassword: string;
  shard?: number; // the hub stream shard sourcing its streams (hubshards.ts)
}

// Everything the hub's configs are generated from (<hub>/hub.json, 0600).
export interface HubState {
  members: HubMember[];
  admin: BusCreds;
  monitor: BusCreds;
  cluster: BusCreds; // route authentication between members; no node knows it
  nodes: Record<string, EnrolledNode>;
  listen?: string; // the interface members bind when it is not their host (0.0.0.0 behind NAT)
  shardSize?: number; // nodes a hub stream shard sources (default DEFAULT_SHARD_SIZE)
}

export const hubClusterName = 'sealkit-hub';

export function leafUser(node: string): string {
  return `leaf-${checkNode(node)}`;
}

export function newSecret(): string {
  return randomBytes(24).toString('base64url');
}

export function newHubState(members: HubMember[]): HubState {
  checkMembers(members);
  return {
    members,
    admin: { user: 'admin', password: newSecret() },
    monitor: { user: 'monitor', password: newSecret() },
    cluster: { user: 'route', password: newSecret() },
    nodes: {},
  };
}

// JetStream replicas of the hub's streams and buckets: a quorum survives one
// member lost from three; a development hub of one or two keeps what it has.
export function hubReplicas(members: number): number {
  return Math.max(1, Math.min(3, members));
}

export function leafUrls(members: HubMember[]): string[] {
  return members.map((m) => `nats-leaf://${m.host}:${m.leafPort}`);
}

// What a node publishes live: its events and signals, from the contract, and
// any two-token audit subject (a plugin's); never a request.
const liveEvents = [...new Set(['audit.*', ...specs.filter((s) => s.kind !== 'request' && !s.subject.startsWith('audit.')).map((s) => s.subject)])];
const nodeStreams = [streamNames.audit, streamNames.events];

// Hub-side permissions of a node's leaf user: publish is what the node may
// send into the hub, subscribe what the hub may send to the node.
export function leafPermissions(node: string, groups: string[]): Permissions {
  checkNode(node);
  const api = `$JS.${hubDomain}.API`;
  const kv = `KV_${fleetBucket}`;
  const keys = groups.map((g) => `$KV.${fleetBucket}.${groupKey(g)}`);
  // its groups' keys, read and watched. The filter is in the subject (nats.js
  // names the watch consumer and appends its filter): the bare
  // CONSUMER.CREATE, whose filter is in the body, would read any key.
  const kvReads = ['INFO', `STREAM.INFO.${kv}`, ...keys.flatMap((k) => [`CONSUMER.CREATE.${kv}.*.${k}`, `DIRECT.GET.${kv}.${k}`])];
  return {
    answers: false,
    publish: [
      ...liveEvents,
      // the node's streams, delivered to the hub's sources, and its replies
      // to the hub's source-consumer creation (without them sourcing never
      // starts, silently)
      ...nodeStreams.map((s) => `${sourceDeliverPrefix(node, s)}.>`),
      '$JSC.R.>',
      // its domain's answers to a pusher asking it for its last answer
      `${answerPrefix(node)}.>`,
      // through the hub's domain, as the node's clients ask; and as the hub
      // maps those requests, which it checks too when the same user is a
      // client of the hub (a leaf never gets $JS.API across: the domains differ)
      ...kvReads.flatMap((r) => [`${api}.${r}`, `$JS.API.${r}`]),
      `$JS.FC.${kv}.>`,
    ],
    subscribe: [
      `$JS.${node}.API.>`, // the hub's sources create their consumers on the node
      `${fleetInboxPrefix(node)}.>`,
      ...nodeStreams.map((s) => `$JS.FC.${s}.>`),
    ],
  };
}

// The hub's anonymous clients: every node's live events and the hub's
// streams (every shard, found by listing the streams' names), read only, as
// the node's own monitor.
function monitorPermissions(hub: HubState): Permissions {
  const shards = shardsOf(hub).flatMap((_, k) => (['audit', 'events'] as const).map((kind) => shardStream(kind, k)));
  return {
    answers: false,
    publish: ['$JS.API.STREAM.NAMES', ...replayPermissions(shards)],
    subscribe: nodePermissions.monitor.subscribe,
  };
}

const q = (s: string) => JSON.stringify(s);
const list = (xs: string[]) => `[${xs.map(q).join(', ')}]`;

function userBlock(c: BusCreds, p: Permissions | undefined): string[] {
  const lines = [`    {`, `      user: ${q(c.user)}, password: ${q(c.password)}`];
  if (p) {
    lines.push(`      permissions: {`);
    lines.push(`        publish: { allow: ${list(p.publish)} }`);
    lines.push(`        subscribe: { allow: ${list(p.subscribe)} }`);
    if (p.answers !== false) lines.push(`        allow_responses: true`);
    lines.push(`      }`);
  }
  lines.push(`    }`);
  return lines;
}

export interface MemberConfigOptions {
  storeDir: string;
  pidFile?: string;
  maxFileStore?: string;
  listen?: string; // interface the member binds (default: its host)
  // subjects every node's leaf user may also use (a benchmark's bare
  // request-many to the nodes); nothing in the product sets it
  leafExtra?: Pick<Permissions, 'publish' | 'subscribe'>;
  // host:port a node dials to reach this member's leaf port, when not the
  // member's own host and leaf port (a benchmark's cuttable TCP link)
  leafAdvertise?: string;
}

export function hubMemberConfig(hub: HubState, name: string, o: MemberConfigOptions): string {
  checkMembers(hub.members);
  const self = hub.members.find((m) => m.name === name);
  if (!self) throw new SealkitError('SEALKIT_CONFIG', `hub member "${name}" is not one of ${hub.members.map((m) => m.name).join(', ')}`);
  const bind = o.listen ?? self.host;
  const lines: string[] = [];
  lines.push(`# generated by sealkit: do not edit; regenerate with "sealkit hub config"`);
  lines.push(`server_name: ${q(self.name)}`);
  lines.push(`host: ${q(bind)}`);
  lines.push(`port: ${self.port}`);
  if (o.pidFile) lines.push(`pid_file: ${q(o.pidFile)}`);
  if (self.httpPort !== undefined) lines.push(`http: ${q(`127.0.0.1:${self.httpPort}`)}`);
  lines.push(`max_payload: 8MB`);
  lines.push(`jetstream {`);
  lines.push(`  store_dir: ${q(o.storeDir)}`);
  lines.push(`  domain: ${q(hubDomain)}`);
  lines.push(`  max_memory_store: 64MB`);
  lines.push(`  max_file_store: ${o.maxFileStore ?? '4GB'}`);
  lines.push(`}`);
  if (hub.members.length > 1) {
    const route = (m: HubMember) => `nats-route://${hub.cluster.user}:${hub.cluster.password}@${m.host}:${m.clusterPort}`;
    lines.push(`cluster {`);
    lines.push(`  name: ${q(hubClusterName)}`);
    lines.push(`  host: ${q(bind)}`);
    lines.push(`  port: ${self.clusterPort}`);
    lines.push(`  authorization { user: ${q(hub.cluster.user)}, password: ${q(hub.cluster.password)} }`);
    lines.push(`  routes: ${list(hub.members.filter((m) => m !== self).map(route))}`);
    lines.push(`}`);
  }
  lines.push(`leafnodes {`);
  lines.push(`  host: ${q(bind)}`);
  lines.push(`  port: ${self.leafPort}`);
  // a node dials the members its enrolment lists, nothing else: the
  // addresses the members would gossip are theirs (loopback, a private
  // network) and may not be reachable from a node (a QEMU guest reaches the
  // hub only through its guestfwd)
  lines.push(`  no_advertise: true`);
  // nats-server tells every leaf that connects the member's own leaf URL
  // (no_advertise keeps it from the routes only), and the node dials it
  // from then on: make it the address the node was given, not the
  // listening one (behind a NAT, a tunnel or a link a node could not reach,
  // or could reach around)
  lines.push(`  advertise: ${q(o.leafAdvertise ?? `${self.host}:${self.leafPort}`)}`);
  lines.push(`}`);
  lines.push(`authorization {`);
  lines.push(`  users: [`);
  lines.push(...userBlock(hub.admin, undefined));
  lines.push(...userBlock(hub.monitor, monitorPermissions(hub)));
  for (const [node, n] of Object.entries(hub.nodes).sort(([a], [b]) => a.localeCompare(b))) {
    const p = leafPermissions(node, n.groups.map((g) => checkGroup(g)));
    if (o.leafExtra) {
      p.publish.push(...o.leafExtra.publish);
      p.subscribe.push(...o.leafExtra.subscribe);
    }
    lines.push(...userBlock({ user: leafUser(node), password: n.leafPassword }, p));
  }
  lines.push(`  ]`);
  lines.push(`}`);
  lines.push(`no_auth_user: ${q(hub.monitor.user)}`);
  return lines.join('\n') + '\n';
}

function checkMembers(members: HubMember[]): void {
  if (members.length === 0) throw new SealkitError('SEALKIT_CONFIG', 'a hub needs at least one member');
  const names = new Set<string>();
  for (const m of members) {
    checkNode(m.name, 'hub member name');
    if (names.has(m.name)) throw new SealkitError('SEALKIT_CONFIG', `hub member name "${m.name}" is used twice; give every member its own name`);
    names.add(m.name);
    for (const [what, p] of [['port', m.port], ['cluster port', m.clusterPort], ['leaf port', m.leafPort]] as const) {
      if (!Number.isInteger(p) || p < 1 || p > 65535) throw new SealkitError('SEALKIT_CONFIG', `hub member ${m.name}: ${what} "${p}" is not a TCP port (1-65535)`);
    }
  }
}
