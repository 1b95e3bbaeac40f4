import test from 'ava';
import { defaultBackoff, exitLine, nextDelay } from '../services/cli/supervise.ts';

// make dev's restart delay: doubling while a process keeps dying, capped,
// and back to the start once it has stayed up for a while.

test('the restart delay doubles from 0.5 s to a 30 s cap while a process keeps failing', (t) => {
  const delays: number[] = [];
  let d: number | undefined;
  for (let i = 0; i < 10; i++) delays.push((d = nextDelay(d, 100)));
  t.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
});

test('a process that stayed up long enough is restarted after the shortest delay again', (t) => {
  t.is(nextDelay(30_000, defaultBackoff.stableMs - 1), 30_000);
  t.is(nextDelay(30_000, defaultBackoff.stableMs), defaultBackoff.initialMs);
});

test('the restart line names the signal or exit code, the delay and the count', (t) => {
  t.is(exitLine(null, 'SIGKILL', 500, 1), 'exited (SIGKILL); restarting in 0.5 s (restart 1)');
  t.is(exitLine(3, null, 30_000, 7), 'exited (3); restarting in 30 s (restart 7)');
});
