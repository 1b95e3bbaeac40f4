import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../services/lib/config.ts';
import { readmeCommands } from './helpers/readme.ts';

// Every command the README shows is run, exactly as written, by some test
// (through readmeCommand, runReadme, spawnReadme or a wrapper whose name ends in Readme, which fail when the README changes the
// command) or, for `make test` itself, by .ci/run.

function testSources(dir = join(repoRoot, 'test')): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory() && e.name !== 'fixtures') out.push(...testSources(p));
    else if (e.isFile() && e.name.endsWith('.ts') && p !== join(repoRoot, 'test', 'helpers', 'readme.ts')) out.push(readFileSync(p, 'utf8'));
  }
  return out;
}

// The literal first arguments of readmeCommand(...) and of any *Readme(...) call.
export function namedCommands(sources: string[]): Set<string> {
  const named = new Set<string>();
  for (const src of sources) {
    for (const m of src.matchAll(/\b(?:readmeCommand|\w*Readme)\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|`((?:[^`\\$]|\\.)*)`)/g)) {
      const lit = m[1] ?? m[2] ?? m[3];
      named.add(lit.replace(/\\(.)/g, '$1'));
    }
  }
  return named;
}

test('the README shows commands to run', (t) => {
  const cmds = readmeCommands();
  t.true(cmds.includes('make run'), cmds.join('\n'));
  t.true(cmds.includes('make test'), cmds.join('\n'));
});

test('every command the README shows is run by a test as written', (t) => {
  const named = namedCommands(testSources());
  const ci = readFileSync(join(repoRoot, '.ci', 'run'), 'utf8').split('\n').map((l) => l.trim());
  const missing = readmeCommands().filter((c) => !named.has(c) && !(c === 'make test' && ci.includes('make test')));
  t.deepEqual(missing, [], `README commands no test runs:\n${missing.join('\n')}`);
});
