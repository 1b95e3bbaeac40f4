import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../services/lib/config.ts';
import { spawnGroup, type Shell } from './make.ts';

// The README's shell blocks are the commands a user types. A test that runs
// one names it through readmeCommand(), which fails if the README no longer
// shows it exactly so; test/readme-commands.test.ts checks that every command
// the README shows is named by some test.

export const readmePath = join(repoRoot, 'README.md');

// Every line of every ```sh block, without its trailing "# comment".
export function readmeCommands(text = readFileSync(readmePath, 'utf8')): string[] {
  const out: string[] = [];
  for (const block of text.matchAll(/^```sh\n([\s\S]*?)^```/gm)) {
    for (const raw of block[1].split('\n')) {
      const line = raw.replace(/\s+#\s.*$/, '').trim();
      if (line && !line.startsWith('#')) out.push(line);
    }
  }
  return out;
}

export function readmeCommand(cmd: string): string {
  if (!readmeCommands().includes(cmd)) throw new Error(`README.md does not show the command ${JSON.stringify(cmd)}; the test runs what the README says`);
  return cmd;
}

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

// Runs a README command as a user's shell would: /bin/sh -c, in cwd, with env
// added to this process's environment.
export function runReadme(cmd: string, o: { cwd: string; env?: Record<string, string>; timeoutMs?: number; input?: string }): Promise<Ran> {
  readmeCommand(cmd);
  return new Promise((resolve, reject) => {
    const p = spawn('/bin/sh', ['-c', cmd], { cwd: o.cwd, env: { ...process.env, ...o.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`"${cmd}" did not finish within ${o.timeoutMs ?? 120_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, o.timeoutMs ?? 120_000);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    p.stdin.end(o.input ?? '');
  });
}

// A README command that runs until Ctrl-C (make dev, sealkit watch): in its
// own process group, as a terminal runs it; Shell.signal('SIGINT') is Ctrl-C.
export function spawnReadme(cmd: string, o: { cwd: string; env?: NodeJS.ProcessEnv }): Shell {
  readmeCommand(cmd);
  return spawnGroup('/bin/sh', ['-c', cmd], o);
}
