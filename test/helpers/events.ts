import type { NatsConnection, Subscription } from 'nats';
import { parseEvent, type CloudEvent } from '../../services/lib/envelope.ts';

// A subscriber as an operator runs it (`nats sub 'audit.*'`): collects
// events and lets a test await the one it expects instead of sleeping.
export class EventLog {
  readonly events: CloudEvent<any>[] = [];
  private readonly subs: Subscription[];
  private readonly waiters: Array<{ pred: (e: CloudEvent<any>) => boolean; resolve: (e: CloudEvent<any>) => void; timer: NodeJS.Timeout }>;

  constructor(nc: NatsConnection, subject: string | string[]) {
    this.waiters = [];
    this.subs = (Array.isArray(subject) ? subject : [subject]).map((s) => nc.subscribe(s));
    for (const sub of this.subs) void this.run(sub);
  }

  private async run(sub: Subscription): Promise<void> {
    {
      for await (const m of sub) {
        let ev: CloudEvent<any>;
        try {
          ev = parseEvent(m.data);
        } catch {
          continue; // a request body on an event subject (image.fetch, ima.verify), not an event
        }
        this.events.push(ev);
        for (const w of [...this.waiters]) {
          if (w.pred(ev)) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(ev);
          }
        }
      }
    }
  }

  of(type: string): CloudEvent<any>[] {
    return this.events.filter((e) => e.type === type);
  }

  wait(pred: ((e: CloudEvent<any>) => boolean) | string, timeoutMs = 15_000): Promise<CloudEvent<any>> {
    const p = typeof pred === 'string' ? (e: CloudEvent<any>) => e.type === pred : pred;
    const hit = this.events.find(p);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching event within ${timeoutMs} ms; saw: ${this.events.map((e) => e.type).join(', ')}`)), timeoutMs);
      this.waiters.push({ pred: p, resolve: (e) => (clearTimeout(timer), resolve(e)), timer });
    });
  }

  // Waits for the next matching event that arrives after this call.
  next(pred: ((e: CloudEvent<any>) => boolean) | string, timeoutMs = 15_000): Promise<CloudEvent<any>> {
    const p = typeof pred === 'string' ? (e: CloudEvent<any>) => e.type === pred : pred;
    const seen = new Set(this.events);
    return this.wait((e) => !seen.has(e) && p(e), timeoutMs);
  }

  // Unsubscribes and forgets the waits still pending (their promises stay
  // unsettled), so that no timer outlives the test.
  close(): void {
    for (const w of this.waiters.splice(0)) clearTimeout(w.timer);
    for (const sub of this.subs) sub.unsubscribe();
  }
}
