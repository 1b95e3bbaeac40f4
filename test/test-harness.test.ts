import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readPort } from './helpers/nats.ts';
import { startTogether } from './helpers/together.ts';

// The suite's own helpers, where a race in them failed a CI run.

test('readPort waits while nats-server is still writing its ports file (it was read empty once, and the test file hung)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-ports-'));
  const proc = spawn('sleep', ['10'], { stdio: 'ignore' });
  t.teardown(async () => {
    proc.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });
  const file = join(dir, 'nats-server_1.ports');
  await writeFile(file, ''); // created, not yet written
  setTimeout(() => void writeFile(file, JSON.stringify({ nats: ['nats://127.0.0.1:4567'] })), 200);
  t.is(await readPort(dir, proc), 4567);
});

test('startTogether stops the servers that started when another cannot, and throws its error', async (t) => {
  let stopped = 0;
  const up = { cleanup: async () => void stopped++ };
  const err = await t.throwsAsync(startTogether(Promise.resolve(up), Promise.reject(new Error('nats-server did not report its port'))));
  t.is(err?.message, 'nats-server did not report its port');
  t.is(stopped, 1, 'the server that started is stopped');
  t.deepEqual(await startTogether(Promise.resolve(up), Promise.resolve(up)), [up, up]);
  t.is(stopped, 1);
});
