import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SealkitError } from '../../lib/errors.ts';
import { newHubState, type HubMember } from '../../lib/hubconf.ts';
import { checkShardSize, DEFAULT_SHARD_SIZE } from '../../lib/hubshards.ts';
import { clientUrls, hubDir, readHubState, writeHubState } from '../../lib/hubstate.ts';
import { none, type Command } from './common.ts';

export const defaultHubPorts = { port: 14222, clusterPort: 16222, leafPort: 7422 };

function port(raw: unknown, fallback: number, flag: string): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new SealkitError('SEALKIT_BAD_REQUEST', `hub config: ${flag} "${raw}" is not a TCP port (1-65535)`);
  return n;
}

// Members on one host take consecutive ports from the base ones; members on
// hosts of their own all take the base ports.
export function hubMembers(o: { hosts: string[]; port: number; clusterPort: number; leafPort: number; prefix?: string }): HubMember[] {
  const seen = new Map<string, number>();
  return o.hosts.map((host, i) => {
    const k = seen.get(host) ?? 0;
    seen.set(host, k + 1);
    return { name: `${o.prefix ?? 'hub'}-${i + 1}`, host, port: o.port + k, clusterPort: o.clusterPort + k, leafPort: o.leafPort + k };
  });
}

export const hubConfig: Command = {
  name: 'hub config',
  summary: 'write the hub members\' nats-server configs and the operator\'s credentials',
  usage: `usage: sealkit hub config [--dir DIR] [--members N | --hosts H1,H2,H3] [ports] [--listen IP] [--shard-size N] [--force]

Writes, in the hub directory: hub.json (what the configs are made from),
members/<name>/nats-server.conf for each member (start each with
"nats-server -c <that file>" on its host), and creds/admin.json,
creds/monitor.json. Enrolled nodes and credentials are kept unless --force;
--members/--hosts and the ports replace the members.

options:
  --dir DIR            hub directory (default $SEALKIT_HUB or ./state/hub of the checkout)
  --members N          N members on 127.0.0.1 (default 3; 1 for development)
  --hosts H1,H2,...    one member per host name or address the nodes and the other
                       members reach it at (members on one host take consecutive ports)
  --port N             client port of the first member on a host (default ${defaultHubPorts.port})
  --cluster-port N     route port (default ${defaultHubPorts.clusterPort})
  --leaf-port N        leaf-node port the nodes join (default ${defaultHubPorts.leafPort})
  --listen IP          interface to bind, when not the host (e.g. 0.0.0.0 behind NAT)
  --shard-size N       nodes each of the hub's stream shards (FLEET_AUDIT_<k>,
                       FLEET_EVENTS_<k>) sources (default ${DEFAULT_SHARD_SIZE}); nodes enrolled
                       from now on fill shards of this size, enrolled ones keep theirs
  --force              new credentials; forgets every enrolled node
  -h, --help           this help
`,
  options: {
    dir: { type: 'string' },
    members: { type: 'string' },
    hosts: { type: 'string' },
    port: { type: 'string' },
    'cluster-port': { type: 'string' },
    'leaf-port': { type: 'string' },
    listen: { type: 'string' },
    'shard-size': { type: 'string' },
    force: { type: 'boolean' },
  },
  async run(o, positionals) {
    none(positionals, 'hub config');
    const dir = (o.dir as string | undefined) ?? hubDir();
    if (o.members !== undefined && o.hosts !== undefined) throw new SealkitError('SEALKIT_BAD_REQUEST', 'hub config: give --members or --hosts, not both');
    const n = o.members === undefined ? 3 : Number(o.members);
    if (!Number.isInteger(n) || n < 1 || n > 15) throw new SealkitError('SEALKIT_BAD_REQUEST', `hub config: --members "${o.members}" is not a number of members (1-15; 3 survives one lost)`);
    const hosts = o.hosts !== undefined ? (o.hosts as string).split(',').map((h) => h.trim()).filter(Boolean) : Array.from({ length: n }, () => '127.0.0.1');
    if (hosts.length === 0) throw new SealkitError('SEALKIT_BAD_REQUEST', 'hub config: --hosts names no host');
    const members = hubMembers({
      hosts,
      port: port(o.port, defaultHubPorts.port, '--port'),
      clusterPort: port(o['cluster-port'], defaultHubPorts.clusterPort, '--cluster-port'),
      leafPort: port(o['leaf-port'], defaultHubPorts.leafPort, '--leaf-port'),
    });
    const keep = !o.force && existsSync(join(dir, 'hub.json'));
    const hub = keep ? await readHubState(dir) : newHubState(members);
    const memberFlags = ['members', 'hosts', 'port', 'cluster-port', 'leaf-port'].some((f) => o[f] !== undefined);
    if (!keep || memberFlags) hub.members = newHubState(members).members;
    if (o.listen !== undefined) hub.listen = o.listen as string;
    if (o['shard-size'] !== undefined) hub.shardSize = checkShardSize(o['shard-size'], 'hub config: --shard-size');
    const written = await writeHubState(dir, hub);
    process.stdout.write(
      [
        `hub: ${hub.members.length} member(s), ${Object.keys(hub.nodes).length} enrolled node(s), state ${dir}`,
        ...written.map((f) => `  ${f}`),
        `operator credentials: ${join(dir, 'creds', 'admin.json')} (clients: ${clientUrls(hub.members).join(', ')})`,
        `start each member: nats-server -c <its nats-server.conf>; then enroll nodes: sealkit fleet enroll NODE --groups G`,
      ].join('\n') + '\n',
    );
    return 0;
  },
};
