// A fleet node's image: the enrolment bundle `sealkit fleet enroll` wrote
// for one node (fleet/node.json: node, groups, hub leaf URLs, leaf user and
// password; keys/events.json: the node's event-signing key pair), baked into
// the image's state, and the guest's nats-server joining the hub as a leaf
// node in the node's own JetStream domain. The image then holds that node's
// secrets: whoever reads the ISO can act as the node on the hub.
import { hubDir, nodeBundleDir } from '../services/lib/hubstate.ts';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealkitError } from '../services/lib/errors.ts';
import { serverConfig, type BusCreds, type ServerConfigOptions } from '../services/lib/natsconf.ts';
import { leafServerOptions, readFleetNodeConfig } from '../services/lib/leafconf.ts';
import { checkNode, fleetConfigPath, type EventKeyFile, type FleetNodeConfig } from '../services/lib/fleet.ts';

// The node's state inside the image (SEALKIT_STATE of every service in linuxkit.yml).
export const guestState = '/var/lib/sealkit';

// Where the guest reaches the hub: QEMU's guestfwd for this address is the
// guest's only way out of its restricted user network (iso/vm.ts).
export const guestHub = { host: '10.0.2.100', port: 7422 };

// Where `sealkit fleet enroll NODE` leaves a node's bundle in the operator's state.
export function bundleDir(node: string, hub = hubDir()): string {
  return nodeBundleDir(hub, checkNode(node, 'NODE'));
}

export interface FleetBundle {
  dir: string;
  config: FleetNodeConfig;
  eventKey: EventKeyFile;
  files: { config: string; eventKey: string }; // host paths
}

// The enrolment `sealkit fleet enroll NODE` left for the node, checked as
// the node will read it: a bundle for another node, or one without its
// password or key, is refused here rather than found out at boot.
export async function readBundle(dir: string, node: string): Promise<FleetBundle> {
  checkNode(node, 'NODE');
  const files = { config: fleetConfigPath(dir), eventKey: join(dir, 'keys', 'events.json') };
  const bad = (file: string, what: string) =>
    new SealkitError('SEALKIT_CONFIG', `fleet bundle ${file}: ${what}; enroll the node ("sealkit fleet enroll ${node}") and build with its bundle`, { file, node });
  const config = await readFleetNodeConfig(dir);
  if (!config) throw bad(files.config, 'it does not exist');
  if (config.node !== node) throw bad(files.config, `it is node "${config.node}"'s, not "${node}"'s`);
  let eventKey: Partial<EventKeyFile>;
  try {
    eventKey = JSON.parse(await readFile(files.eventKey, 'utf8')) as Partial<EventKeyFile>;
  } catch (err) {
    throw bad(files.eventKey, `it cannot be read (${(err as Error).message})`);
  }
  if (eventKey.node !== node) throw bad(files.eventKey, `it is node "${eventKey.node}"'s, not "${node}"'s`);
  if (typeof eventKey.publicKey !== 'string' || typeof eventKey.secretKey !== 'string') throw bad(files.eventKey, 'it has no key pair');
  return { dir, config, eventKey: { node, publicKey: eventKey.publicKey, secretKey: eventKey.secretKey }, files };
}

// HUB as the operator gives it: leaf URLs, comma-separated, or host:port.
export function parseHub(hub: string): string[] {
  const urls = hub.split(',').map((s) => s.trim()).filter(Boolean).map((s) => (s.includes('://') ? s : `nats-leaf://${s}`));
  if (urls.length === 0) throw new SealkitError('SEALKIT_CONFIG', `HUB="${hub}" names no hub; give its leaf URL, e.g. HUB=nats-leaf://hub.example.org:7422`, { hub });
  for (const u of urls) {
    const url = URL.canParse(u) ? new URL(u) : undefined;
    if (url?.protocol !== 'nats-leaf:' || !url.hostname) {
      throw new SealkitError('SEALKIT_CONFIG', `HUB: "${u}" is not a hub's leaf URL; give it as nats-leaf://hub.example.org:7422 or host:port`, { hub });
    }
    if (url.username || url.password) {
      throw new SealkitError('SEALKIT_CONFIG', `HUB: "${url.host}" carries credentials; the node's leaf user and password come from its enrolment`, { hub: url.host });
    }
  }
  return urls;
}

// The bundle with the hub as this image's node reaches it (HUB at build
// time, or the guestfwd of make run), when that is not what enrolment said.
export function withHub(b: FleetBundle, hub?: string[]): FleetBundle {
  return hub ? { ...b, config: { ...b.config, hub } } : b;
}

// The enrolment as the node's services read it under their state.
export function guestFiles(b: FleetBundle): Array<{ path: string; text: string }> {
  return [
    { path: fleetConfigPath(guestState), text: JSON.stringify(b.config, null, 2) + '\n' },
    { path: join(guestState, 'keys', 'events.json'), text: JSON.stringify(b.eventKey, null, 2) + '\n' },
  ];
}

// The enrolment as the build manifest records it among its inputs: the
// digests of what the node reads, so a rebuild is due when it changes.
export function fleetInputs(b: FleetBundle): Array<{ path: string; sha256: string; role: 'fleet' }> {
  return guestFiles(b).map((f) => ({ path: `fleet:${f.path}`, sha256: createHash('sha256').update(f.text).digest('hex'), role: 'fleet' }));
}

// What the build manifest (readable by anyone on the node) says of the
// enrolment: no password, no key, only whom the node is and where it goes.
export function manifestEntry(b: FleetBundle): { node: string; groups: string[]; hub: string[]; leafUser: string; eventKey: string } {
  return { node: b.config.node, groups: b.config.groups, hub: b.config.hub, leafUser: b.config.leafUser, eventKey: b.eventKey.publicKey };
}

// The guest's nats-server as a fleet member: the hub's node-side options
// (leafconf.ts) on the guest's own (keys.ts).
// Without the leaf (bus-init's server, started for a moment at boot), the
// same domain and name: the streams it creates are the node's.
export function nodeServerConfig(b: FleetBundle, creds: Record<string, BusCreds>, guest: Omit<ServerConfigOptions, 'creds'>, o: { leaf?: boolean } = {}): string {
  const { leaf, ...own } = leafServerOptions(b.config);
  return serverConfig({ creds, ...guest, ...own, ...(o.leaf === false ? {} : { leaf }) });
}
