import { join } from 'node:path';
import nacl from 'tweetnacl';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { writeFileAtomic } from '../../lib/atomic.ts';
import { encode } from '../../lib/bus.ts';
import { SealkitError } from '../../lib/errors.ts';
import { checkGroup, checkNode, fleetConfigPath, nodesBucket, type EventKeyFile, type FleetNodeConfig, type FleetNodeEntry } from '../../lib/fleet.ts';
import { hubReplicas, leafUrls, leafUser, newSecret, type HubState } from '../../lib/hubconf.ts';
import { ensureHubStreams } from '../../lib/hubstreams.ts';
import { shardsOf } from '../../lib/hubshards.ts';
import { clientUrls, hubDir, nodeBundleDir, readHubState, reloadMembers, writeHubState } from '../../lib/hubstate.ts';
import { one, type Command } from './common.ts';

export async function connectHub(hub: HubState, server: string | undefined): Promise<NatsConnection> {
  const servers = server ? [server] : clientUrls(hub.members);
  try {
    return await natsConnect({ servers, name: 'sealkit-cli', user: hub.admin.user, pass: hub.admin.password, timeout: 3000 });
  } catch (err) {
    throw new SealkitError('SEALKIT_UNAVAILABLE', `cannot reach the hub at ${servers.join(', ')}: ${(err as Error).message}; start it ("make hub", or nats-server -c on each member) or pass --server`);
  }
}

// The hub accepts the node's leaf user once every member running here has
// reloaded: the user connects as a client to each (its permissions allow it
// nothing it could not do as a leaf).
async function waitAccepted(hub: HubState, members: string[], user: string, pass: string): Promise<void> {
  for (const m of hub.members.filter((x) => members.includes(x.name))) {
    const until = Date.now() + 10_000;
    for (;;) {
      try {
        const nc = await natsConnect({ servers: `nats://${m.host}:${m.port}`, user, pass, timeout: 1000, reconnect: false });
        await nc.close();
        break;
      } catch (err) {
        if (Date.now() > until) throw new SealkitError('SEALKIT_UNAVAILABLE', `hub member ${m.name} did not accept ${user} 10 s after its reload: ${(err as Error).message}; check its log`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}

export const fleetEnroll: Command = {
  name: 'fleet enroll',
  summary: 'enroll a node: its leaf credentials, event key and bundle; the hub sources its streams',
  usage: `usage: sealkit fleet enroll NODE --groups G1,G2 [--dir DIR] [--out DIR] [--server URL] [--force]

Creates the node's own leaf password and event-signing key, writes the node
bundle (fleet/node.json and keys/events.json, mode 0600; copy it into the
node's state directory as it is: cp -r BUNDLE/. STATE/), registers the node in
the hub's registry, adds the hub's sources of the node's streams, rewrites the
members' configs and reloads the members running on this machine.

options:
  --groups G1,G2   the node's groups: it follows their policy keys (required)
  --dir DIR        hub directory (default $SEALKIT_HUB or ./state/hub of the checkout)
  --out DIR        where the bundle goes (default <hub>/nodes/NODE)
  --server URL     a hub member's client URL (default: every member of hub.json)
  --force          enroll again: a new password and event key replace the old ones
  -h, --help       this help
`,
  options: { groups: { type: 'string' }, dir: { type: 'string' }, out: { type: 'string' }, server: { type: 'string' }, force: { type: 'boolean' } },
  async run(o, positionals) {
    const node = checkNode(one(positionals, 'node name', 'fleet enroll'));
    if (typeof o.groups !== 'string' || !o.groups.trim()) throw new SealkitError('SEALKIT_BAD_REQUEST', `fleet enroll ${node}: --groups is required (the groups whose policy the node follows, e.g. --groups web,eu)`);
    const groups = [...new Set(o.groups.split(',').map((g) => checkGroup(g.trim())))];
    const dir = (o.dir as string | undefined) ?? hubDir();
    const hub = await readHubState(dir);
    if (hub.nodes[node] && !o.force) {
      throw new SealkitError('SEALKIT_BAD_REQUEST', `node ${node} is already enrolled (groups ${hub.nodes[node].groups.join(', ')}); pass --force to enroll it again with a new password and event key (its old bundle stops working)`);
    }
    const nc = await connectHub(hub, o.server as string | undefined);
    try {
      const leafPassword = newSecret();
      const pair = nacl.sign.keyPair();
      const key: EventKeyFile = { node, publicKey: Buffer.from(pair.publicKey).toString('base64'), secretKey: Buffer.from(pair.secretKey).toString('base64') };
      const cfg: FleetNodeConfig = { node, groups, hub: leafUrls(hub.members), leafUser: leafUser(node), leafPassword };
      const out = (o.out as string | undefined) ?? nodeBundleDir(dir, node);
      // the bundle is a node state directory: the paths a node reads
      // (fleetConfigPath, and eventKeyPath's default)
      const keyFile = join(out, 'keys', 'events.json');
      await writeFileAtomic(fleetConfigPath(out), JSON.stringify(cfg, null, 2) + '\n', 0o600);
      await writeFileAtomic(keyFile, JSON.stringify(key, null, 2) + '\n', 0o600);

      // the registry and the sources first: a member reloading its
      // accounts answers no JetStream request for a moment
      const entry: FleetNodeEntry = { node, groups, eventKey: key.publicKey, leafUser: cfg.leafUser, enrolledAt: new Date().toISOString() };
      // enrolled again, a node keeps its shard (moved, its events would be
      // sourced a second time into another)
      hub.nodes[node] = { groups, leafPassword, shard: hub.nodes[node]?.shard };
      await ensureHubStreams(nc, { shards: shardsOf(hub), replicas: hubReplicas(hub.members.length) });
      await (await nc.jetstream().views.kv(nodesBucket)).put(node, encode(entry));
      await writeHubState(dir, hub);
      const { reloaded, elsewhere } = reloadMembers(dir, hub);
      await waitAccepted(hub, reloaded, cfg.leafUser, leafPassword);
      process.stdout.write(
        [
          `enrolled ${node} (groups ${groups.join(', ')}); bundle ${out}`,
          `  on the node: cp -r ${out}/. <node state>/  (then make dev, or make iso HUB=… NODE=${node})`,
          reloaded.length ? `  reloaded: ${reloaded.join(', ')}` : '',
          elsewhere.length ? `  not running here, copy their config and reload them (nats-server --signal reload): ${elsewhere.join(', ')}` : '',
        ].filter(Boolean).join('\n') + '\n',
      );
      return 0;
    } finally {
      await nc.close();
    }
  },
};
