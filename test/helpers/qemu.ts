import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { pingAll } from '../../services/lib/bus.ts';
import { build, isStale, kernelVersion, repoRoot, type BuildResult, type FleetOptions } from '../../iso/build.ts';
import { ensureNodeKeys } from '../../iso/keys.ts';
import { builtFor, withIsoBuildLock } from '../../iso/run.ts';
import { isHeld, lockFile } from '../../services/cli/lock.ts';

// QEMU boots for the tests (the machinery is iso/vm.ts, shared with make run)
// and the one ISO the test files share: built once per change of its inputs,
// under build/test-iso, with its own state dir (never the developer's state/).
export { bootVm, busAnswers, freePort, type BootOptions, type Vm } from '../../iso/vm.ts';

export const testIsoDir = join(repoRoot, 'build', 'test-iso');
export const testStateDir = join(repoRoot, 'build', 'test-state');

export interface TestIso extends BuildResult {
  reused: boolean;
}

export function ensureIso(log: (line: string) => void = () => {}): Promise<TestIso> {
  return ensureBuilt(testIsoDir, undefined, log);
}

// The node image with a test case (test/cases/<name>) merged in front of
// linuxkit.yml, under build/test-iso-<name>: the node's own image never
// carries test steps.
// With `kernel` (a version or series such as 6.1), built with that installed
// kernel instead of the newest, under build/test-iso-<name>-kernel-<kernel>.
export function ensureTestCaseIso(name: string, log: (line: string) => void = () => {}, kernel?: string): Promise<TestIso> {
  return ensureBuilt(join(repoRoot, 'build', `test-iso-${name}${kernel ? `-kernel-${kernel}` : ''}`), name, log, undefined, kernel);
}

// A fleet member's image (make iso NODE=… HUB=…), with a test case in front
// if given, under build/test-iso-fleet-<node>: rebuilt when its enrolment changes.
export function ensureFleetIso(fleet: FleetOptions, testCase?: string, log: (line: string) => void = () => {}): Promise<TestIso> {
  return ensureBuilt(join(repoRoot, 'build', `test-iso-fleet-${fleet.node}`), testCase, log, fleet);
}

// One build at a time in this checkout, whichever image (test files run in
// parallel workers, and make run and make iso build too): every build runs
// tsc into dist/, which another build may be copying into its image.
function ensureBuilt(out: string, testCase: string | undefined, log: (line: string) => void, fleet?: FleetOptions, kernel?: string): Promise<TestIso> {
  return withIsoBuildLock(async () => {
    await ensureNodeKeys(testStateDir);
    const resultFile = join(out, 'result.json');
    const version = kernelVersion(kernel);
    if (!isStale(out, repoRoot, testStateDir, testCase) && existsSync(resultFile) && (await builtFor(out, testStateDir, fleet, version))) {
      return { ...(JSON.parse(await readFile(resultFile, 'utf8')) as BuildResult), reused: true };
    }
    const result = await build({ out, state: testStateDir, testCase, fleet, log, kernel: version });
    await writeFile(resultFile, JSON.stringify(result, null, 2) + '\n');
    return { ...result, reused: false };
  });
}

// A booted node is usable once a service answers sealkit.ping; heartbeats
// are minutes apart in a starved guest, so they are not the signal.
export async function untilAnswering(nc: NatsConnection, service: string, timeoutMs: number): Promise<string[]> {
  const until = Date.now() + timeoutMs;
  for (let up: string[] = []; ; ) {
    up = (await pingAll(nc, 2000).catch(() => [])).map((r) => r.service);
    if (up.includes(service)) return up;
    if (Date.now() > until) throw new Error(`${service} did not answer sealkit.ping within ${timeoutMs / 1000} s; answering: ${up.join(', ') || 'none'}`);
  }
}

// `make run` on the tests' state takes that state's node lock, and a second
// one is refused (SEALKIT_STATE_LOCKED): the test files that run it there
// (iso-uefi, iso-fleet) take turns through this lock, held until their
// make run has stopped.
export async function takeTestStateTurn(): Promise<() => Promise<void>> {
  const lock = await lockFile(join(repoRoot, 'build', 'test-state-run.lock'), { wait: true });
  if (!isHeld(lock)) throw new Error('build/test-state-run.lock: not locked');
  return () => lock.release();
}
