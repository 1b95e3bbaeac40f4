// The commands make dev and make run print for driving the node they started,
// exactly as they must be typed in another terminal from the same directory:
// the state and the bus are named only where they differ from the CLI's
// defaults, so the common case reads like the README.
import { join, relative } from 'node:path';
import { repoRoot } from '../lib/config.ts';

const defaultUrl = 'nats://127.0.0.1:4222';

const shq = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

function shown(path: string, cwd: string): string {
  const rel = relative(cwd, path);
  return rel && !rel.startsWith('..') ? rel : path;
}

export function nodeHowto(o: { state: string; url: string; cwd?: string }): string {
  const cwd = o.cwd ?? process.cwd();
  const env = [
    o.state !== join(repoRoot, 'state') ? `SEALKIT_STATE=${shq(o.state)}` : '',
    o.url !== defaultUrl ? `SEALKIT_NATS_URL=${o.url}` : '',
  ].filter(Boolean);
  const bin = [...env, shq(shown(join(repoRoot, 'bin', 'sealkit'), cwd))].join(' ');
  const key = shq(shown(join(o.state, 'keys', 'admin.key'), cwd));
  return [
    `  watch    ${bin} watch 'audit.*'`,
    `           ${bin} watch '>' --replay`,
    `  status   ${bin} status`,
    `  push     ${bin} policy sign policy.yaml --key ${key}`,
    `           ${bin} policy push policy.yaml`,
  ].join('\n');
}
