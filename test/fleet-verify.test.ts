import test from 'ava';
import { appendFile, cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { sealkit } from './helpers/cli.ts';
import { replayStream } from '../services/lib/streams.ts';
import { streamNames } from '../services/lib/contract.ts';
import { makeEvent } from '../services/lib/envelope.ts';
import { eventKeyPath } from '../services/lib/fleet.ts';
import { ensureEventKey, EventKey, EventSealer, generateEventKey, newChainState, readEventKey, type SealedEvent } from '../services/lib/eventsig.ts';
import { ChainVerifier, type NodeKeys } from '../services/lib/eventverify.ts';
import { EventPublisher } from '../services/lib/outbox.ts';
import { silentLogger } from '../services/lib/log.ts';

// The auditor as a real process on a real nats-server, following a
// kmsg-format file: its audit.denial events are signed by the node key it
// made on its first start and chained; `sealkit fleet verify` finds them
// whole, through a SIGKILL mid-burst, and flags each kind of tampering with
// copies of them.

let s: NatsServer;
let dir: string;
const running = new Set<RunningService>();

test.before(async () => {
  s = await startNats();
  dir = await mkdtemp(join(tmpdir(), 'sealkit-fleet-verify-'));
});

test.after.always(async () => {
  await Promise.all([...running].map((r) => r.stop('SIGKILL')));
  await s?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

type Node = { name: string; state: string; kmsg: string };

// A node of its own per test: its state (the bus credentials, no event key
// yet) and its kernel log.
async function makeNode(name: string): Promise<Node> {
  const node = { name, state: join(dir, name, 'state'), kmsg: join(dir, name, 'kmsg') };
  await cp(join(s.stateDir, 'bus'), join(node.state, 'bus'), { recursive: true });
  await writeFile(node.kmsg, '');
  return node;
}

async function startAuditor(node: Node): Promise<RunningService> {
  const r = await startService('auditor', {
    SEALKIT_STATE: node.state,
    SEALKIT_NATS_URL: s.url,
    SEALKIT_NODE: node.name,
    SEALKIT_KMSG: node.kmsg,
    SEALKIT_AUDIT_POLL_MS: '20',
    SEALKIT_AUDIT_MAX_PER_SEC: '1000000',
  });
  running.add(r);
  return r;
}

// A denial of a file of its own, so the storm window merges none of them.
function denial(seq: number): string {
  return (
    `5,${seq},${seq * 1000},-;audit: type=1800 audit(1795431129.${String(seq % 1000).padStart(3, '0')}:${seq}): ` +
    `pid=${100 + seq} uid=0 auid=4294967295 ses=4294967295 subj=unconfined op=appraise_data cause=invalid-hash ` +
    `comm="cat" name="/opt/f${seq}" dev="overlay" ino=${seq} res=0 errno=0\n`
  );
}

// What the node's streams hold from this node, oldest first, as parsed JSON.
async function stored(node: string): Promise<SealedEvent[]> {
  const admin = await s.connectAs('admin');
  const out: SealedEvent[] = [];
  try {
    for (const stream of [streamNames.audit, streamNames.events]) {
      await replayStream(admin, stream, '>', (data) => {
        const ev = JSON.parse(Buffer.from(data).toString('utf8')) as SealedEvent;
        if (ev.source.endsWith(`/${node}`)) out.push(ev);
      });
    }
  } finally {
    await admin.close();
  }
  return out;
}

async function denialsStored(node: string, n: number): Promise<SealedEvent[]> {
  for (const deadline = Date.now() + 60_000; ; ) {
    const evs = await stored(node);
    const seqs = new Set(evs.filter((e) => e.type === 'audit.denial').map((e) => (e.data as { kernel: { seq: number } }).kernel.seq));
    if (seqs.size >= n) return evs;
    if (Date.now() > deadline) throw new Error(`only ${seqs.size} of ${n} denials of ${node} reached the stream`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const jsonLines = (evs: unknown[]) => evs.map((e) => JSON.stringify(e)).join('\n') + '\n';

async function writeKeys(keys: Record<string, string>): Promise<string> {
  const file = join(dir, `keys-${Object.keys(keys).join('-')}.yaml`);
  await writeFile(file, Object.entries(keys).map(([n, k]) => `${n}: ${k}`).join('\n') + '\n');
  return file;
}

// the real node's events, shared by the forgery tests
let real: Promise<{ node: Node; events: SealedEvent[]; key: string }> | undefined;

function realNode(): NonNullable<typeof real> {
  return (real ??= runRealNode());
}

async function runRealNode() {
  const node = await makeNode('node-a');
  const auditor = await startAuditor(node);
  await appendFile(node.kmsg, Array.from({ length: 20 }, (_, i) => denial(i + 1)).join(''));
  const events = (await denialsStored(node.name, 20)).filter((e) => e.type === 'audit.denial');
  await auditor.stop();
  const key = await readEventKey(eventKeyPath(node.state));
  return { node, events, key: key.publicKey };
}

test.serial('a real service signs and chains its events with the node key it made, and fleet verify finds them whole', async (t) => {
  const { node, events, key } = await realNode();
  const file = await readEventKey(eventKeyPath(node.state));
  t.is(file.node, 'node-a');
  t.is(file.publicKey, key);
  t.deepEqual(events.map((e) => e.sealkitseq), Array.from({ length: 20 }, (_, i) => i + 1));
  t.true(events.every((e) => e.sealkitchain === 'audit' && e.sealkitepoch === events[0].sealkitepoch && typeof e.sealkitsig === 'string'));

  const keys = await writeKeys({ 'node-a': key });
  const r = await sealkit(['fleet', 'verify', '--server', s.url, '--creds', join(s.credsDir, 'admin.json'), '--stream', `${streamNames.audit},${streamNames.events}`, '--keys', keys, '--from-start']);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /^sealkit\/auditor\/node-a: audit 1\.\.20 \(20 events, epoch [0-9a-f]{16}\); 20 ok$/m);
  t.regex(r.stdout, /^20 events, no problems$/m);
});

test.serial('each kind of tampering is flagged with its kind', async (t) => {
  const { events, key } = await realNode();
  const other = generateEventKey('node-b');
  const stranger = generateEventKey('node-x');
  const registry: NodeKeys = new Map([['node-a', key], ['node-b', other.publicKey]]);
  const verdicts = (evs: unknown[]) => {
    const v = new ChainVerifier(registry);
    return { out: evs.map((e) => v.check(e)), gaps: v.gaps() };
  };
  const clean = verdicts(events);
  t.true(clean.out.every((r) => r.kind === 'ok'));
  t.deepEqual(clean.gaps, []);

  // another node's key, claiming node-a
  const impostor = new EventSealer(new EventKey(other), newChainState()).seal(makeEvent('auditor', 'audit.denial', { file: '/x' }, { node: 'node-a' })).event;
  t.like(verdicts([...events, impostor]).out[20], { kind: 'forged', reason: 'signed with the key of node node-b, not of node-a' });

  // a node the registry does not know
  const unknown = new EventSealer(new EventKey(stranger), newChainState()).seal(makeEvent('auditor', 'audit.denial', { file: '/x' }, { node: 'node-x' })).event;
  t.like(verdicts([unknown]).out[0], { kind: 'forged', reason: 'node node-x is not in the registry' });

  // a payload changed after signing
  const altered = structuredClone(events);
  (altered[4].data as { file: string }).file = '/opt/innocent';
  const a = verdicts(altered);
  t.like(a.out[4], { kind: 'altered', seq: 5 });
  t.deepEqual(a.gaps.map((g) => [g.from, g.to]), [[5, 5]]); // the genuine seq 5 never came

  // an event removed in the middle
  const removed = verdicts([...events.slice(0, 9), ...events.slice(10)]);
  t.like(removed.out[9], { kind: 'ok', seq: 11, gap: { from: 10, to: 10, chain: 'audit', publisher: 'sealkit/auditor/node-a' } });
  t.deepEqual(removed.gaps.map((g) => [g.from, g.to]), [[10, 10]]);

  // two swapped
  const swapped = [...events];
  [swapped[6], swapped[7]] = [swapped[7], swapped[6]];
  const sw = verdicts(swapped);
  t.like(sw.out[6], { kind: 'ok', seq: 8, gap: { from: 7, to: 7 } });
  t.like(sw.out[7], { kind: 'reordered', seq: 7 });
  t.deepEqual(sw.gaps, []);

  // a duplicate
  const dup = verdicts([...events.slice(0, 12), events[11], ...events.slice(12)]);
  t.like(dup.out[12], { kind: 'duplicate', seq: 12 });
  t.is(dup.out.filter((r) => r.kind !== 'ok').length, 1);

  // unsigned
  const { sealkitsig: _sig, ...bare } = events[0];
  t.like(verdicts([bare]).out[0], { kind: 'forged', reason: 'unsigned' });

  // all of it through the command, from a file
  const tampered = [...altered.slice(0, 9), ...altered.slice(10)];
  [tampered[6], tampered[7]] = [tampered[7], tampered[6]];
  tampered.push(events[19], impostor, unknown);
  const input = join(dir, 'tampered.jsonl');
  await writeFile(input, jsonLines(tampered));
  const r = await sealkit(['fleet', 'verify', '--file', input, '--keys', await writeKeys({ 'node-a': key, 'node-b': other.publicKey })]);
  t.is(r.code, 1, r.stdout + r.stderr);
  for (const line of [
    /^altered +sealkit\/auditor\/node-a audit seq 5 audit\.denial id \S+: the signature of node-a does not verify/m,
    /^reordered +sealkit\/auditor\/node-a audit seq 7 /m,
    /^duplicate +sealkit\/auditor\/node-a audit seq 20 /m,
    /^forged +sealkit\/auditor\/node-a audit seq 1 audit\.denial id \S+: signed with the key of node node-b/m,
    /^forged +sealkit\/auditor\/node-x audit seq 1 audit\.denial id \S+: node node-x is not in the registry/m,
    /^missing +sealkit\/auditor\/node-a audit seq 5 \(epoch [0-9a-f]{16}\): never arrived$/m,
    /^missing +sealkit\/auditor\/node-a audit seq 10 /m,
  ]) t.regex(r.stdout, line);
  t.notRegex(r.stdout, /^missing .* seq 7 /m);
  t.regex(r.stdout, /^sealkit\/auditor\/node-a: audit 1\.\.20 \(18 events, 2 missing, epoch [0-9a-f]{16}\); 17 ok; 1 forged, 1 altered, 1 reordered, 1 duplicate$/m);
});

test.serial('an auditor killed mid-burst and started again continues its chain without a gap', async (t) => {
  const node = await makeNode('node-kill');
  const first = await startAuditor(node);
  const N = 3000;
  await appendFile(node.kmsg, Array.from({ length: N }, (_, i) => denial(i + 1)).join(''));
  // killed once some of the burst is out, the rest still being read and sent
  await denialsStored(node.name, 200);
  first.proc.kill('SIGKILL');
  await first.stop();
  running.delete(first);
  const second = await startAuditor(node);
  const evs = await denialsStored(node.name, N);
  await second.stop();

  const { publicKey } = await readEventKey(eventKeyPath(node.state));
  const v = new ChainVerifier(new Map([[node.name, publicKey]]), { fromStart: true });
  const problems = evs.map((e) => v.check(e)).filter((r) => r.kind !== 'ok');
  t.deepEqual(problems, []);
  t.deepEqual(v.gaps(), []);
  const [summary] = v.summary();
  t.is(summary.chains.length, 1, 'one epoch: the restart continued the chain');
  t.log(`${evs.length} events stored, ${evs.filter((e) => e.sealkitfor).length} stand-ins for refused duplicates; chain ${summary.chains[0].first}..${summary.chains[0].last}`);

  const r = await sealkit(['fleet', 'verify', '--server', s.url, '--creds', join(s.credsDir, 'admin.json'), '--stream', streamNames.audit, '--keys', eventKeyPath(node.state)]);
  t.regex(r.stdout, new RegExp(`^sealkit/auditor/node-kill: audit 1\\.\\.\\d+ \\(\\d+ events, epoch`, 'm'));
  t.notRegex(r.stdout, /^(missing|forked|altered|forged) .*node-kill/m);
});

test.serial('services of one node racing to make its event key all get the same one', async (t) => {
  const state = join(dir, 'race');
  const made = await Promise.all(Array.from({ length: 8 }, () => ensureEventKey(state, 'node-r')));
  t.is(made.filter((m) => m.created).length, 1);
  t.is(new Set(made.map((m) => m.key.publicKey)).size, 1);
  t.deepEqual(await readEventKey(eventKeyPath(state)), made[0].key);
  t.is((await ensureEventKey(state, 'node-r')).created, false);
});

test.serial('fleet verify names a bad line, an unreadable file and a missing registry', async (t) => {
  const keys = await writeKeys({ 'node-z': generateEventKey('node-z').publicKey });
  const bad = join(dir, 'bad.jsonl');
  await writeFile(bad, '{"specversion":"1.0"}\n\nnot json\n');
  const r1 = await sealkit(['fleet', 'verify', '--file', bad, '--keys', keys]);
  t.is(r1.code, 2);
  t.regex(r1.stderr, /bad\.jsonl: line 3 is not JSON/);
  const r2 = await sealkit(['fleet', 'verify', '--file', join(dir, 'absent.jsonl'), '--keys', keys]);
  t.is(r2.code, 2);
  t.regex(r2.stderr, /cannot read .*absent\.jsonl: ENOENT/);
  const r3 = await sealkit(['fleet', 'verify', '--server', s.url, '--creds', join(s.credsDir, 'admin.json'), '--stream', streamNames.audit]);
  t.is(r3.code, 1);
  t.regex(r3.stderr, /no registry of node keys: the bucket sealkit-fleet-nodes .* cannot be read/);
  const r4 = await sealkit(['fleet', 'verify', '--file', bad, '--keys', join(dir, 'absent.yaml')]);
  t.regex(r4.stderr, /cannot read .*absent\.yaml/);
});

test.serial('an event the stream refuses as a duplicate id leaves no gap: a signed stand-in takes its seq', async (t) => {
  const nc = await s.connectAs('fetcher');
  const key = new EventKey(generateEventKey('node-dup'));
  const outbox = join(dir, 'node-dup', 'outbox');
  const publisher = async () => {
    const p = new EventPublisher({ nc, service: 'fetcher', node: 'node-dup', dir: outbox, log: silentLogger, key });
    await p.init();
    return p;
  };
  const first = await publisher();
  await first.publish('image.verified', { n: 1 }, { id: 'verified-once' });
  t.true(await first.flush());
  first.close();
  // a restarted service doing the same work again, under the same id
  const second = await publisher();
  await second.publish('image.verified', { n: 1 }, { id: 'verified-once' });
  await second.publish('image.rejected', { n: 2 });
  t.true(await second.flush());
  second.close();
  await nc.close();

  const evs = await stored('node-dup');
  t.deepEqual(evs.map((e) => [e.type, e.sealkitseq]), [['image.verified', 1], ['image.rejected', 3], ['events.duplicate', 2]]);
  t.like(evs[2].data, { id: 'verified-once', type: 'image.verified' });
  const v = new ChainVerifier(new Map([['node-dup', key.publicKey]]), { fromStart: true });
  t.deepEqual(evs.map((e) => v.check(e).kind), ['ok', 'ok', 'ok']);
  t.deepEqual(v.gaps(), []);
});

test.serial('signals are signed, outside every chain', async (t) => {
  const nc = await s.connectAs('nodeinfo');
  const key = new EventKey(generateEventKey('node-sig'));
  const p = new EventPublisher({ nc, service: 'nodeinfo', node: 'node-sig', log: silentLogger, key });
  const monitor = await s.connectAs(null);
  const sub = monitor.subscribe('node.heartbeat', { max: 2 });
  await monitor.flush();
  p.emit('node.heartbeat', { node: 'node-sig', services: [] });
  p.emit('node.heartbeat', { node: 'node-sig', services: [] });
  const got: SealedEvent[] = [];
  for await (const m of sub) got.push(JSON.parse(Buffer.from(m.data).toString('utf8')) as SealedEvent);
  p.close();
  await Promise.all([nc.close(), monitor.close()]);
  t.true(got.every((e) => typeof e.sealkitsig === 'string' && e.sealkitseq === undefined));
  const v = new ChainVerifier(new Map([['node-sig', key.publicKey]]));
  t.like(v.check(got[0]), { kind: 'ok', signal: true });
  (got[1].data as { node: string }).node = 'node-other';
  t.like(v.check(got[1]), { kind: 'altered' });
});
