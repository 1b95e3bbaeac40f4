import type { KV, KvEntry, NatsConnection, QueuedIterator } from 'nats';
import { policyBucket, policyKey } from './subjects.ts';
import { verifySignedPolicy, type Policy, type SignedPolicy } from './policy.ts';
import type { PublicKey } from './sign.ts';
import type { Logger } from './log.ts';
import { Backoff } from './backoff.ts';

// How a service other than `policy` gets the policy in force: watch the KV
// record, verify each value against the bootstrap trust itself (the KV is not
// trusted blindly), and take it only when its serial is higher than the one
// in force. The watch (nats.js's ordered consumer) starts from the record
// stored now and is opened again whenever it may have lapsed, so a change
// made while the bus was away is seen once it is back.
export class PolicyFollower {
  private current: Policy | null = null;
  // the record last taken or refused, as stored: the watch's first value
  // repeats the one refresh() read, and each reconnect repeats it again;
  // verifying it anew (signature, YAML, schema) would give the same answer.
  // By content, not revision: a bucket made again starts its revisions at 1.
  private seen = '';
  private kv?: Promise<KV>;
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

  // Resolves once the record stored now has been taken (or refused), or when
  // the bus cannot be read yet: a service starts either way. The watch's own
  // first value is that record again, ignored as no news.
  async start(): Promise<void> {
    await this.refresh();
    void this.follow();
  }

  // Reads the record now: the initial value, and for a caller that needs a
  // policy at least as new as one it was told of. Null when none is stored yet.
  async refresh(): Promise<Policy | null> {
    let entry: KvEntry | null;
    try {
      entry = await (await this.bucket()).get(policyKey);
    } catch (err) {
      this.kv = undefined;
      this.log.warn('cannot read the policy from the bus; keeping the one in force', { err: err as Error });
      return this.current;
    }
    if (entry) await this.take(entry);
    return this.current;
  }

  // Until the connection closes; a watch that ends (its consumer could not
  // be recreated) is opened again.
  private async follow(): Promise<void> {
    const stopping = new AbortController();
    void this.nc.closed().then(() => stopping.abort());
    const backoff = new Backoff({ firstMs: 250, maxMs: 5000, signal: stopping.signal });
    let watch: QueuedIterator<KvEntry> | undefined;
    // A restarted bus has lost the watch's consumer (kept in memory). nats.js
    // would recreate it after two missed heartbeats, 10 s; a new watch after
    // each reconnect catches up at once.
    void (async () => {
      for await (const s of this.nc.status()) if (s.type === 'reconnect') watch?.stop();
    })();
    while (!this.nc.isClosed() && !this.nc.isDraining()) {
      try {
        watch = await (await this.bucket()).watch({ key: policyKey, initializedFn: () => backoff.reset() });
        for await (const entry of watch) await this.take(entry);
      } catch (err) {
        this.kv = undefined;
        if (!this.nc.isClosed() && !this.nc.isDraining()) {
          this.log.warn('cannot watch the policy on the bus; keeping the one in force', { retryInMs: backoff.delayMs, err: err as Error });
        }
      }
      await backoff.wait();
    }
  }

  // bound once; a failure drops it so the next use binds again
  private bucket(): Promise<KV> {
    return (this.kv ??= this.nc.jetstream().views.kv(policyBucket, { bindOnly: true }));
  }

  private async take(entry: KvEntry): Promise<void> {
    if (entry.operation !== 'PUT' || !entry.value.length) {
      this.log.warn('the policy record was removed from the KV bucket; keeping the one in force', { operation: entry.operation, revision: entry.revision });
      return;
    }
    const stored = entry.string();
    if (stored === this.seen) return;
    this.seen = stored;
    let next: Policy;
    try {
      next = verifySignedPolicy(JSON.parse(stored) as SignedPolicy, this.trust, 'policy in the KV bucket');
    } catch (err) {
      this.log.error('policy in the KV bucket failed verification; keeping the one in force', { revision: entry.revision, err: err as Error });
      return;
    }
    if (this.current && next.serial <= this.current.serial) {
      // the same record seen again (watch and refresh) is no news; an older one is a replay
      if (next.serial < this.current.serial) this.log.warn('policy in the KV bucket is older than the one in force; ignored', { serial: next.serial, inForce: this.current.serial });
      return;
    }
    const prev = this.current;
    this.current = next;
    for (const fn of this.listeners) {
      try {
        await fn(next, prev);
      } catch (err) {
        this.log.error('policy change handler failed', { err: err as Error });
      }
    }
  }
}
