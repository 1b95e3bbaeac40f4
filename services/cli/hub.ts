// `make hub`: a fleet hub on this machine for development, its state under
// ./state/hub (or $SEALKIT_HUB): created on the first run (one member unless
// SEALKIT_HUB_MEMBERS says more), then every member as its own nats-server,
// restarted when it exits, the fleet's streams and buckets set up. Ctrl-C
// stops the members and leaves nothing running.
import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot } from '../lib/config.ts';
import { asSealkitError, SealkitError } from '../lib/errors.ts';
import { hubReplicas, leafUrls, newHubState } from '../lib/hubconf.ts';
import { ensureHubStreams } from '../lib/hubstreams.ts';
import { shardsOf } from '../lib/hubshards.ts';
import { clientUrls, hubDir, memberConfigPath, readHubState, runningMember, writeHubState } from '../lib/hubstate.ts';
import { connectHub } from './commands/fleet-enroll.ts';
import { defaultHubPorts, hubMembers } from './commands/hub-config.ts';
import { Supervisor } from './supervise.ts';

const dir = hubDir();
const say = (line: string) => process.stdout.write(`${line}\n`);
const supervisor = new Supervisor(say);

let stopping = false;
async function stopAll(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    await supervisor.stop([]);
  }
  process.exit(code);
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    say(`hub: ${sig}; stopping the hub members`);
    void stopAll(0);
  });
}

async function main(): Promise<void> {
  if (!existsSync(join(dir, 'hub.json'))) {
    const n = Number(process.env.SEALKIT_HUB_MEMBERS ?? 1);
    await writeHubState(dir, newHubState(hubMembers({ hosts: Array.from({ length: n }, () => '127.0.0.1'), ...defaultHubPorts })));
  }
  const hub = await readHubState(dir);
  // regenerated: a config from an older sealkit must not linger
  await writeHubState(dir, hub);
  for (const m of hub.members) {
    const pid = runningMember(dir, m.name);
    if (pid !== undefined) throw new Error(`hub member ${m.name} already runs (pid ${pid}); stop it or use another SEALKIT_HUB`);
    supervisor.start({ name: m.name, cmd: 'nats-server', args: ['-c', memberConfigPath(dir, m.name)], cwd: repoRoot });
  }
  const until = Date.now() + 30_000;
  for (;;) {
    try {
      const nc = await connectHub(hub, undefined);
      try {
        await ensureHubStreams(nc, { shards: shardsOf(hub), replicas: hubReplicas(hub.members.length) });
      } finally {
        await nc.close();
      }
      break;
    } catch (err) {
      // a hub this sealkit will not change (the unsharded streams of an
      // older one) is said at once, not waited on
      if (err instanceof SealkitError && err.code === 'SEALKIT_CONFIG') throw err;
      if (Date.now() > until) throw new Error(`the hub did not set up its streams in 30 s (its output is above): ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  const shown = (p: string) => {
    const rel = relative(process.cwd(), p);
    return rel && !rel.startsWith('..') ? rel : p;
  };
  const rel = shown(dir);
  const bin = shown(join(repoRoot, 'bin', 'sealkit'));
  say(`
sealkit dev hub: ${hub.members.length} member(s), clients ${clientUrls(hub.members).join(', ')}, leaf nodes ${leafUrls(hub.members).join(', ')}, state ${dir}
  enroll   ${bin} fleet enroll NODE --groups GROUP${dir !== join(repoRoot, 'state', 'hub') ? ` --dir ${rel}` : ''}
  join     cp -r ${rel}/nodes/NODE/. state/ && make dev     (the node's nats-server joins as a leaf)
  watch    anonymous clients read every node's events: nats sub 'audit.*' -s ${clientUrls(hub.members)[0]}
  stop     Ctrl-C (a member that exits is restarted)
`);
}

main().catch((err: unknown) => {
  const e = asSealkitError(err);
  process.stderr.write(`hub: ${e.message}${e.code !== 'SEALKIT_INTERNAL' ? ` [${e.code}]` : ''}\n`);
  void stopAll(1);
});
