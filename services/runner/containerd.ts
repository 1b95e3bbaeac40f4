import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { SealkitError } from '../lib/errors.ts';

// The workloads' tasks through containerd's own CLI, as the importer drives
// images: create a container from a spec file, start its task detached with
// its output appended to a file by the shim (so nothing of ours sits in the
// output path, and a runner restart loses none of it), list, signal, delete,
// and follow /tasks/exit. Every call names the namespace.

export interface Task {
  id: string;
  pid: number;
  status: string; // RUNNING, STOPPED, CREATED, PAUSED…
}

export interface TaskExit {
  id: string;
  pid: number;
  status: number; // containerd's exit status: 128 + n for a signal n
}

const UNREACHABLE = /failed to dial|connection refused|connection reset|no such file or directory.*sock|Unavailable|transport is closing|error reading from server|context deadline exceeded|broken pipe/i;
const NOT_FOUND = /not found/i;
const EXISTS = /already exists/i;

export class Ctr {
  constructor(
    readonly sock: string,
    readonly namespace: string,
    private readonly bin = process.env.SEALKIT_CTR ?? 'ctr',
    // the OCI runtime binary containerd's runc shim runs (its BinaryName):
    // crun on the node (iso/parts/runc), the shim's default runc elsewhere
    private readonly runtime = process.env.SEALKIT_OCI_RUNTIME || undefined,
  ) {}

  private base(): string[] {
    return ['--address', this.sock, '--connect-timeout', '3s', '--namespace', this.namespace];
  }

  private exec(args: string[]): Promise<{ stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      execFile(this.bin, [...this.base(), ...args], { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          return reject(new SealkitError('SEALKIT_CONFIG', `cannot run ${this.bin}: not found; install containerd's ctr or set SEALKIT_CTR`));
        }
        const msg = stderr.trim().split('\n').filter((l) => l.startsWith('ctr: ')).pop()?.slice(5) ?? (stderr.trim() || err.message);
        if (UNREACHABLE.test(msg)) {
          return reject(new SealkitError('SEALKIT_UNAVAILABLE', `containerd at ${this.sock} is not answering (${msg}); the runner retries when it is back`, { sock: this.sock }));
        }
        reject(new SealkitError('SEALKIT_START_FAILED', `ctr ${args.slice(0, 2).join(' ')} ${args.at(-1)} in namespace ${this.namespace} failed: ${msg}`, { notFound: NOT_FOUND.test(msg), exists: EXISTS.test(msg) }));
      });
    });
  }

  // Create the container from the spec and start its task, in one ctr
  // (each ctr is a process and a connection: two would cost a bare
  // `ctr run`'s time again). containerd's shim appends stdout and stderr to
  // logFile itself; the task's pid lands in pidFile. On failure the caller
  // removes whatever was made.
  async run(id: string, specFile: string, labels: Record<string, string>, logFile: string, pidFile: string): Promise<void> {
    await this.exec(['run', '--detach', ...(this.runtime ? ['--runc-binary', this.runtime] : []), '--config', specFile, '--log-uri', `file://${logFile}`, '--pid-file', pidFile, ...Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]), id]);
  }

  async tasks(): Promise<Map<string, Task>> {
    const { stdout } = await this.exec(['tasks', 'ls']);
    const out = new Map<string, Task>();
    for (const line of stdout.split('\n').slice(1)) {
      const [id, pid, status] = line.trim().split(/\s+/);
      if (id && /^\d+$/.test(pid ?? '')) out.set(id, { id, pid: Number(pid), status });
    }
    return out;
  }

  // Containers carrying `label`, with their labels: the runner's, never the
  // node's own services that share the namespace.
  async containers(label: string): Promise<Map<string, Record<string, string>>> {
    const { stdout } = await this.exec(['containers', 'ls', '--quiet', `labels.${JSON.stringify(label)}`]);
    const out = new Map<string, Record<string, string>>();
    for (const id of stdout.split('\n').map((l) => l.trim()).filter(Boolean)) {
      const labels = await this.labels(id);
      if (labels) out.set(id, labels);
    }
    return out;
  }

  // null: no such container
  async labels(id: string): Promise<Record<string, string> | null> {
    try {
      const { stdout } = await this.exec(['containers', 'info', id]);
      return ((JSON.parse(stdout) as { Labels?: Record<string, string> }).Labels ?? {});
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  // false: no task to signal (it has already exited)
  async kill(id: string, signal: 'SIGTERM' | 'SIGKILL'): Promise<boolean> {
    try {
      await this.exec(['tasks', 'kill', '--signal', signal, id]);
      return true;
    } catch (err) {
      if (isNotFound(err) || /process already finished/i.test((err as Error).message)) return false;
      throw err;
    }
  }

  // The task's exit code as `ctr tasks delete` reports it (0 when it says
  // nothing); null when there was no task.
  async deleteTask(id: string, force = false): Promise<number | null> {
    try {
      const { stderr } = await this.exec(['tasks', 'delete', ...(force ? ['--force'] : []), id]);
      const m = /exit code (\d+)/.exec(stderr);
      return m ? Number(m[1]) : 0;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async deleteContainer(id: string): Promise<void> {
    try {
      await this.exec(['containers', 'delete', id]);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  // /tasks/exit of this namespace, one call per exit, until the stream ends
  // (containerd went away); `ended` is told once.
  followExits(onExit: (e: TaskExit) => void, ended: (why: string) => void): ChildProcess {
    const child = spawn(this.bin, ['--address', this.sock, 'events'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d).slice(-2000)));
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      // <date> <time> <zone> <zone> <namespace> <topic> <json>
      const m = /^\S+ \S+ \S+ \S+ (\S+) \/tasks\/exit (\{.*\})$/.exec(line);
      if (!m || m[1] !== this.namespace) return;
      try {
        const e = JSON.parse(m[2]) as { container_id?: string; id?: string; pid?: number; exit_status?: number };
        // an exec'd process's exit carries its own id; only the task's init ends the task
        if (e.container_id && (e.id === undefined || e.id === e.container_id)) onExit({ id: e.container_id, pid: e.pid ?? 0, status: e.exit_status ?? 0 });
      } catch {
        // a line we cannot read is not an exit
      }
    });
    child.once('error', (err) => ended(err.message));
    child.once('close', (code) => ended(stderr.trim() || `ctr events exited with ${code}`));
    return child;
  }
}

export function isExisting(err: unknown): boolean {
  return err instanceof SealkitError && err.data?.exists === true;
}

export function isNotFound(err: unknown): boolean {
  return err instanceof SealkitError && err.data?.notFound === true;
}
