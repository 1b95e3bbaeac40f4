import { join } from 'node:path';
import type { Msg } from 'nats';
import { runService, type ServiceContext } from '../lib/service.ts';
import { serve } from '../lib/bus.ts';
import { asSealkitError, SealkitError } from '../lib/errors.ts';
import { readTrust } from '../lib/sign.ts';
import { trustPath } from '../lib/config.ts';
import { retry } from '../lib/backoff.ts';
import { policyBucket, policyKey, subjects } from '../lib/subjects.ts';
import { contract, readHeaders, type PolicyApplied } from '../lib/contract.ts';
import type { Policy, SignedPolicy } from '../lib/policy.ts';
import { PolicyStore, type Loaded } from './store.ts';
import { decidePush } from './push.ts';

async function start(ctx: ServiceContext) {
  const { nc, events, log } = ctx;
  const trust = await readTrust(trustPath(ctx.root));
  const store = new PolicyStore(join(ctx.state));
  const kv = await nc.jetstream().views.kv(policyBucket, { bindOnly: true });

  const report = await store.load(trust);
  for (const p of report.problems) {
    log.error('stored policy refused', p);
    await events.publish(subjects.audit.policy, {
      action: 'load',
      file: p.file,
      code: p.code,
      reason: p.reason,
      inForce: report.loaded?.policy.serial ?? null,
    });
  }
  let current: Loaded | null = report.loaded;
  if (current) log.info('policy in force', { serial: current.policy.serial });
  else log.warn('no policy in force yet; push one with "sealkit policy push"');

  // The KV copy follows the disk, which is authoritative on this node.
  const syncKv = async (rec: SignedPolicy) => {
    await retry(() => kv.put(policyKey, Buffer.from(JSON.stringify(rec))), {
      firstMs: 250,
      maxMs: 5000,
      onError: (err, attempt) => {
        if (attempt === 0) log.warn('cannot write the policy to KV yet; retrying', { err: err as Error });
      },
    });
  };
  if (current) {
    const entry = await kv.get(policyKey).catch(() => null);
    const inKv = entry?.value.length ? (JSON.parse(Buffer.from(entry.value).toString()) as SignedPolicy) : null;
    if (inKv?.sha256 !== current.record.sha256) await syncKv(current.record);
  }

  serve(
    nc,
    subjects.policy.push,
    async (msg: Msg) => {
      const { signature, keyId, pusher } = readHeaders(contract.policy.push, msg.headers);
      try {
        const accepted = decidePush(
          { yaml: msg.data, signature, keyId },
          trust,
          current?.policy ?? null,
          await store.highwater(),
        );
        await store.save(accepted.record);
        current = { record: accepted.record, policy: accepted.policy };
        await syncKv(accepted.record);
        const summary: PolicyApplied = { serial: accepted.policy.serial, sha256: accepted.record.sha256, keyId: accepted.record.keyId, pusher, changes: accepted.changes };
        await events.publish(subjects.policy.applied, summary);
        log.info('policy applied', { serial: accepted.policy.serial, pusher });
        return summary;
      } catch (err) {
        const e = asSealkitError(err);
        const claimed = claimedSerial(msg.data);
        log.warn('policy push refused', { code: e.code, reason: e.message, pusher, keyId });
        await events.publish(subjects.audit.policy, {
          action: 'push',
          pusher: pusher ?? null,
          keyId: keyId ?? null,
          serial: claimed,
          code: e.code,
          reason: e.message,
          inForce: current?.policy.serial ?? null,
        });
        throw e;
      }
    },
    { log, serial: true },
  );

  serve(nc, subjects.policy.get, () => {
    if (!current) throw new SealkitError('SEALKIT_POLICY_NONE', 'no policy is in force on this node; push one with "sealkit policy push"');
    return { ...current.record, summary: summarize(current.policy) };
  });
}

// For the audit record only: what serial the refused push claimed, read
// without trusting the document (it may be unsigned or malformed).
function claimedSerial(data: Uint8Array): number | null {
  const m = /^serial:\s*(\d{1,15})\s*(#.*)?$/m.exec(Buffer.from(data.subarray(0, 64 * 1024)).toString('utf8'));
  return m ? Number(m[1]) : null;
}

function summarize(p: Policy) {
  return {
    serial: p.serial,
    images: p.images.map((i) => `${i.name}:${i.tag}@sha256:${i.sha256.slice(0, 12)}`),
    containers: p.containers.map((c) => `${c.name} (${c.image})`),
    keys: p.keys.map((k) => k.id),
    verifiers: p.verifiers.map((v) => v.subject),
    ima: p.ima.mode,
  };
}

await runService('policy', start);
