import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import nacl from 'tweetnacl';
import { bootVm, ensureFleetIso, freePort, takeTestStateTurn, testStateDir, type Vm } from './helpers/qemu.ts';
import { EventLog } from './helpers/events.ts';
import { spawnReadme } from './helpers/readme.ts';
import { cmdline, killAll, type Shell } from './helpers/make.ts';
import { repoRoot } from '../services/lib/config.ts';
import { policyYaml } from './helpers/policy.ts';
import { sha256 } from './helpers/images.ts';
import { fleetConfigPath, nodesBucket, type EventKeyFile, type FleetNodeConfig, type FleetNodeEntry } from '../services/lib/fleet.ts';
import { ensureHubStreams } from '../services/lib/hubstreams.ts';
import { sealkit } from './helpers/cli.ts';
import { hubMemberConfig, newHubState, newSecret, type HubState } from '../services/lib/hubconf.ts';
import { bundleDir, guestHub, readBundle } from '../iso/fleet.ts';
import { writeFileAtomic } from '../services/lib/atomic.ts';

// The fleet as an operator deploys it: a hub (real nats-server, config from
// services/lib/hubconf.ts) on the host; two nodes, each enrolled with its
// own leaf user and event key, built with their own NODE (each ISO carries
// only its own enrolment) and booted in QEMU at the same time, n1 by the
// README's `make run NODE=n1`; their restricted user network lets them reach
// the hub only through the guestfwd 10.0.2.100:7422. Both join as leaf
// nodes; one `sealkit fleet push` to their group is applied
// by both (their policy.applied reaches the hub); and the kernel IMA denials
// provoked on n2 by the ima-kernel test case (its own image: n1's, the
// node's, has none) arrive at the hub naming n2.

const minutes = (n: number) => n * 60_000;
const nodes = ['n1', 'n2'] as const;
const group = 'web';

interface Hub {
  state: HubState;
  dir: string;
  url: string;
  leafs(): Promise<number>; // leaf connections (nats-server 2.9's leafz names no user)
  leafz(): Promise<unknown>;
  stop(): Promise<void>;
}

