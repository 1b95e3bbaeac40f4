import test from 'ava';
import { readFile, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService } from './helpers/service.ts';
import { makeAdmin, policyYaml, pushPolicy, type Admin } from './helpers/policy.ts';
import { EventLog } from './helpers/events.ts';
import { request } from '../services/lib/bus.ts';
import { isSealkitError } from '../services/lib/errors.ts';

let nats: NatsServer;
let admin: Admin;

test.before(async () => {
  nats = await startNats();
  admin = await makeAdmin(nats.stateDir);
});
test.after.always(async () => {
  await nats?.cleanup();
});

const env = () => ({ SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: admin.trustPath });
const yaml = (serial: number) => policyYaml({ serial, images: [{ name: 'library/busybox', tag: String(serial), source: 'file:///images/busybox.tar', sha256: 'd'.repeat(64) }] });
const current = () => join(nats.stateDir, 'policy', 'current.json');
// a service a failed assertion leaves running must not disturb the next test
const start = async (t: import('ava').ExecutionContext) => {
  const svc = await startService('policy', env());
  t.teardown(() => svc.stop());
  return svc;
};

test.serial('the policy survives a restart of the service, and its serial still cannot be replayed', async (t) => {
  const nc = await nats.connectAs('admin');
  let svc = await start(t);
  await pushPolicy(nc, yaml(1), admin.key);
  await pushPolicy(nc, yaml(2), admin.key);
  t.is(await svc.stop(), 0, 'SIGTERM drains and exits 0');

  svc = await start(t);
  t.is((await request<{ serial: number }>(nc, 'policy.get', {})).serial, 2);
  const err = await t.throwsAsync(pushPolicy(nc, yaml(2), admin.key));
  t.true(isSealkitError(err, 'SEALKIT_POLICY_ROLLBACK'));
  await svc.stop();
  await nc.close();
});

test.serial('a corrupted policy file on disk is refused, the last good policy stays in force, and audit.policy says so', async (t) => {
  const nc = await nats.connectAs('admin');
  const audit = new EventLog(await nats.connectAs(null), 'audit.policy');
  let svc = await start(t);
  await pushPolicy(nc, yaml(3), admin.key);
  await svc.stop();

  // someone edits the stored YAML without the admin key
  const rec = JSON.parse(await readFile(current(), 'utf8'));
  rec.yaml = rec.yaml.replace('file:///images/busybox.tar', 'file:///images/evil.tar');
  await writeFile(current(), JSON.stringify(rec));

  const seen = audit.next((e) => e.data.action === 'load');
  svc = await start(t);
  const ev = await seen;
  t.is(ev.data.code, 'SEALKIT_SIGNATURE_INVALID');
  t.is(ev.data.inForce, 3, 'the history copy of serial 3 is in force');
  const shown = await request<{ serial: number; yaml: string }>(nc, 'policy.get', {});
  t.is(shown.serial, 3);
  t.false(shown.yaml.includes('evil'));
  await svc.stop();
  await nc.close();
});

test.serial('an unsigned or garbled file on disk is never used', async (t) => {
  const nc = await nats.connectAs('admin');
  const audit = new EventLog(await nats.connectAs(null), 'audit.policy');
  let svc = await start(t);
  await pushPolicy(nc, yaml(4), admin.key);
  await svc.stop();

  const rec = JSON.parse(await readFile(current(), 'utf8'));
  delete rec.signature;
  await writeFile(current(), JSON.stringify(rec));
  // and the newest history entry is garbage too
  const hist = join(nats.stateDir, 'policy', 'history', `${String(4).padStart(12, '0')}.json`);
  await writeFile(hist, '{"yaml": "truncat');

  const seen = audit.next((e) => e.data.action === 'load' && e.data.file === hist);
  svc = await start(t);
  await seen;
  t.is((await request<{ serial: number }>(nc, 'policy.get', {})).serial, 3, 'falls back to the newest history entry that verifies');
  // the highest serial ever accepted still bounds what may be pushed
  t.true(isSealkitError(await t.throwsAsync(pushPolicy(nc, yaml(4), admin.key)), 'SEALKIT_POLICY_ROLLBACK'));
  t.is((await pushPolicy(nc, yaml(5), admin.key)).serial, 5);
  await svc.stop();
  await nc.close();
});

test.serial('a validly signed older policy copied over current.json is a rollback, not obeyed', async (t) => {
  const nc = await nats.connectAs('admin');
  const audit = new EventLog(await nats.connectAs(null), 'audit.policy');
  const old = await readFile(join(nats.stateDir, 'policy', 'history', `${String(3).padStart(12, '0')}.json`), 'utf8');
  await writeFile(current(), old);
  const seen = audit.next((e) => e.data.code === 'SEALKIT_POLICY_ROLLBACK');
  const svc = await start(t);
  await seen;
  t.is((await request<{ serial: number }>(nc, 'policy.get', {})).serial, 5);
  await svc.stop();
  await nc.close();
});

test.serial('a node with no policy answers with a clear error code', async (t) => {
  await rm(join(nats.stateDir, 'policy'), { recursive: true, force: true });
  const nc = await nats.connectAs(null);
  const svc = await start(t);
  t.true(isSealkitError(await t.throwsAsync(request(nc, 'policy.get', {})), 'SEALKIT_POLICY_NONE'));
  await svc.stop();
  await nc.close();
});
