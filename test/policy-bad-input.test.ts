import test from 'ava';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { makeAdmin, policyYaml, pushPolicy, signPolicy, type Admin } from './helpers/policy.ts';
import { EventLog } from './helpers/events.ts';
import { request } from '../services/lib/bus.ts';
import { generateKey } from '../services/lib/sign.ts';
import { isSealkitError, type ErrorCode } from '../services/lib/errors.ts';
import type { NatsConnection } from 'nats';

let nats: NatsServer;
let admin: Admin;
let svc: RunningService;
let nc: NatsConnection;
let audit: EventLog;

const sha = 'c'.repeat(64);
const good = (serial: number, extra: Record<string, unknown> = {}) =>
  policyYaml({ serial, images: [{ name: 'library/alpine', tag: '3.19', source: 'https://images.example/alpine.tar', sha256: sha }], ...extra });

test.before(async () => {
  nats = await startNats();
  admin = await makeAdmin(nats.stateDir);
  svc = await startService('policy', { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: admin.trustPath });
  nc = await nats.connectAs('admin');
  audit = new EventLog(await nats.connectAs(null), 'audit.*');
  await pushPolicy(nc, good(5), admin.key);
});

test.after.always(async () => {
  await nc?.close();
  await svc?.stop();
  await nats?.cleanup();
});

// Each bad push is refused with its code, changes nothing, and leaves an
// audit.policy record naming the reason.
async function refused(t: import('ava').ExecutionContext, code: ErrorCode, push: () => Promise<unknown>, pathFragment?: string) {
  const seen = audit.next((e) => e.type === 'audit.policy' && e.data.code === code);
  const err = await t.throwsAsync(push);
  t.true(isSealkitError(err, code), `expected ${code}, got ${(err as { code?: string })?.code}: ${err?.message}`);
  if (pathFragment) t.true(err!.message.includes(pathFragment), `message names ${pathFragment}: ${err!.message}`);
  const ev = await seen;
  t.is(ev.data.action, 'push');
  t.is(ev.data.inForce, 5);
  const inForce = await request<{ serial: number }>(nc, 'policy.get', {});
  t.is(inForce.serial, 5, 'the policy in force did not change');
}

test.serial('an unsigned push is refused', (t) => refused(t, 'SEALKIT_SIGNATURE_MISSING', () => pushPolicy(nc, good(6), null)));

test.serial('a push whose bytes differ from what was signed is refused', (t) => {
  const sig = signPolicy(good(6), admin.key);
  return refused(t, 'SEALKIT_SIGNATURE_INVALID', () => pushPolicy(nc, good(6).replace('3.19', '3.20'), null, sig));
});

test.serial('a push signed by a key outside the bootstrap trust is refused', (t) =>
  refused(t, 'SEALKIT_KEY_UNTRUSTED', () => pushPolicy(nc, good(6), generateKey('mallory'))));

test.serial('a signature claiming a trusted key id but made by another key is refused', (t) => {
  const forged = { ...generateKey('admin') };
  return refused(t, 'SEALKIT_SIGNATURE_INVALID', () => pushPolicy(nc, good(6), forged));
});

test.serial('a replayed policy (same serial) is refused', (t) => refused(t, 'SEALKIT_POLICY_ROLLBACK', () => pushPolicy(nc, good(5), admin.key)));

test.serial('a rollback to an older serial is refused', (t) => refused(t, 'SEALKIT_POLICY_ROLLBACK', () => pushPolicy(nc, good(4), admin.key)));

test.serial('an unknown field is an error naming its path', (t) =>
  refused(t, 'SEALKIT_POLICY_SCHEMA', () => pushPolicy(nc, good(6).replace('tag: "3.19"', 'tag: "3.19"\n    tagg: x'), admin.key), 'images[0].tagg'));

test.serial('a field of the wrong type is an error naming its path', (t) =>
  refused(t, 'SEALKIT_POLICY_SCHEMA', () => pushPolicy(nc, policyYaml({ serial: 6, ima: { mode: 'enforce', reverify: true } }), admin.key), 'ima.reverify'));

test.serial('a malformed digest is an error naming its path', (t) =>
  refused(t, 'SEALKIT_POLICY_SCHEMA', () => pushPolicy(nc, good(6).replace(sha, 'abc'), admin.key), 'images[0].sha256'));

test.serial('duplicate image names are an error', (t) => {
  const img = { name: 'library/alpine', tag: '1', source: 'https://x.example/a.tar', sha256: sha };
  return refused(t, 'SEALKIT_POLICY_SCHEMA', () => pushPolicy(nc, policyYaml({ serial: 6, images: [img, { ...img, tag: '2' }] }), admin.key), 'images[1].name');
});

test.serial('plain http without allowHttp is an error', (t) =>
  refused(t, 'SEALKIT_POLICY_SCHEMA', () => pushPolicy(nc, good(6).replace('https://', 'http://'), admin.key), 'images[0].source'));

test.serial('a signature threshold above the number of keys is an error', (t) => {
  const k = generateKey('release');
  const yaml = policyYaml({
    serial: 6,
    keys: [{ id: 'release', ed25519: k.ed25519 }],
    images: [{ name: 'a/b', tag: '1', source: 'https://x.example/a.tar', sha256: sha, signatures: { keys: ['release'], threshold: 2 } }],
  });
  return refused(t, 'SEALKIT_POLICY_SCHEMA', () => pushPolicy(nc, yaml, admin.key), 'threshold');
});

test.serial('a YAML alias bomb is refused before it expands', (t) => {
  const lines = ['apiVersion: sealkit/v1', 'kind: NodePolicy', 'serial: 6', 'a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 12; i++) lines.push(`a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]`);
  return refused(t, 'SEALKIT_POLICY_YAML', () => pushPolicy(nc, lines.join('\n') + '\n', admin.key));
});

test.serial('duplicate mapping keys are refused', (t) =>
  refused(t, 'SEALKIT_POLICY_YAML', () => pushPolicy(nc, good(6) + 'serial: 7\n', admin.key)));

test.serial('more than one YAML document is refused', (t) =>
  refused(t, 'SEALKIT_POLICY_YAML', () => pushPolicy(nc, good(6) + '---\n' + good(7), admin.key)));

test.serial('an oversized document is refused', (t) =>
  refused(t, 'SEALKIT_POLICY_TOO_LARGE', () => pushPolicy(nc, good(6) + `# ${'x'.repeat(300 * 1024)}\n`, admin.key)));

test.serial('a document that is not UTF-8 is refused', (t) =>
  refused(t, 'SEALKIT_POLICY_YAML', () => pushPolicy(nc, Buffer.concat([Buffer.from(good(6)), Buffer.from([0xff, 0xfe, 0x0a])]), admin.key)));

test.serial('after all refusals a good push still applies', async (t) => {
  const reply = await pushPolicy(nc, good(6), admin.key);
  t.is(reply.serial, 6);
});
