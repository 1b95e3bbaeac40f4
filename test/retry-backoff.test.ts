import test from 'ava';
import { Backoff, retry } from '../services/lib/backoff.ts';

const elapsed = async (fn: () => Promise<unknown>): Promise<number> => {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
};

test('each wait doubles the next one up to the cap', async (t) => {
  const b = new Backoff({ firstMs: 20, maxMs: 70 });
  const planned: number[] = [];
  for (let i = 0; i < 5; i++) {
    planned.push(b.delayMs);
    const ms = planned[i];
    // a timer may fire a fraction of a millisecond early, never a whole one
    t.true((await elapsed(() => b.wait())) >= ms - 1, `wait ${i} slept its ${ms} ms`);
  }
  t.deepEqual(planned, [20, 40, 70, 70, 70]);
});

test('a reset starts again from the first wait', async (t) => {
  const b = new Backoff({ firstMs: 5, maxMs: 1000 });
  await b.wait();
  await b.wait();
  t.is(b.delayMs, 20);
  b.reset();
  t.is(b.delayMs, 5);
});

test('a stop wakes a sleeping wait at once, and later waits do not sleep', async (t) => {
  const stop = new AbortController();
  const b = new Backoff({ firstMs: 60_000, maxMs: 60_000, signal: stop.signal });
  setTimeout(() => stop.abort(), 20);
  let result: boolean | undefined;
  t.true((await elapsed(async () => (result = await b.wait()))) < 1000);
  t.false(result);
  t.true((await elapsed(async () => t.false(await b.wait()))) < 50);
});

test('a wake ends the current wait early but keeps the delay growing', async (t) => {
  const b = new Backoff({ firstMs: 60_000, maxMs: 240_000 });
  setTimeout(() => b.wake(), 20);
  let result: boolean | undefined;
  t.true((await elapsed(async () => (result = await b.wait()))) < 1000);
  t.true(result, 'woken, not stopped');
  t.is(b.delayMs, 120_000);
});

test('retry calls again after each failure and returns the first success', async (t) => {
  const seen: Array<[string, number, number]> = [];
  let calls = 0;
  const value = await retry(
    async () => {
      if (++calls < 4) throw new Error(`failure ${calls}`);
      return 'done';
    },
    { firstMs: 5, maxMs: 10, onError: (err, attempt, delayMs) => seen.push([(err as Error).message, attempt, delayMs]) },
  );
  t.is(value, 'done');
  t.deepEqual(seen, [
    ['failure 1', 0, 5],
    ['failure 2', 1, 10],
    ['failure 3', 2, 10],
  ]);
});

test('retry gives up at once when stopped, and calls nothing after the stop', async (t) => {
  const stop = new AbortController();
  let calls = 0;
  setTimeout(() => stop.abort(), 20);
  let value: unknown = 'unset';
  const ms = await elapsed(async () => {
    value = await retry(async () => {
      calls++;
      throw new Error('still away');
    }, { firstMs: 60_000, maxMs: 60_000, signal: stop.signal });
  });
  t.true(ms < 1000);
  t.is(value, undefined);
  t.is(calls, 1);
  t.is(await retry(async () => calls++, { firstMs: 1, maxMs: 1, signal: stop.signal }), undefined);
  t.is(calls, 1);
});
