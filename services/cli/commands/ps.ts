import type { PsEntry } from '../../lib/contract.ts';
import { duration, table } from '../format.ts';
import { askPs } from '../runner.ts';
import { busUsage, connect, none, server, timeoutMs, type Command } from './common.ts';

// The states in which a container has a reason worth a column: why it does
// not run (a running one, or one between runs, needs none).
const EXPLAINED = new Set<PsEntry['state']>(['waiting', 'stopped', 'refused', 'exited']);

export const ps: Command = {
  name: 'ps',
  summary: 'the containers the policy names: image, digest, state, restarts, uptime',
  usage: `usage: sealkit ps [--json] [--timeout SEC]

Asks the runner (runner.ps) for every container the policy names or it still
runs, one line each: name, image, the first 12 digits of the image digest,
state (waiting, starting, running, restarting, stopped, refused, exited),
restarts, uptime of the current run, and why it is not running where the
runner says. Exits 1 when no runner answers.

options:
  --json           print {containers: [...]} as the runner answered, each with uptimeSec
  --timeout SEC    how long to wait for the runner's answer (default 5)
  -h, --help       this help
${busUsage}`,
  options: { json: { type: 'boolean' }, timeout: { type: 'string' } },
  bus: true,
  async run(o, positionals) {
    none(positionals, 'ps');
    const ms = timeoutMs(o, 5, 'ps');
    const nc = await connect(o, false);
    let containers: PsEntry[];
    try {
      containers = await askPs(nc, ms, server(o));
    } finally {
      await nc.close();
    }
    const now = Date.now();
    if (o.json) {
      const withUptime = containers.map((c) => {
        const up = uptimeMs(c, now);
        return { ...c, uptimeSec: up === null ? null : Math.floor(up / 1000) };
      });
      process.stdout.write(JSON.stringify({ containers: withUptime }) + '\n');
      return 0;
    }
    const rows = containers.map((c) => {
      const up = uptimeMs(c, now);
      return [c.name, `${c.image.name}:${c.image.tag}`, shortDigest(c.image.digest), c.state, String(c.restarts), up === null ? '-' : duration(up), EXPLAINED.has(c.state) ? (c.reason ?? '') : ''];
    });
    process.stdout.write(table([['NAME', 'IMAGE', 'DIGEST', 'STATE', 'RESTARTS', 'UPTIME', 'REASON'], ...rows]));
    if (!containers.length) process.stderr.write('sealkit: the policy in force names no containers\n');
    return 0;
  },
};

// Uptime is the current run's: a container between runs has none. The
// runner's clock wrote startedAt; a skew that puts it in the future is 0.
function uptimeMs(c: PsEntry, now: number): number | null {
  if (c.state !== 'running' || !c.startedAt) return null;
  const at = Date.parse(c.startedAt);
  return Number.isNaN(at) ? null : Math.max(0, now - at);
}

function shortDigest(digest: string | null): string {
  return digest ? digest.replace(/^sha256:/, '').slice(0, 12) : '-';
}
