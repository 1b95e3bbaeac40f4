import type { NatsConnection } from 'nats';
import { hubStreams, nodesBucket, type FleetNodeEntry } from '../../lib/fleet.ts';
import { ChainVerifier, checkEventKey, parseNodeKeys, type Gap, type NodeKeys, type Verdict } from '../../lib/eventverify.ts';
import { replayStream } from '../../lib/streams.ts';
import { hubShardNames, isShardStream, type HubStreamKind } from '../../lib/hubshards.ts';
import { SealkitError } from '../../lib/errors.ts';
import { busUsage, connect, none, readInput, server, type Command } from './common.ts';

export const fleetVerify: Command = {
  name: 'fleet verify',
  summary: 'check every event\'s node signature and chain: forged, altered, missing, reordered',
  usage: `usage: sealkit fleet verify [--stream NAME[,NAME…] | --file F] [--keys FILE] [--from-start]

Checks events against the fleet's registry of node keys: each must be signed
by the key of the node its source names, and each publisher's chain (seq,
previous hash) must be whole. Prints each problem (forged, altered, missing,
reordered, duplicate, forked), then one summary line per publisher. Exits 1
on any problem.

options:
  --stream NAMES   the streams to read, oldest first (default on the hub: every
                   shard, ${hubStreams.audit}_<k> then ${hubStreams.events}_<k>; on a node:
                   SEALKIT_AUDIT,SEALKIT_EVENTS)
  --file F         read events from F instead, one JSON event a line (- for stdin)
  --keys FILE      the registry: YAML or JSON "node: <base64 ed25519 public key>",
                   or a node's events.json (default: the hub's ${nodesBucket} bucket)
  --from-start     the input holds every chain from its start: a chain first
                   seen after seq 1 is missing its beginning
  -h, --help       this help
${busUsage}`,
  options: { stream: { type: 'string' }, file: { type: 'string' }, keys: { type: 'string' }, 'from-start': { type: 'boolean' } },
  bus: true,
  async run(o, positionals) {
    none(positionals, 'fleet verify');
    const file = o.file as string | undefined;
    if (file !== undefined && o.stream !== undefined) throw new SealkitError('SEALKIT_BAD_REQUEST', 'fleet verify: --file and --stream both name the input; give one');
    let nc: NatsConnection | undefined;
    const bus = async () => (nc ??= await connect(o, false));
    try {
      const keys = o.keys ? parseNodeKeys((await readInput(o.keys as string)).toString('utf8'), o.keys as string) : await hubKeys(await bus(), server(o));
      const v = new ChainVerifier(keys, { fromStart: o['from-start'] === true });
      let problems = 0;
      let events = 0;
      const feed = (ev: unknown) => {
        events++;
        const r = v.check(ev);
        if (r.kind !== 'ok') {
          problems++;
          process.stdout.write(verdictLine(r) + '\n');
        }
      };
      if (file !== undefined) {
        const text = (file === '-' ? await readStdin() : await readInput(file)).toString('utf8');
        text.split('\n').forEach((line, i) => {
          if (!line.trim()) return;
          let ev: unknown;
          try {
            ev = JSON.parse(line);
          } catch (err) {
            throw new SealkitError('SEALKIT_BAD_REQUEST', `${file === '-' ? 'stdin' : file}: line ${i + 1} is not JSON (${(err as Error).message}); give one CloudEvent a line`);
          }
          feed(ev);
        });
      } else {
        const shards = async (kind: HubStreamKind) => hubShardNames(await (await bus()).jetstreamManager({ checkAPI: false }), kind);
        const names = o.stream ? String(o.stream).split(',').filter(Boolean) : [...(await shards('audit')), ...(await shards('events'))];
        for (const name of names) {
          try {
            // the hub's streams are replicated: read from their leaders
            const hub = isShardStream(name) || (Object.values(hubStreams) as string[]).includes(name);
            await replayStream(await bus(), name, '>', (data) => feed(parse(data)), { onLeader: hub });
          } catch (err) {
            throw new SealkitError('SEALKIT_UNAVAILABLE', `cannot read stream ${name} on ${server(o)}: ${(err as Error).message}; name the streams with --stream (a node has SEALKIT_AUDIT,SEALKIT_EVENTS)`);
          }
        }
      }
      for (const g of v.gaps()) {
        problems++;
        process.stdout.write(gapLine(g) + '\n');
      }
      for (const p of v.summary()) {
        const chains = p.chains.map((c) => `${c.chain} ${c.first}..${c.last} (${c.events} events${c.missing ? `, ${c.missing} missing` : ''}, epoch ${c.epoch})`);
        const bad = Object.entries(p.counts).filter(([k, n]) => k !== 'ok' && n > 0).map(([k, n]) => `${n} ${k}`);
        process.stdout.write(`${p.publisher}: ${chains.join('; ') || 'no chain'}${p.counts.ok ? `; ${p.counts.ok} ok` : ''}${bad.length ? `; ${bad.join(', ')}` : ''}\n`);
      }
      process.stdout.write(`${events} events, ${problems ? `${problems} problem${problems > 1 ? 's' : ''}` : 'no problems'}\n`);
      return problems ? 1 : 0;
    } finally {
      await (nc as NatsConnection | undefined)?.close();
    }
  },
};

function parse(data: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(data).toString('utf8'));
  } catch {
    return null; // judged: not an event
  }
}

export function verdictLine(r: Verdict): string {
  const where = r.chain ? ` ${r.chain} seq ${r.seq}` : '';
  return `${r.kind.padEnd(9)} ${r.publisher}${where} ${r.type ?? ''} id ${r.id ?? '?'}: ${r.reason ?? ''}`;
}

export function gapLine(g: Gap): string {
  return `${'missing'.padEnd(9)} ${g.publisher} ${g.chain} seq ${g.from === g.to ? g.from : `${g.from}..${g.to}`} (epoch ${g.epoch}): never arrived`;
}

// The registry the operator keeps on the hub (sealkit fleet enroll).
export async function hubKeys(nc: NatsConnection, where: string): Promise<NodeKeys> {
  const missing = `no registry of node keys: the bucket ${nodesBucket} on ${where}`;
  const kv = await nc.jetstream().views.kv(nodesBucket, { bindOnly: true });
  const nodes: string[] = [];
  try {
    for await (const node of await kv.keys()) nodes.push(node);
  } catch (err) {
    throw new SealkitError('SEALKIT_CONFIG', `${missing} cannot be read (${(err as Error).message}); enroll nodes with "sealkit fleet enroll", or pass --keys FILE`);
  }
  const keys: NodeKeys = new Map();
  for (const node of nodes) {
    const e = await kv.get(node);
    if (!e || e.operation !== 'PUT') continue;
    let entry: Partial<FleetNodeEntry>;
    try {
      entry = e.json<FleetNodeEntry>();
    } catch {
      throw new SealkitError('SEALKIT_CONFIG', `${nodesBucket} key ${node} is not a JSON node entry`);
    }
    keys.set(node, checkEventKey(entry.eventKey, `${nodesBucket} key ${node}: eventKey`));
  }
  if (keys.size === 0) throw new SealkitError('SEALKIT_CONFIG', `${missing} is empty; enroll nodes with "sealkit fleet enroll", or pass --keys FILE`);
  return keys;
}

async function readStdin(): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of process.stdin) parts.push(c as Buffer);
  return Buffer.concat(parts);
}
