import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../services/lib/config.ts';
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

test('a stalled run names its pending test and what it left running, kills them, and fails', async (t) => {
  // a CI run once stalled with nothing to say which test it was: the wrapper
  // must say it, and leave nothing behind
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-stall-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await symlink(join(repoRoot, 'node_modules'), join(dir, 'node_modules'));
  await writeFile(join(dir, 'package.json'), JSON.stringify({ type: 'module', ava: { files: ['stall.test.mjs'], timeout: '10m', workerThreads: false } }));
  await writeFile(
    join(dir, 'stall.test.mjs'),
    `import test from 'ava';
import { spawn } from 'node:child_process';
test('waits for ever on a child in a session of its own', async (t) => {
  t.timeout(10 * 60_000);
  const child = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' });
  t.log('child pid ' + child.pid);
  await new Promise(() => setInterval(() => {}, 1000));
});
`,
  );
  const out = await new Promise<{ code: number | null; output: string }>((resolve) => {
    const p = spawn(process.execPath, [join(repoRoot, 'test/helpers/run-ava.mjs')], { cwd: dir, env: { ...process.env, SEALKIT_TEST_STALL_MIN: '0.1' } });
    let output = '';
    p.stdout.on('data', (d) => (output += d));
    p.stderr.on('data', (d) => (output += d));
    p.on('close', (code) => resolve({ code, output }));
  });
  t.log(out.output);
  t.not(out.code, 0);
  t.regex(out.output, /no output for 0\.1 minutes/);
  t.regex(out.output, /processes still running under ava:\n.*node.*\n.*sleep 1000/);
  t.regex(out.output, /◌ waits for ever on a child in a session of its own/);
  const pid = Number(out.output.match(/child pid (\d+)/)?.[1]);
  t.true(pid > 0, 'the pending test logged what it had logged so far');
  t.false(existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z '), `sleep ${pid} is gone`);
  t.regex(out.output, /ava: 0 passed, [1-9]\d* failed/);
});
