// Several test servers started at once. If one cannot start, the ones that
// did are stopped before the error is thrown: a server left running (its
// handle in a variable the failed destructuring never set) would keep the
// test worker from exiting, and the whole run would stall on it (seen in CI:
// a nats-server that failed to report its port left a containerd running).
type Stoppable = { cleanup(): Promise<void> } | { close(): Promise<void> } | { stop(): Promise<void> };

export async function startTogether<T extends Stoppable[]>(...starts: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const results = await Promise.allSettled(starts);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const started = results.filter((r): r is PromiseFulfilledResult<Stoppable> => r.status === 'fulfilled').map((r) => r.value);
  if (!failed) return started as unknown as T;
  await Promise.allSettled(started.map((s) => ('cleanup' in s ? s.cleanup() : 'close' in s ? s.close() : s.stop())));
  throw failed.reason;
}
