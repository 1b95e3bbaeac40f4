// Retrying against something that is away (the bus, containerd, a KV bucket):
// each wait doubles up to a cap, a success starts again from the first, and a
// stop signal ends a wait at once, so SIGTERM is never held up by a sleeping
// retry.

export interface BackoffOptions {
  firstMs: number;
  maxMs: number;
  signal?: AbortSignal; // the service is stopping
}

export class Backoff {
  private delay: number;
  private cut?: () => void;

  constructor(private readonly o: BackoffOptions) {
    this.delay = o.firstMs;
  }

  // what the next wait() sleeps
  get delayMs(): number {
    return this.delay;
  }

  reset(): void {
    this.delay = this.o.firstMs;
  }

  // Sleeps the current delay and doubles the next; false when stopped.
  async wait(): Promise<boolean> {
    const { signal } = this.o;
    if (signal?.aborted) return false;
    const ms = this.delay;
    this.delay = Math.min(this.delay * 2, this.o.maxMs);
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.cut = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
      this.cut = done;
    });
    return !signal?.aborted;
  }

  // Ends the current wait early without resetting the delay: what it waited
  // for may be back (a reconnect), and if not the next wait is longer.
  wake(): void {
    this.cut?.();
  }
}

export interface RetryOptions extends BackoffOptions {
  // told of each failure before its wait; attempt 0 is the first
  onError?: (err: unknown, attempt: number, delayMs: number) => void;
}

// Calls fn until it resolves; undefined when stopped first.
export async function retry<T>(fn: () => Promise<T>, o: RetryOptions): Promise<T | undefined> {
  const backoff = new Backoff(o);
  for (let attempt = 0; !o.signal?.aborted; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (o.signal?.aborted) break;
      o.onError?.(err, attempt, backoff.delayMs);
      await backoff.wait();
    }
  }
  return undefined;
}
