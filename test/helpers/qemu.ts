import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { build, isStale, repoRoot, type BuildResult } from '../../iso/build.ts';
import { ensureNodeKeys } from '../../iso/keys.ts';
import { withIsoBuildLock } from '../../iso/run.ts';

// QEMU boots for the tests (the machinery is iso/vm.ts, shared with make run)
// and the one ISO the test files share: built once per change of its inputs,
// under build/test-iso, with its own state dir (never the developer's state/).
export { bootVm, busAnswers, freePort, type BootOptions, type Vm } from '../../iso/vm.ts';

export const testIsoDir = join(repoRoot, 'build', 'test-iso');
export const testStateDir = join(repoRoot, 'build', 'test-state');

export interface TestIso extends BuildResult {
  reused: boolean;
}

export async function ensureIso(log: (line: string) => void = () => {}): Promise<TestIso> {
  // one build at a time in this checkout (test files run in parallel
  // workers, and make run and make iso build too): they all compile into dist/
  return withIsoBuildLock(async () => {
    await ensureNodeKeys(testStateDir);
    const resultFile = join(testIsoDir, 'result.json');
    if (!isStale(testIsoDir, repoRoot, testStateDir) && existsSync(resultFile)) {
      return { ...(JSON.parse(await readFile(resultFile, 'utf8')) as BuildResult), reused: true };
    }
    const result = await build({ out: testIsoDir, state: testStateDir, log });
    await writeFile(resultFile, JSON.stringify(result, null, 2) + '\n');
    return { ...result, reused: false };
  });
}

// One build at a time, whichever image (ensureIso's lock): every build runs
// tsc into dist/, which another build may be copying into its image.
export function buildLocked<T>(fn: () => Promise<T>): Promise<T> {
  return locked(`${testIsoDir}.lock`, fn);
}

// The node image with a test case (test/cases/<name>) merged in front of
// linuxkit.yml, under build/test-iso-<name>: the node's own image never
// carries test steps.
export async function ensureTestCaseIso(name: string, log: (line: string) => void = () => {}): Promise<TestIso> {
  await mkdir(join(repoRoot, 'build'), { recursive: true });
  const out = join(repoRoot, 'build', `test-iso-${name}`);
  return buildLocked(async () => {
    await ensureNodeKeys(testStateDir);
    const resultFile = join(out, 'result.json');
    if (!isStale(out, repoRoot, testStateDir, name) && existsSync(resultFile)) {
      return { ...(JSON.parse(await readFile(resultFile, 'utf8')) as BuildResult), reused: true };
    }
    const result = await build({ out, state: testStateDir, testCase: name, log });
    await writeFile(resultFile, JSON.stringify(result, null, 2) + '\n');
    return { ...result, reused: false };
  });
}
