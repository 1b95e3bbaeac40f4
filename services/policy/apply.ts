import type { KV } from 'nats';
import { asSealkitError, type SealkitError } from '../lib/errors.ts';
import { retry } from '../lib/backoff.ts';
import { sha256Hex } from '../lib/digest.ts';
import { policyKey, subjects } from '../lib/subjects.ts';
import type { PolicyApplied, PolicyAudit } from '../lib/contract.ts';
import type { Logger } from '../lib/log.ts';
import type { EventPublisher } from '../lib/outbox.ts';
import type { SignedPolicy } from '../lib/policy.ts';
import type { PublicKey } from '../lib/sign.ts';
import { PolicyStore, type Loaded } from './store.ts';
import { decidePush, type PushInput } from './push.ts';

// Where a candidate policy came from: a local push on policy.push, or the
// hub's key of one of the node's groups. Both take the same path through
// decidePush and the store; only the record of who sent it differs.
export type Origin = { via: 'push'; pusher?: string } | { via: 'fleet'; group: string; pusher?: string };

// The one path by which a policy comes into force on this node, one at a
// time: a local push and a fleet update arriving together are decided in
// turn against the serial the other left.
export class PolicyApplier {
  current: Loaded | null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly o: { store: PolicyStore; trust: PublicKey[]; kv: KV; events: EventPublisher; log: Logger; loaded: Loaded | null },
  ) {
    this.current = o.loaded;
  }

  apply(input: PushInput, origin: Origin): Promise<PolicyApplied> {
    const next = this.queue.then(() => this.decide(input, origin));
    this.queue = next.catch(() => {});
    return next;
  }

  // The KV copy follows the disk, which is authoritative on this node.
  async syncKv(rec: SignedPolicy): Promise<void> {
    await retry(() => this.o.kv.put(policyKey, Buffer.from(JSON.stringify(rec))), {
      firstMs: 250,
      maxMs: 5000,
      onError: (err, attempt) => {
        if (attempt === 0) this.o.log.warn('cannot write the policy to KV yet; retrying', { err: err as Error });
      },
    });
  }

  private async decide(input: PushInput, origin: Origin): Promise<PolicyApplied> {
    const { store, trust, events, log } = this.o;
    const fleet = origin.via === 'fleet' ? { via: 'fleet' as const, group: origin.group } : {};
    try {
      const accepted = decidePush(input, trust, this.current?.policy ?? null, await store.highwater());
      await store.save(accepted.record);
      this.current = { record: accepted.record, policy: accepted.policy };
      await this.syncKv(accepted.record);
      const summary: PolicyApplied = {
        serial: accepted.policy.serial,
        sha256: accepted.record.sha256,
        keyId: accepted.record.keyId,
        ...(origin.pusher !== undefined ? { pusher: origin.pusher } : {}),
        changes: accepted.changes,
        ...fleet,
      };
      await events.publish(subjects.policy.applied, summary);
      log.info('policy applied', { serial: accepted.policy.serial, pusher: origin.pusher, ...fleet });
      return summary;
    } catch (err) {
      throw await this.refuse(input, origin, err);
    }
  }

  // A refusal is an audit.policy event naming what was refused and why; the
  // error is returned for the caller to answer with.
  async refuse(input: PushInput, origin: Origin, err: unknown): Promise<SealkitError> {
    const e = asSealkitError(err);
    const fleet = origin.via === 'fleet' ? { group: origin.group } : {};
    this.o.log.warn(origin.via === 'fleet' ? 'fleet policy refused' : 'policy push refused', { code: e.code, reason: e.message, pusher: origin.pusher, keyId: input.keyId, ...fleet });
    const audit: PolicyAudit = {
      action: origin.via,
      pusher: origin.pusher ?? null,
      keyId: input.keyId ?? null,
      serial: claimedSerial(input.yaml),
      code: e.code,
      reason: e.message,
      inForce: this.current?.policy.serial ?? null,
      ...(origin.via === 'fleet' ? { group: origin.group, sha256: sha256Hex(input.yaml) } : {}),
    };
    await this.o.events.publish(subjects.audit.policy, audit);
    return e;
  }
}

// For the audit record only: what serial the refused push claimed, read
// without trusting the document (it may be unsigned or malformed).
function claimedSerial(data: Uint8Array): number | null {
  const m = /^serial:\s*(\d{1,15})\s*(#.*)?$/m.exec(Buffer.from(data.subarray(0, 64 * 1024)).toString('utf8'));
  return m ? Number(m[1]) : null;
}
