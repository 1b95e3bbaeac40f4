import test, { type ExecutionContext } from 'ava';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { makeAdmin, policyYaml, signPolicy, type Admin } from './helpers/policy.ts';
import { PolicyFollower } from '../services/lib/policy-follow.ts';
import { createLogger } from '../services/lib/log.ts';
import { readTrust, generateKey, type SecretKeyFile } from '../services/lib/sign.ts';
import { retry } from '../services/lib/backoff.ts';
import { sha256Hex } from '../services/lib/digest.ts';
import { policyBucket, policyKey } from '../services/lib/subjects.ts';
import type { SignedPolicy } from '../services/lib/policy.ts';

// How fetcher, importer and ima learn the policy in force: a watch on the KV
// record, verified against the bootstrap trust, higher serials only. Records
// go into the bucket here without any policy.applied event, so what the
// follower takes it has seen through the watch.

let nats: NatsServer;
let admin: Admin;
test.before(async () => {
  nats = await startNats();
  admin = await makeAdmin(nats.stateDir);
});
test.after.always(async () => {
  await nats?.cleanup();
});

async function store(serial: number, key: SecretKeyFile = admin.key): Promise<void> {
  const nc = await nats.connectAs('admin');
  const yaml = policyYaml({ serial });
  const rec: SignedPolicy = { yaml, ...signPolicy(yaml, key), serial, sha256: sha256Hex(yaml), appliedAt: new Date().toISOString() };
  await (await nc.jetstream().views.kv(policyBucket, { bindOnly: true })).put(policyKey, new TextEncoder().encode(JSON.stringify(rec)));
  await nc.close();
}

// a follower on the fetcher's bus credentials, with its log kept
async function follower(t: ExecutionContext) {
  const nc = await nats.connectAs('fetcher');
  t.teardown(() => nc.close());
  const lines: Array<Record<string, any>> = [];
  const f = new PolicyFollower(nc, await readTrust(admin.trustPath), createLogger({}, { write: (l) => lines.push(JSON.parse(l)) }));
  const changes: Array<[number, number | null]> = [];
  f.onChange((p, prev) => void changes.push([p.serial, prev?.serial ?? null]));
  return { f, lines, changes };
}

async function until(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !cond(); ) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test.serial('the policy stored at start is in force when start returns, and each later one is followed', async (t) => {
  await store(1);
  const { f, changes } = await follower(t);
  await f.start();
  t.is(f.policy?.serial, 1);
  await store(2);
  await until('serial 2 in force', () => f.policy?.serial === 2);
  t.deepEqual(changes, [[1, null], [2, 1]]);
});

test.serial('a record the bootstrap trust does not verify, or an older serial, is not obeyed, and the watch goes on', async (t) => {
  await store(3);
  const { f, lines, changes } = await follower(t);
  await f.start();
  await store(4, generateKey('intruder'));
  await until('the untrusted record refused', () => lines.some((r) => r.msg === 'policy in the KV bucket failed verification; keeping the one in force' && r.err?.code === 'SEALKIT_KEY_UNTRUSTED'));
  await store(2);
  await until('the replayed serial ignored', () => lines.some((r) => r.msg === 'policy in the KV bucket is older than the one in force; ignored' && r.serial === 2));
  t.is(f.policy?.serial, 3);
  await store(5);
  await until('serial 5 in force', () => f.policy?.serial === 5);
  t.deepEqual(changes, [[3, null], [5, 3]]);
});

test.serial('the follower goes on following through a restart of nats-server', async (t) => {
  const { f, changes } = await follower(t);
  await f.start();
  await store(6);
  await until('serial 6 in force', () => f.policy?.serial === 6);
  await nats.restart();
  // JetStream answers a moment after the port does
  await retry(() => store(7), { firstMs: 100, maxMs: 1000 });
  await until('serial 7 in force after the restart', () => f.policy?.serial === 7);
  t.deepEqual(changes.slice(-2), [[6, 5], [7, 6]]);
});
