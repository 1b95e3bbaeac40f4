// Runs ava with its default reporter, passes its output through, and ends
// with one plain closing line, "ava: N passed, N failed". Exits non-zero when
// ava did, when anything failed or timed out, or when no test ran at all.
// (ava's TAP reporter itself crashes on a timeout, taking its workers' child
// processes down uncleanly, so it is not used.) A run that prints nothing for
// SEALKIT_TEST_STALL_MIN minutes (default 15; the slowest test takes about 4)
// is stuck, typically a worker that cannot exit because something it opened
// is still running: the processes under ava and ava's pending tests (with
// what they logged so far) are printed, then it is killed and counted as a
// failure, not left to the CI's own time limit.
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const ava = spawn(process.execPath, ['node_modules/ava/entrypoints/cli.mjs', ...process.argv.slice(2)], {
  stdio: ['ignore', 'pipe', 'pipe'],
  env: { ...process.env, FORCE_COLOR: '0' },
  detached: true, // its own process group: a stall kills workers and what they started
});
const stallMs = Number(process.env.SEALKIT_TEST_STALL_MIN ?? 15) * 60_000;
let stalled = false;
let lastOutput = Date.now();
const watchdog = setInterval(() => {
  if (stalled || Date.now() - lastOutput < stallMs) return;
  stalled = true;
  process.stdout.write(`\nava: no output for ${stallMs / 60_000} minutes; a test file or its worker is stuck (a timer, client or child process left running). Killing the run.\n`);
  // say what is stuck before killing it: the processes under ava (a test's
  // QEMU or make runs in a session of its own, so they are found by parent,
  // not by process group), then ava's own list of the pending tests with
  // what each had logged, which it prints on SIGINT
  const tree = (stuck = descendants(ava.pid));
  process.stdout.write(`processes still running under ava:\n${tree.map((p) => `  ${p.pid} ${p.etime} ${p.args}`).join('\n') || '  (none)'}\n`);
  try {
    process.kill(ava.pid, 'SIGINT');
  } catch {}
  setTimeout(killStuck, 30_000).unref();
}, Math.min(10_000, stallMs));
let stuck = [];
function killStuck() {
  for (const p of [{ pid: -ava.pid }, ...stuck]) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {}
  }
}

// every process below pid, by parent, with its age and command line
function descendants(pid) {
  const procs = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const args = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ').trim().slice(0, 300);
      procs.push({ pid: Number(d), ppid, args });
    } catch {}
  }
  const out = [];
  const walk = (parent, depth) => {
    for (const p of procs.filter((q) => q.ppid === parent)) {
      let etime = '';
      try {
        etime = execFileSync('ps', ['-o', 'etime=', '-p', String(p.pid)], { encoding: 'utf8' }).trim();
      } catch {}
      out.push({ pid: p.pid, etime, args: `${'  '.repeat(depth)}${p.args}` });
      walk(p.pid, depth + 1);
    }
  };
  walk(pid, 0);
  return out;
}
let pass = 0;
let fail = 0;
let skip = 0;
const failed = [];
const read = (stream, out) =>
  new Promise((resolve) => {
    createInterface({ input: stream })
      .on('line', (line) => {
        lastOutput = Date.now();
        out.write(line + '\n');
        // only the reporter's own result lines (indented at most two
        // spaces): a test's logged output, indented deeper, may quote them
        if (!/^ {0,2}\S/.test(line)) return;
        const t = line.trim();
        if (t.startsWith('✔')) pass++;
        else if (t.startsWith('✘') && !/^✘ (Timed out|Exiting due to SIGINT)/.test(t) && !/exited with a non-zero/.test(t)) (fail++, failed.push(t));
        else if (t.startsWith('◌')) (fail++, failed.push(`${t} (pending when the run was stopped)`));
        else if (t.startsWith('-') && / skipped?/.test(t)) skip++;
      })
      .on('close', resolve);
  });
await Promise.all([read(ava.stdout, process.stdout), read(ava.stderr, process.stderr)]);
const code = await new Promise((resolve) => (ava.exitCode !== null ? resolve(ava.exitCode) : ava.on('exit', (c) => resolve(c ?? 1))));
clearInterval(watchdog);
if (stalled) killStuck(); // what ava's interrupt left running (a test's QEMU, say)
if (stalled) (fail++, failed.push('the run stalled and was killed'));
if (code !== 0 && fail === 0) fail = 1; // ava failed for a reason no test line shows
if (failed.length) process.stdout.write(`\nfailed:\n${failed.map((f) => `  ${f}`).join('\n')}\n`);
process.stdout.write(`\nava: ${pass} passed, ${fail} failed${skip ? `, ${skip} skipped` : ''}\n`);
if (pass === 0) process.stdout.write('no test ran: treating this run as a failure\n');
process.exit(fail > 0 || pass === 0 || code !== 0 ? 1 : 0);
