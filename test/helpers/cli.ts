import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../../services/lib/config.ts';

// Runs bin/sealkit as a person would, returning exit code and output.
export function sealkit(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(join(repoRoot, 'bin', 'sealkit'), args, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
