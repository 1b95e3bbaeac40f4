// What `make dev` does for its processes, as busybox init does for the
// node's: each runs until it is stopped, and one that exits is started again,
// after a delay that doubles while it keeps failing and starts over once it
// has stayed up for a while. Every start, exit and restart is a line on the
// output. Children run in their own session, so a Ctrl-C at the terminal
// reaches only the supervisor, which stops them in its own order; and they
// get SIGKILL from the kernel if the supervisor dies without stopping them
// (setpriv --pdeathsig), so nothing outlives it.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';

export interface Backoff {
  initialMs: number;
  maxMs: number;
  stableMs: number; // a run this long resets the delay
}

export const defaultBackoff: Backoff = { initialMs: 500, maxMs: 30_000, stableMs: 60_000 };

// The delay before the next start, from the one before and how long the run
// that just ended lasted.
export function nextDelay(prevMs: number | undefined, upMs: number, b: Backoff = defaultBackoff): number {
  if (prevMs === undefined || upMs >= b.stableMs) return b.initialMs;
  return Math.min(prevMs * 2, b.maxMs);
}

export function exitLine(code: number | null, signal: string | null, delayMs: number, restart: number): string {
  return `exited (${signal ?? code}); restarting in ${delayMs / 1000} s (restart ${restart})`;
}

export interface ProcessSpec {
  name: string;
  cmd: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

const STOP_GRACE_MS = 8000; // then SIGKILL: a child that ignores SIGTERM must not keep make dev up
const setpriv = existsSync('/usr/bin/setpriv') ? '/usr/bin/setpriv' : undefined;

export class Supervised {
  proc: ChildProcess | undefined;
  restarts = 0;
  private delayMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;

  constructor(
    readonly spec: ProcessSpec,
    private readonly say: (line: string) => void,
    private readonly backoff: Backoff,
  ) {}

  get pid(): number | undefined {
    return this.proc?.exitCode === null && this.proc.signalCode === null ? this.proc.pid : undefined;
  }

  start(): void {
    const { name, cmd, args } = this.spec;
    const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', cmd, ...args]] : [cmd, args];
    const proc = spawn(file, argv, { cwd: this.spec.cwd, env: this.spec.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.proc = proc;
    const startedAt = Date.now();
    for (const stream of [proc.stdout!, proc.stderr!]) createInterface({ input: stream }).on('line', (l) => this.say(`${name.padEnd(10)} ${l}`));
    proc.once('error', (err) => this.say(`${name.padEnd(10)} cannot start ${cmd}: ${err.message}`));
    proc.once('spawn', () => this.say(`${name.padEnd(10)} started (pid ${proc.pid})`));
    proc.once('close', (code, signal) => {
      if (this.stopping) return;
      this.delayMs = nextDelay(this.delayMs, Date.now() - startedAt, this.backoff);
      this.restarts++;
      this.say(`${name.padEnd(10)} ${exitLine(code, signal, this.delayMs, this.restarts)}`);
      this.timer = setTimeout(() => this.start(), this.delayMs);
    });
  }

  // SIGTERM, and SIGKILL to its whole group if it is still there after the grace time.
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const closed = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill('SIGTERM');
    const t = setTimeout(() => {
      try {
        process.kill(-proc.pid!, 'SIGKILL');
      } catch {
        proc.kill('SIGKILL');
      }
    }, STOP_GRACE_MS);
    await closed;
    clearTimeout(t);
  }
}

export class Supervisor {
  readonly children = new Map<string, Supervised>();
  private closed = false;

  constructor(
    private readonly say: (line: string) => void,
    private readonly backoff: Backoff = defaultBackoff,
  ) {}

  // After stop() has begun, nothing new starts (a Ctrl-C during start-up).
  start(spec: ProcessSpec): Supervised | undefined {
    if (this.closed) return undefined;
    const s = new Supervised(spec, this.say, this.backoff);
    this.children.set(spec.name, s);
    s.start();
    return s;
  }

  // Stops in the order given, each group all at once and fully before the next.
  async stop(order: string[][]): Promise<void> {
    this.closed = true;
    const named = new Set(order.flat());
    const rest = [...this.children.keys()].filter((n) => !named.has(n));
    for (const group of [rest, ...order]) await Promise.all(group.map((n) => this.children.get(n)?.stop()));
  }
}
