import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../services/lib/config.ts';
import { runReadme } from './helpers/readme.ts';

// make iso and make run for a fleet node, as the README shows them, on a
// state where the node was never enrolled: refused before anything is
// built or booted, with the bundle the build looked for and how to make it.
// (The images built from a bundle boot in test/iso-fleet.test.ts.)

async function freshState(t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const state = await mkdtemp(join(tmpdir(), 'sealkit-fleet-build-'));
  t.teardown(() => rm(state, { recursive: true, force: true }));
  return state;
}

// the README's command, named literally (test/readme-commands.test.ts reads the calls)
function refusedReadme(cmd: string) {
  return async (t: ExecutionContext) => {
    t.timeout(5 * 60_000);
    const state = await freshState(t);
    const r = await runReadme(cmd, { cwd: repoRoot, env: { SEALKIT_STATE: state }, timeoutMs: 4 * 60_000 });
    t.not(r.code, 0, r.stdout);
    const bundle = join(state, 'hub', 'nodes', 'n1', 'fleet', 'node.json');
    t.true(r.stderr.includes(bundle), `names ${bundle}:\n${r.stderr}`);
    t.regex(r.stderr, /sealkit fleet enroll n1/);
    t.regex(r.stderr, /SEALKIT_CONFIG|does not exist/);
    t.false(existsSync(join(state, 'run', 'console.log')), 'nothing was booted');
  };
}

const refused = "without n1's enrolment says which bundle is missing and how to enroll";
test(`make iso NODE=n1 ${refused}`, refusedReadme('make iso NODE=n1'));
test(`make iso NODE=n1 HUB=… ${refused}`, refusedReadme('make iso NODE=n1 HUB=hub.example.org:7422'));
test(`make run NODE=n1 ${refused}`, refusedReadme('make run NODE=n1'));

test('make iso with HUB but no NODE is refused: a fleet image is one enrolled node\'s', async (t) => {
  t.timeout(5 * 60_000);
  const state = await freshState(t);
  const r = spawnSync('make', ['iso', 'HUB=hub.example.org:7422'], { cwd: repoRoot, env: { ...process.env, SEALKIT_STATE: state }, encoding: 'utf8', timeout: 4 * 60_000 });
  t.not(r.status, 0);
  t.regex(r.stderr, /HUB="hub\.example\.org:7422" without NODE/);
  // NODE in the environment is not the fleet node's name: npm and npx put
  // the path of node there (a make run under them built a node "/usr/bin/node")
  const underNpm = spawnSync('make', ['iso', 'HUB=hub.example.org:7422'], { cwd: repoRoot, env: { ...process.env, SEALKIT_STATE: state, NODE: process.execPath }, encoding: 'utf8', timeout: 4 * 60_000 });
  t.not(underNpm.status, 0);
  t.regex(underNpm.stderr, /HUB="hub\.example\.org:7422" without NODE/);
});