// One member: the guests reach the host's hub through one guestfwd, and
// three members next to two TCG guests on two cores would slow both.
async function startHub(dir: string, enrolled: Record<string, { groups: string[]; leafPassword: string }>): Promise<Hub> {
  const state = newHubState([{ name: 'hub-1', host: '127.0.0.1', port: await freePort(), clusterPort: await freePort(), leafPort: await freePort(), httpPort: await freePort() }]);
  state.nodes = enrolled;
  const conf = join(dir, 'hub-1.conf');
  await writeFile(conf, hubMemberConfig(state, 'hub-1', { storeDir: join(dir, 'js') }), { mode: 0o600 });
  const proc: ChildProcess = spawn('nats-server', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const m = state.members[0];
  const url = `nats://127.0.0.1:${m.port}`;
  for (let i = 0; ; i++) {
    const nc = await connect({ servers: url, user: state.admin.user, pass: state.admin.password }).catch(() => undefined);
    if (nc) {
      await nc.close();
      break;
    }
    if (i > 100 || proc.exitCode !== null) throw new Error(`the hub did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    state,
    dir,
    url,
    async leafz() {
      return (await fetch(`http://127.0.0.1:${m.httpPort}/leafz?subs=1`)).json();
    },
    async leafs() {
      return ((await (await fetch(`http://127.0.0.1:${m.httpPort}/leafz`)).json()) as { leafnodes: number }).leafnodes;
    },
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

// What `sealkit fleet enroll NODE --group G` leaves for a node: its bundle
// (fleet/node.json, keys/events.json, 0600), and its leaf user on the hub.
// Kept in the tests' state like its admin key, so that the nodes' images
// are rebuilt only when the code changes, as the other test images are.
async function enroll(node: string, hub: string[]): Promise<{ bundle: string; leafPassword: string; eventKey: string }> {
  const bundle = bundleDir(node, join(testStateDir, 'hub'));
  if (existsSync(fleetConfigPath(bundle))) {
    const b = await readBundle(bundle, node);
    if (JSON.stringify(b.config.hub) === JSON.stringify(hub)) return { bundle, leafPassword: b.config.leafPassword, eventKey: b.eventKey.publicKey };
  }
  const leafPassword = newSecret();
  const config: FleetNodeConfig = { node, groups: [group], hub, leafUser: `leaf-${node}`, leafPassword };
  const kp = nacl.sign.keyPair();
  const key: EventKeyFile = { node, publicKey: Buffer.from(kp.publicKey).toString('base64'), secretKey: Buffer.from(kp.secretKey).toString('base64') };
  await writeFileAtomic(fleetConfigPath(bundle), JSON.stringify(config, null, 2) + '\n', 0o600);
  await writeFileAtomic(join(bundle, 'keys', 'events.json'), JSON.stringify(key, null, 2) + '\n', 0o600);
  return { bundle, leafPassword, eventKey: key.publicKey };
}

test('in QEMU: two nodes built with their own NODE join the hub on the host, one fleet push reaches both, and a kernel denial on one arrives at the hub naming it', async (t) => {
  t.timeout(minutes(40));
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-iso-fleet-'));
  await mkdir(dir, { recursive: true });
  const vms: Vm[] = [];
  let hub: Hub | undefined;
  let watch: NatsConnection | undefined;
  let admin: NatsConnection | undefined;
  let events: EventLog | undefined;
  let run: Shell | undefined;
  let qemuPid: number | undefined;
  let endTurn: (() => Promise<void>) | undefined;
  try {
    // the guests dial the hub where the guestfwd is, as make run builds them
    const guestUrl = [`nats-leaf://${guestHub.host}:${guestHub.port}`];
    const enrolled: Record<string, { bundle: string; leafPassword: string; eventKey: string }> = {};
    for (const n of nodes) enrolled[n] = await enroll(n, guestUrl);
    hub = await startHub(dir, Object.fromEntries(nodes.map((n) => [n, { groups: [group], leafPassword: enrolled[n].leafPassword }])));

    // n2 carries the ima-kernel test case: the kernel refuses its tampered files at boot
    const t0 = Date.now();
    const n2Iso = await ensureFleetIso({ node: 'n2', bundle: enrolled.n2.bundle, hub: guestUrl }, 'ima-kernel', (l) => t.log(l));
    t.log(`n2: ISO ${n2Iso.reused ? 'reused' : `built in ${n2Iso.seconds.toFixed(0)} s`}`);

    // the hub's anonymous monitor: every node's live events
    watch = await connect({ servers: hub.url, name: 'iso-fleet-watch' });
    events = new EventLog(watch, ['audit.*', 'policy.applied']);
    await watch.flush();
    admin = await connect({ servers: hub.url, name: 'iso-fleet-admin', user: hub.state.admin.user, pass: hub.state.admin.password });
    // the hub's side of the enrolment: its streams sourcing both nodes, and
    // the registry of their groups and event keys (fleet push counts an
    // answer only when the node's enrolled key signed it)
    await ensureHubStreams(admin, { shards: [[...nodes]], replicas: 1 });
    const registry = await admin.jetstream().views.kv(nodesBucket, { bindOnly: true });
    for (const n of nodes) {
      const entry: FleetNodeEntry = { node: n, groups: [group], eventKey: enrolled[n].eventKey, leafUser: `leaf-${n}`, enrolledAt: new Date().toISOString() };
      await registry.put(n, Buffer.from(JSON.stringify(entry)));
    }
    const creds = join(dir, 'admin.json');
    await writeFileAtomic(creds, JSON.stringify(hub.state.admin), 0o600);

    // n1 as the README boots it against a hub on this machine (HUB: where
    // that hub's leaf port is here); n2 alongside, from its test image
    const leafPort = hub.state.members[0].leafPort;
    endTurn = await takeTestStateTurn();
    run = spawnReadme('make run NODE=n1', { cwd: repoRoot, env: { ...process.env, SEALKIT_STATE: testStateDir, SEALKIT_BUS_PORT: String(await freePort()), HUB: `127.0.0.1:${leafPort}` } });
    qemuPid = Number((await run.waitFor(/booting in QEMU \(pid (\d+)\)/, minutes(20)))[1]);
    const built = run.output().match(/iso: \S+ [\d.]+ MB sha256 \w+ in ([\d.]+)s/);
    t.log(`n1: ISO ${built ? `built by make run in ${built[1]} s` : 'reused by make run'}; both ISOs ready ${((Date.now() - t0) / 1000).toFixed(0)} s after the test began`);
    const booted = Date.now();
    vms.push(await bootVm({ kernel: n2Iso.kernel, initrd: n2Iso.initrd, append: n2Iso.cmdline, hub: { host: '127.0.0.1', port: leafPort } }));
    t.true(cmdline(qemuPid).includes(`guestfwd=tcp:${guestHub.host}:${guestHub.port}-cmd:busybox nc 127.0.0.1 ${leafPort}`), 'make run forwards the guest to the hub');
    // which node is which the hub learns from their events below
    const joinedAt: number[] = [];
    while (joinedAt.length < nodes.length) {
      const n = await hub.leafs();
      while (joinedAt.length < n) joinedAt.push((Date.now() - booted) / 1000);
      if (Date.now() - booted > minutes(15)) throw new Error(`${joinedAt.length} of ${nodes.length} leaf nodes joined within 15 min`);
      await new Promise((r) => setTimeout(r, 500));
    }
    t.log(`leaf nodes joined the hub ${joinedAt.map((s) => s.toFixed(1)).join(' s and ')} s after QEMU started`);

    // n2's kernel refused its tampered files at boot (the ima-kernel case's
    // own record on its console, which was iso-ima's proof, here on the
    // boot it shares) ...
    await vms[0].waitFor(/IMA-KERNEL (done|skip)/, minutes(8));
    imaKernelRefuses(t, vms[0].console());
    // ... and the denials reach the hub, named n2
    const denial = await events.wait((e) => e.type === 'audit.denial' && e.source === 'sealkit/auditor/n2' && String(e.data.file).endsWith('/ext4/bad'), minutes(10));
    t.is(denial.data.cause, 'invalid-hash');
    t.false(events.of('audit.denial').some((e) => e.source !== 'sealkit/auditor/n2'), 'no denial from another node');

    // one fleet push to the group: both apply it, and their signed answers
    // reach the hub (the operator's command exits 0 only when both did)
    const yaml = policyYaml({ serial: 1, images: [], ima: { mode: 'enforce' } });
    const file = join(dir, 'policy.yaml');
    await writeFile(file, yaml);
    const pushed = Date.now();
    const push = await sealkit(['fleet', 'push', file, '--group', group, '--key', join(testStateDir, 'keys', 'admin.key'), '--timeout', '600', '--server', hub.url, '--creds', creds], {}, { timeoutMs: minutes(11) });
    t.is(push.code, 0, push.stdout + push.stderr);
    t.regex(push.stdout, /^n1 +applied +serial 1$/m);
    t.regex(push.stdout, /^n2 +applied +serial 1$/m);
    const appliedBy = (n: string) => (e: { type: string; source: string; data: Record<string, unknown> }) => e.type === 'policy.applied' && e.source === `sealkit/policy/${n}` && e.data.serial === 1;
    const applied = await Promise.all(nodes.map((n) => events!.wait(appliedBy(n), minutes(10))));
    for (const a of applied) t.is(a.data.sha256, sha256(Buffer.from(yaml)), `${a.source}: the pushed bytes are in force`);
    t.log(`push to both applied: ${((Date.now() - pushed) / 1000).toFixed(1)} s`);

  } catch (err) {
    if (hub) t.log(`hub leafz: ${JSON.stringify(await hub.leafz().catch((e: Error) => e.message))}`);
    t.log(`events at the hub: ${JSON.stringify(events?.of('audit.denial').concat(events.of('policy.applied')).map((e) => `${e.type} ${e.source}`))}`);
    throw err;
  } finally {
    events?.close();
    await watch?.close();
    await admin?.close();
    if (run && !run.done()) {
      run.signal('SIGINT'); // Ctrl-C: make run powers n1 off
      await Promise.race([run.exited, new Promise((r) => setTimeout(r, 60_000))]);
    }
    if (qemuPid) killAll([qemuPid]);
    await endTurn?.();
    for (const vm of vms) t.log(`power off: ${await vm.powerOff()}`);
    await hub?.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

// Kernel IMA appraisal really enforces in the node's kernel: with
// ima_appraise=enforce and one policy written at boot, a file whose
// security.ima does not match its content cannot be opened (EACCES) and the
// kernel logs type=1800 cause="invalid-hash". The guest side is the test
// case test/cases/ima-kernel (its own image: the node's never has it).
function imaKernelRefuses(t: ExecutionContext, console: string): void {
  const lines = console.split(/\r?\n/).filter((l) => l.includes('IMA-KERNEL')).map((l) => l.slice(l.indexOf('IMA-KERNEL') + 11));
  t.log(lines.join('\n'));
  const has = (s: string) => t.true(lines.some((l) => l.startsWith(s)), `expected "${s}"`);
  has('policy written');
  has('policy file gone after the write'); // one write per boot
  has('second write refused');
  // ext4, named by fsuuid
  has('read ext4-good allowed');
  has("read ext4-bad denied: cat: can't open '/run/imatest/ext4/bad': Permission denied");
  has('read ext4-none denied');
  // overlayfs (how containerd presents a container rootfs), named by fsmagic
  has('read overlay-good allowed');
  has('read overlay-bad denied');
  has('read overlay-none denied');
  // the same tampered file outside the policy's scope is not appraised
  has('read tmpfs-bad-direct allowed');
  t.true(
    lines.some((l) => /kmsg .*audit: type=1800 .*op=appraise_data cause=invalid-hash comm="cat" name="\/run\/imatest\/ext4\/bad" dev="loop\d+"/.test(l)),
    'the kernel logs the denial as type=1800 cause="invalid-hash"',
  );
  t.true(lines.some((l) => /kmsg .*type=1800 .*cause=missing-hash .*name="\/run\/imatest\/merged\/none" dev="overlay"/.test(l)));
}
