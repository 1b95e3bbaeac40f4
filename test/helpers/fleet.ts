import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import YAML from 'yaml';
import { writeFileAtomic } from '../../services/lib/atomic.ts';
import { eventKeyPath, fleetConfigPath } from '../../services/lib/fleet.ts';
import type { SecretKeyFile } from '../../services/lib/sign.ts';
import { startNats, type Hub, type NatsServer } from './nats.ts';
import { startService, type RunningService } from './service.ts';

export interface FleetNode {
  name: string;
  nats: NatsServer;
  policy: RunningService;
}

// A node of the fleet as an operator sets it up: enrolled on the hub
// (`sealkit fleet enroll`), its own nats-server joined as a leaf with the
// bundle's credentials, the bundle in its state, and the real policy
// service trusting the operator's key.
export async function startFleetNode(hub: Hub, name: string, groups: string[], key: SecretKeyFile): Promise<FleetNode> {
  const enrolled = await hub.enroll(name, groups);
  if (!enrolled.config) throw new Error(`sealkit fleet enroll ${name}: ${enrolled.stderr}`);
  const nats = await startNats({ fleet: enrolled.config });
  await writeFileAtomic(fleetConfigPath(nats.stateDir), JSON.stringify(enrolled.config) + '\n', 0o600);
  await writeFileAtomic(eventKeyPath(nats.stateDir), await readFile(join(hub.dir, 'nodes', name, 'keys', 'events.json')), 0o600);
  const trustPath = join(nats.stateDir, 'trust.yaml');
  await writeFile(trustPath, YAML.stringify({ keys: [{ id: key.id, ed25519: key.ed25519 }] }));
  const policy = await startService('policy', { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: trustPath, SEALKIT_NODE: name });
  return { name, nats, policy };
}

// Teardown of a fleet test file: its nodes, the hub, its work folder.
export async function stopFleet(nodes: FleetNode[], hub: Hub | undefined, work: string | undefined): Promise<void> {
  for (const n of nodes) {
    await n.policy.stop();
    await n.nats.cleanup();
  }
  await hub?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
}
