import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { repoRoot } from '../../services/lib/config.ts';

// `make <target>` as a person runs it at a terminal: in the repo root, in its
// own process group (the terminal's foreground group), so that a test can
// press Ctrl-C (SIGINT to the group) and, in teardown, kill whatever is left.

export interface Shell {
  proc: ChildProcess;
  pid: number;
  output(): string;
  // resolves with the first match in the output so far or to come; rejects
  // if the process exits first
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  done(): boolean;
  signal(sig: NodeJS.Signals): void; // to the whole group
}

export function spawnGroup(cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Shell {
  const proc = spawn(cmd, args, { cwd: o.cwd ?? repoRoot, env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  if (!proc.pid) throw new Error(`${cmd} did not start`);
  let out = '';
  let finished = false;
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString('utf8');
    for (const w of [...waiters]) w();
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('close', (code, signal) => {
      finished = true;
      for (const w of [...waiters]) w();
      resolve({ code, signal });
    }),
  );
  const pid = proc.pid;
  return {
    proc,
    pid,
    output: () => out,
    exited,
    done: () => finished,
    waitFor(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(pattern);
          if (m) finish(() => resolve(m));
          else if (finished) finish(() => reject(new Error(`${cmd} ${args.join(' ')} exited before its output showed ${pattern}:\n${out.slice(-4000)}`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`${cmd} ${args.join(' ')} did not show ${pattern} in ${timeoutMs} ms:\n${out.slice(-4000)}`))), timeoutMs);
        const finish = (f: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
    signal(sig) {
      try {
        process.kill(-pid, sig);
      } catch {
        // the group is gone
      }
    },
  };
}

export const spawnMake = (target: string, env: NodeJS.ProcessEnv) => spawnGroup('make', [target], { env });

// Running, not a zombie waiting for its parent to reap it.
export function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

// Every process whose environment has NAME=VALUE: what make started with a
// test's temporary SEALKIT_STATE, wherever it sits in the process tree.
export function pidsWithEnv(name: string, value: string): number[] {
  const want = `${name}=${value}`;
  const found: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${e}/environ`, 'latin1').split('\0').includes(want) && running(Number(e))) found.push(Number(e));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

// Teardown: whatever a failed test left, by pid.
export function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

// Runs a command a banner printed, as printed, from the repo root, with the
// user's policy.yaml standing at `policy`; the shell joins `shells` so that
// teardown can kill it.
export async function runPrinted(command: string, policy: string, shells: Shell[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  const s = spawnGroup('sh', ['-c', command.replace(/\bpolicy\.yaml\b/g, policy)], { cwd: repoRoot });
  shells.push(s);
  const r = await s.exited;
  return { ...r, output: s.output() };
}

// The commands a "make dev" or "make run" banner tells the user to type.
export function printedCommands(output: string): string[] {
  return output
    .split('\n')
    .filter((l) => /^ {2}(watch|status|push) {3,}|^ {11}\S/.test(l) && l.includes('bin/sealkit'))
    .map((l) => l.replace(/^ {2}\w* +/, '').trim());
}
