import test from 'ava';
import type { NatsConnection } from 'nats';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { policyBucket, policyKey } from '../services/lib/subjects.ts';

let nats: NatsServer;
test.before(async () => {
  nats = await startNats();
});
test.after.always(async () => {
  await nats?.cleanup();
});

// A core publish the server refuses comes back as an async permissions
// error on the connection; a JetStream publish fails outright.
async function publishRefused(nc: NatsConnection, subject: string): Promise<boolean> {
  try {
    await nc.jetstream().publish(subject, new Uint8Array([1]), { timeout: 1500 });
    return false;
  } catch (err) {
    return /Permissions Violation/i.test((err as Error).message);
  }
}

for (const [user, subject] of [
  ['fetcher', 'audit.denial'],
  ['importer', 'audit.rejected'],
  ['nodeinfo', 'audit.policy'],
  ['ima', 'audit.denial'],
  ['auditor', 'audit.policy'],
  ['policy', 'image.verified'],
  ['fetcher', 'ima.labeled'],
] as const) {
  test(`a client with the ${user} credentials cannot publish ${subject}`, async (t) => {
    const nc = await nats.connectAs(user);
    t.true(await publishRefused(nc, subject));
    await nc.close();
  });
}

test('each service can publish its own audit subject', async (t) => {
  for (const [user, subject] of [['auditor', 'audit.denial'], ['fetcher', 'audit.rejected'], ['policy', 'audit.policy'], ['ima', 'audit.tamper']] as const) {
    const nc = await nats.connectAs(user);
    const ack = await nc.jetstream().publish(subject, new Uint8Array([1]));
    t.is(ack.stream, 'SEALKIT_AUDIT');
    await nc.close();
  }
});

test('an anonymous client cannot push policy, write the policy bucket, or publish events', async (t) => {
  const anon = await nats.connectAs(null);
  await t.throwsAsync(anon.request('policy.push', new Uint8Array([1]), { timeout: 1500 }), { message: /Permissions Violation/ });
  t.true(await publishRefused(anon, `$KV.${policyBucket}.${policyKey}`));
  t.true(await publishRefused(anon, 'audit.denial'));
  t.true(await publishRefused(anon, 'image.verified'));
  await anon.close();
});

test('an anonymous client can read events', async (t) => {
  const anon = await nats.connectAs(null);
  const sub = anon.subscribe('audit.*');
  await anon.flush();
  const auditor = await nats.connectAs('auditor');
  await auditor.jetstream().publish('audit.lost', new TextEncoder().encode('{"probe":"anonymous-read"}'));
  for await (const m of sub) {
    if (new TextDecoder().decode(m.data).includes('anonymous-read')) {
      t.is(m.subject, 'audit.lost');
      break;
    }
  }
  await auditor.close();
  await anon.close();
});

// A JetStream publish carries the publisher's ack inbox as its reply subject,
// and every subscriber of the subject sees it: an anonymous reader that could
// answer there could forge the stream's ack, and the outbox would drop an
// event the stream never stored.
test('an anonymous reader cannot answer a message it reads, so it cannot forge an ack', async (t) => {
  const anon = await nats.connectAs(null);
  const auditor = await nats.connectAs('auditor');
  const reads = anon.subscribe('audit.lost', {
    callback: (_e, m) => {
      if (m.reply) m.respond(new TextEncoder().encode('forged'));
    },
  });
  await anon.flush();
  const inbox = `_INBOX.${Date.now()}`;
  const answers: string[] = [];
  const acks = auditor.subscribe(inbox, { callback: (_e, m) => void answers.push(new TextDecoder().decode(m.data)) });
  await auditor.flush();
  auditor.publish('audit.lost', new TextEncoder().encode('{"probe":"ack-forgery"}'), { reply: inbox });
  await auditor.flush(); // the server has routed it to the reader
  await anon.flush(); // the reader has answered, if it may
  await auditor.flush(); // and what the server let through has arrived here
  t.false(answers.includes('forged'), JSON.stringify(answers));
  t.true(answers.some((a) => a.includes('"stream":"SEALKIT_AUDIT"')), 'the stream itself answered');
  reads.unsubscribe();
  acks.unsubscribe();
  await auditor.close();
  await anon.close();
});

test('only the policy service can write the policy bucket', async (t) => {
  for (const user of ['fetcher', 'importer', 'ima', 'runner', 'auditor', 'nodeinfo'] as const) {
    const nc = await nats.connectAs(user);
    const kv = await nc.jetstream().views.kv(policyBucket, { bindOnly: true });
    await t.throwsAsync(kv.put(policyKey, new Uint8Array([1])), { message: /Permissions Violation/ }, user);
    await nc.close();
  }
  const policy = await nats.connectAs('policy');
  const kv = await policy.jetstream().views.kv(policyBucket, { bindOnly: true });
  t.true((await kv.put('probe', new Uint8Array([1]))) > 0);
  await policy.close();
});

test('a service that follows the policy can watch the bucket, and cannot delete, purge or remove it', async (t) => {
  const policy = await nats.connectAs('policy');
  await (await policy.jetstream().views.kv(policyBucket, { bindOnly: true })).put(policyKey, new TextEncoder().encode('watched'));
  await policy.close();
  for (const user of ['fetcher', 'importer', 'ima'] as const) {
    const nc = await nats.connectAs(user);
    const kv = await nc.jetstream().views.kv(policyBucket, { bindOnly: true });
    const watch = await kv.watch({ key: policyKey });
    for await (const e of watch) {
      t.is(e.string(), 'watched', user);
      break;
    }
    await t.throwsAsync(kv.delete(policyKey), { message: /Permissions Violation/ }, user);
    await t.throwsAsync(kv.purge(policyKey), { message: /Permissions Violation/ }, user);
    const jsm = await nc.jetstreamManager();
    await t.throwsAsync(jsm.streams.purge(`KV_${policyBucket}`), undefined, user);
    await t.throwsAsync(jsm.streams.delete(`KV_${policyBucket}`), undefined, user);
    await nc.close();
  }
});

test('only the verifier user can answer verifier requests, so nobody else can say "allow"', async (t) => {
  const anon = await nats.connectAs(null);
  const sub = anon.subscribe('verify.image.cosign');
  const ended = (async () => {
    try {
      for await (const _m of sub) return 'a request was delivered';
      return 'closed';
    } catch (err) {
      return String(err);
    }
  })();
  // the server answers the SUB before the PING of a flush: its refusal is in once the flush returns
  await anon.flush();
  t.true(sub.isClosed(), 'the server refused the subscription');
  t.regex(await ended, /closed|Permissions Violation/i);
  await anon.close().catch(() => {});
  const verifier = await nats.connectAs('verifier');
  const vsub = verifier.subscribe('verify.image.cosign', { callback: (_e, m) => m.respond(new TextEncoder().encode('{"allow":true}')) });
  await verifier.flush();
  const fetcher = await nats.connectAs('fetcher');
  const reply = await fetcher.request('verify.image.cosign', new Uint8Array(), { timeout: 2000 });
  t.is(new TextDecoder().decode(reply.data), '{"allow":true}');
  vsub.unsubscribe();
  await fetcher.close();
  await verifier.close();
});
