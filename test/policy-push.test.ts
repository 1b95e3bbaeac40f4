import test from 'ava';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { makeAdmin, policyYaml, pushPolicy, type Admin } from './helpers/policy.ts';
import { EventLog } from './helpers/events.ts';
import { request } from '../services/lib/bus.ts';
import { policyBucket, policyKey } from '../services/lib/subjects.ts';
import { verifySignedPolicy, type SignedPolicy } from '../services/lib/policy.ts';
import { generateKey } from '../services/lib/sign.ts';

let nats: NatsServer;
let admin: Admin;
let svc: RunningService;

test.before(async () => {
  nats = await startNats();
  admin = await makeAdmin(nats.stateDir);
  svc = await startService('policy', { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: admin.trustPath });
});

test.after.always(async () => {
  await svc?.stop();
  await nats?.cleanup();
});

const image = (name: string, sha: string) => ({ name, tag: '1', source: `https://images.example/${name.replace('/', '-')}.tar`, sha256: sha.repeat(64) });

test.serial('a signed push is applied, stored in KV, announced, and reported with what changed', async (t) => {
  const anon = await nats.connectAs(null);
  const log = new EventLog(anon, 'policy.applied');
  await anon.flush();
  const releaseKey = generateKey('release-2026');
  const yaml = policyYaml({
    serial: 1,
    keys: [{ id: 'release-2026', ed25519: releaseKey.ed25519 }],
    images: [{ ...image('mozsecure/centos6', 'a'), signatures: { keys: ['release-2026'], threshold: 1 } }],
    ima: { mode: 'enforce', reverify: '10m' },
  });
  const pushNc = await nats.connectAs('admin');
  const reply = await pushPolicy(pushNc, yaml, admin.key);
  t.is(reply.serial, 1);
  t.deepEqual((reply.changes as { images: { added: string[] } }).images.added, ['mozsecure/centos6']);

  const ev = await log.wait('policy.applied');
  t.is(ev.data.serial, 1);
  t.is(ev.specversion, '1.0');
  t.regex(ev.source, /^sealkit\/policy\//);

  // the KV copy is the exact signed record, verifiable by any consumer
  const kv = await anon.jetstream().views.kv(policyBucket, { bindOnly: true });
  const rec = JSON.parse((await kv.get(policyKey))!.string()) as SignedPolicy;
  t.is(rec.yaml, yaml);
  t.is(verifySignedPolicy(rec, [{ id: admin.key.id, ed25519: admin.key.ed25519 }], 'kv').serial, 1);

  // an anonymous monitor may read the policy in force
  const shown = await request<{ serial: number; summary: { images: string[] } }>(anon, 'policy.get', {});
  t.is(shown.serial, 1);
  t.is(shown.summary.images.length, 1);

  const second = await pushPolicy(pushNc, policyYaml({ serial: 2, images: [image('library/alpine', 'b')] }), admin.key);
  t.deepEqual((second.changes as { images: { added: string[]; removed: string[] } }).images, { added: ['library/alpine'], removed: ['mozsecure/centos6'], changed: [] } as never);
  t.deepEqual((second.changes as { keys: { removed: string[] } }).keys.removed, ['release-2026']);
  await pushNc.close();
  await anon.close();
});
