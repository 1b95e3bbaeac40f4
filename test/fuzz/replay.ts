import { readFileSync } from 'node:fs';
import { describe, runOne } from './harness.ts';
import { targets } from './targets.ts';

// Replay saved inputs on one target and print each outcome:
//   node --import tsx test/fuzz/replay.ts <target> file.bin ...
const t = await targets[process.argv[2]]();
for (const f of process.argv.slice(3)) {
  const t0 = performance.now();
  const r = await runOne(t, readFileSync(f));
  const ms = Math.round(performance.now() - t0);
  console.log(`${f}: ${r.kind === 'finding' ? describe(r.error) : r.kind === 'refused' ? r.code : 'ok'} (${ms} ms)`);
}
