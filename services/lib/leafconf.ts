import { readFile } from 'node:fs/promises';
import { specs } from './contract.ts';
import { SealkitError } from './errors.ts';
import { checkGroup, checkNode, fleetConfigPath, type FleetNodeConfig } from './fleet.ts';
import type { ServerConfigOptions } from './natsconf.ts';

// A node's side of the fleet: its nats-server keeps its own JetStream domain
// (the node name) and joins every hub member as a leaf node with its own
// leaf user, read from <state>/fleet/node.json when the node is enrolled.

// Nothing the node's services listen to may come from the hub: no command
// (policy.push, runner.logs…), no event of another node, no write to a local
// bucket. What the node needs from the hub (its sources' consumer requests,
// replies under its own inbox, flow control) is none of these.
export const leafDenyImports = [...new Set([...specs.map((s) => `${s.subject.split('.')[0]}.>`), '$KV.>'])];

export async function readFleetNodeConfig(state: string): Promise<FleetNodeConfig | undefined> {
  const path = fleetConfigPath(state);
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SealkitError('SEALKIT_CONFIG', `cannot read the fleet enrolment ${path}: ${(err as Error).message}`);
  }
  let c: Partial<FleetNodeConfig>;
  try {
    c = JSON.parse(raw) as Partial<FleetNodeConfig>;
  } catch (err) {
    throw new SealkitError('SEALKIT_CONFIG', `fleet enrolment ${path} is not JSON (${(err as Error).message}); copy the node bundle from "sealkit fleet enroll" again`);
  }
  const bad = (what: string) => new SealkitError('SEALKIT_CONFIG', `fleet enrolment ${path}: ${what}; copy the node bundle from "sealkit fleet enroll" again`);
  if (typeof c.node !== 'string') throw bad('no node name');
  checkNode(c.node, `node name in ${path}`);
  if (!Array.isArray(c.groups) || c.groups.some((g) => typeof g !== 'string')) throw bad('groups must be a list of names');
  for (const g of c.groups) checkGroup(g, `group in ${path}`);
  if (!Array.isArray(c.hub) || c.hub.length === 0 || c.hub.some((u) => typeof u !== 'string' || !u.startsWith('nats-leaf://'))) throw bad('hub must list the hub members as nats-leaf://host:port');
  if (typeof c.leafUser !== 'string' || typeof c.leafPassword !== 'string') throw bad('leafUser or leafPassword missing');
  return { node: c.node, groups: c.groups, hub: c.hub, leafUser: c.leafUser, leafPassword: c.leafPassword };
}

// The node's nats-server options that make it a fleet member: pass them to
// serverConfig with the rest (dev.ts, iso/keys.ts).
export function leafServerOptions(c: FleetNodeConfig): Pick<ServerConfigOptions, 'domain' | 'leaf' | 'serverName'> {
  const auth = `${encodeURIComponent(c.leafUser)}:${encodeURIComponent(c.leafPassword)}@`;
  return {
    // a leaf with a server name another node uses too is refused by the hub
    serverName: checkNode(c.node),
    domain: c.node,
    leaf: { urls: c.hub.map((u) => u.replace('nats-leaf://', `nats-leaf://${auth}`)), denyImports: leafDenyImports },
  };
}
