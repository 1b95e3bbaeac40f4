import { envInt } from './config.ts';
import type { Logger } from './log.ts';
import type { Policy } from './policy.ts';

// When a service collects what the policy in force no longer names (its
// cache entries, runtime images, rootfs trees): a grace delay after each new
// policy, so that a quick push back to the previous one finds everything
// still there instead of fetching it all again; once at start-up after the
// same delay; and again after it while a run kept something it could not
// remove yet (a rootfs still in use, a question left unanswered). Each run
// judges by the policy in force when it runs, never by the one that armed
// it, and with no policy known nothing is collected.

export const COLLECT_GRACE_MS = 60_000;

export function collectGraceMs(): number {
  return envInt('SEALKIT_COLLECT_GRACE_MS', COLLECT_GRACE_MS);
}

// What one run left for the next: `kept` things it could not remove yet.
export interface CollectRun {
  kept: number;
}

export type Turns = <T>(fn: () => Promise<T>) => Promise<T>;

export class CollectSchedule {
  private timer?: NodeJS.Timeout;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;

  // turn: what the run waits for before it reads the policy in force (the
  // work it must not overlap), so that it never judges by one made stale
  // while it waited
  constructor(
    private readonly o: { graceMs: number; policy: () => Policy | null; collect: (policy: Policy) => Promise<CollectRun>; turn?: Turns; log: Logger },
  ) {}

  /** (Re)arm: a newer policy within the grace postpones the run. */
  soon(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.run(), this.o.graceMs);
    this.timer.unref();
  }

  private run(): Promise<void> {
    this.timer = undefined;
    const turn = this.o.turn ?? ((fn) => fn());
    this.running = this.running.then(() =>
      turn(async () => {
        const policy = this.o.policy();
        if (!policy || this.stopped) return;
        try {
          const { kept } = await this.o.collect(policy);
          if (kept > 0) this.soon();
        } catch (err) {
          this.o.log.error('collection failed; it is tried again after the grace delay', { serial: policy.serial, retryInMs: this.o.graceMs, err: err as Error });
          this.soon();
        }
      }),
    );
    return this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}

// Work that must not overlap a collection (an import, a label judged by an
// older policy, which could otherwise add a name or a tree right after the
// collection looked) takes turns with it through one of these.
export function takingTurns(): Turns {
  let turn: Promise<unknown> = Promise.resolve();
  return (fn) => {
    const run = turn.then(fn);
    turn = run.catch(() => {});
    return run;
  };
}
