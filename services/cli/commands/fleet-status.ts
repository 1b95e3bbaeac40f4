import type { CloudEvent } from '../../lib/envelope.ts';
import type { HubStreamKind } from '../../lib/hubshards.ts';
import { replayStream } from '../../lib/streams.ts';
import { parseEvent } from '../../lib/envelope.ts';
import { subjects } from '../../lib/subjects.ts';
import { none, timeoutMs, type Command } from './common.ts';
import { connectHub, eventNode, hubOptions, hubShards, hubUsage, readRegistry } from './fleet-hub.ts';

// Where each column comes from: the registry names the nodes; the serial,
// the enforcement mode and the last denial are the last such event of the
// node that the hub's streams keep (so a node away now still shows what it
// last said); the heartbeat and the services alive are live only (the
// heartbeat is a signal no stream keeps), heard for --wait seconds.
const HEARTBEAT_SEC = 11; // nodeinfo beats every 10 s

interface Row {
  heartbeat?: string;
  services?: string[];
  serial?: number;
  mode?: string;
  denial?: string;
}

export const fleetStatus: Command = {
  name: 'fleet status',
  summary: 'every enrolled node: last heartbeat, policy serial, enforcement mode, services alive, last denial',
  usage: `usage: sealkit fleet status [--wait SEC] [--json]

One line per node of the hub's registry. Serial, enforcement mode and last
denial are the node's last such events in the hub's streams; the heartbeat
and the services alive are heard live for --wait seconds.

options:
  --wait SEC    how long to listen for heartbeats (default ${HEARTBEAT_SEC})
  --json        one JSON object per node
  -h, --help    this help
${hubUsage}`,
  options: { ...hubOptions, wait: { type: 'string' }, json: { type: 'boolean' } },
  async run(o, positionals) {
    none(positionals, 'fleet status');
    const waitMs = timeoutMs({ timeout: o.wait }, HEARTBEAT_SEC, 'fleet status');
    const nc = await connectHub(o);
    try {
      const registry = await readRegistry(nc);
      const rows = new Map<string, Row>(registry.map((n) => [n.node, {}]));
      const row = (ev: CloudEvent) => rows.get(eventNode(ev) ?? '');
      const heard = nc.subscribe(subjects.node.heartbeat, {
        callback: (err, m) => {
          if (err) return;
          try {
            const ev = parseEvent(m.data);
            const r = row(ev);
            if (!r) return;
            r.heartbeat = ev.time;
            r.services = ((ev.data as { services?: Array<{ service?: string }> }).services ?? []).map((s) => s.service ?? '?');
          } catch {
            // not an event
          }
        },
      });
      const shards = { audit: await hubShards(nc, 'audit'), events: await hubShards(nc, 'events') };
      // oldest first within a shard; a node's events are all in its one shard
      const last = async (kind: HubStreamKind, subject: string, take: (r: Row, ev: CloudEvent) => void) => {
        for (const stream of shards[kind]) await replay(stream, subject, take);
      };
      const replay = async (stream: string, subject: string, take: (r: Row, ev: CloudEvent) => void) =>
        replayStream(nc, stream, subject, (data) => {
          try {
            const ev = parseEvent(data);
            const r = row(ev);
            if (r) take(r, ev);
          } catch {
            // a hub stream holds only events
          }
        }, { onLeader: true });
      await last('events', subjects.policy.applied, (r, ev) => (r.serial = (ev.data as { serial?: number }).serial));
      await last('events', subjects.ima.enforcing, (r, ev) => (r.mode = String((ev.data as { mode?: unknown }).mode ?? '')));
      await last('audit', subjects.audit.denial, (r, ev) => (r.denial = `${ev.time} ${(ev.data as { path?: string; file?: string }).path ?? (ev.data as { file?: string }).file ?? ''}`));
      await new Promise((r) => setTimeout(r, waitMs));
      heard.unsubscribe();
      for (const [node, r] of rows) {
        if (o.json) process.stdout.write(JSON.stringify({ node, ...r }) + '\n');
        else
          process.stdout.write(
            `${node}  heartbeat ${r.heartbeat ?? 'none'}  serial ${r.serial ?? '-'}  ima ${r.mode ?? '-'}  services ${r.services?.join(',') ?? '-'}  last denial ${r.denial ?? 'none'}\n`,
          );
      }
    } finally {
      await nc.close();
    }
    return 0;
  },
};
