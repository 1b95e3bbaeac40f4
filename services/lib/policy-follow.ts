import type { NatsConnection } from 'nats';
import { policyBucket, policyKey, subjects } from './subjects.ts';
import { verifySignedPolicy, type Policy, type SignedPolicy } from './policy.ts';
import type { PublicKey } from './sign.ts';
import type { Logger } from './log.ts';

// How a service other than `policy` gets the policy in force: read the KV
// record, verify its signature against the bootstrap trust itself (the KV is
// not trusted blindly), and read again whenever policy.applied is published.
export class PolicyFollower {
  private current: Policy | null = null;
  private readonly listeners: Array<(p: Policy, prev: Policy | null) => void | Promise<void>> = [];

  constructor(
    private readonly nc: NatsConnection,
    private readonly trust: PublicKey[],
    private readonly log: Logger,
  ) {}

  get policy(): Policy | null {
    return this.current;
  }

  onChange(fn: (p: Policy, prev: Policy | null) => void | Promise<void>): void {
    this.listeners.push(fn);
  }

  async start(): Promise<void> {
    this.nc.subscribe(subjects.policy.applied, { callback: () => void this.refresh() });
    await this.refresh();
  }

  // Returns the verified policy, or null when none is stored yet.
  async refresh(): Promise<Policy | null> {
    let rec: SignedPolicy | null = null;
    try {
      const kv = await this.nc.jetstream().views.kv(policyBucket, { bindOnly: true });
      const entry = await kv.get(policyKey);
      if (entry && entry.value.length) rec = JSON.parse(Buffer.from(entry.value).toString('utf8')) as SignedPolicy;
    } catch (err) {
      this.log.warn('cannot read the policy from the bus; keeping the one in force', { err: err as Error });
      return this.current;
    }
    if (!rec) return this.current;
    let next: Policy;
    try {
      next = verifySignedPolicy(rec, this.trust, 'policy in the KV bucket');
    } catch (err) {
      this.log.error('policy in the KV bucket failed verification; keeping the one in force', { err: err as Error });
      return this.current;
    }
    if (this.current && next.serial <= this.current.serial) return this.current;
    const prev = this.current;
    this.current = next;
    for (const fn of this.listeners) {
      try {
        await fn(next, prev);
      } catch (err) {
        this.log.error('policy change handler failed', { err: err as Error });
      }
    }
    return next;
  }
}
