// Passes ava's TAP stream through and ends it with one plain closing line,
// "ava: N passed, N failed". Exits non-zero when anything failed, when the
// stream ended without a plan, or when no test ran at all.
import { createInterface } from 'node:readline';

let pass = 0;
let fail = 0;
let skip = 0;
let sawTotals = false;
const failed = [];
for await (const line of createInterface({ input: process.stdin })) {
  process.stdout.write(line + '\n');
  let m;
  if ((m = /^# pass (\d+)/.exec(line))) (pass = Number(m[1])), (sawTotals = true);
  else if ((m = /^# fail (\d+)/.exec(line))) fail = Number(m[1]);
  else if ((m = /^# skip (\d+)/.exec(line))) skip = Number(m[1]);
  else if ((m = /^not ok \d+ - (.*)/.exec(line))) failed.push(m[1]);
}
if (!sawTotals) {
  // the reporter died before its totals: count what it did print
  fail = Math.max(fail, failed.length, 1);
}
if (failed.length) process.stdout.write(`\nfailed:\n${failed.map((f) => `  - ${f}`).join('\n')}\n`);
process.stdout.write(`\nava: ${pass} passed, ${fail} failed${skip ? `, ${skip} skipped` : ''}\n`);
if (pass === 0) process.stdout.write('no test ran: treating this run as a failure\n');
process.exit(fail > 0 || pass === 0 ? 1 : 0);
