import { readFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic.ts';
import { stateDir } from './config.ts';
import { SealkitError } from './errors.ts';
import { hubMemberConfig, type HubMember, type HubState } from './hubconf.ts';
import { writeCreds } from './natsconf.ts';
import { assignShards } from './hubshards.ts';

// The hub's state directory, written by `sealkit hub config` and `sealkit
// fleet enroll`, run by `make hub`:
//   hub.json                          what every config is generated from (0600)
//   creds/admin.json, monitor.json    the operator's and a monitor's credentials
//   members/<name>/nats-server.conf   one per member, with its jetstream/ and pid file
//   nodes/<node>/                     a node's bundle: fleet/node.json, keys/events.json

// the operator's hub, beside the node state of `make dev` unless SEALKIT_HUB says
export function hubDir(): string {
  return process.env.SEALKIT_HUB ?? join(stateDir(), 'hub');
}

export const memberDir = (dir: string, name: string) => join(dir, 'members', name);
export const memberConfigPath = (dir: string, name: string) => join(memberDir(dir, name), 'nats-server.conf');
export const memberPidPath = (dir: string, name: string) => join(memberDir(dir, name), 'nats-server.pid');
export const nodeBundleDir = (dir: string, node: string) => join(dir, 'nodes', node);

export async function readHubState(dir: string): Promise<HubState> {
  const path = join(dir, 'hub.json');
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch (err) {
    throw new SealkitError('SEALKIT_CONFIG', `no hub in ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); run "sealkit hub config --dir ${dir}" first, or pass --dir`);
  }
  const h = JSON.parse(raw) as HubState;
  if (!Array.isArray(h.members) || !h.admin || !h.monitor || !h.cluster || typeof h.nodes !== 'object') {
    throw new SealkitError('SEALKIT_CONFIG', `${path} is not a hub state written by "sealkit hub config"`);
  }
  return h;
}

// hub.json first, then each member's config from it: a crash in between
// leaves configs that the next write regenerates, never a half file.
export async function writeHubState(dir: string, hub: HubState): Promise<string[]> {
  assignShards(hub);
  await writeFileAtomic(join(dir, 'hub.json'), JSON.stringify(hub, null, 2) + '\n', 0o600);
  await writeCreds(join(dir, 'creds'), { admin: hub.admin, monitor: hub.monitor });
  const written: string[] = [];
  for (const m of hub.members) {
    const path = memberConfigPath(dir, m.name);
    const conf = hubMemberConfig(hub, m.name, { storeDir: join(memberDir(dir, m.name), 'jetstream'), pidFile: memberPidPath(dir, m.name), listen: hub.listen });
    await writeFileAtomic(path, conf, 0o600);
    written.push(path);
  }
  return written;
}

export function clientUrls(members: HubMember[]): string[] {
  return members.map((m) => `nats://${m.host}:${m.port}`);
}

// The pid of a member running on this machine from its config, or undefined.
export function runningMember(dir: string, name: string): number | undefined {
  const path = memberPidPath(dir, name);
  if (!existsSync(path)) return undefined;
  const pid = Number(readFileSync(path, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    // a stale pid file may name an unrelated process now
    if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('nats-server')) return undefined;
    return pid;
  } catch {
    return undefined;
  }
}

// Running members re-read their config (SIGHUP is nats-server's reload); the
// names of members not running here are returned for the operator.
export function reloadMembers(dir: string, hub: HubState): { reloaded: string[]; elsewhere: string[] } {
  const reloaded: string[] = [];
  const elsewhere: string[] = [];
  for (const m of hub.members) {
    const pid = runningMember(dir, m.name);
    if (pid === undefined) {
      elsewhere.push(m.name);
      continue;
    }
    process.kill(pid, 'SIGHUP');
    reloaded.push(m.name);
  }
  return { reloaded, elsewhere };
}
