import type { Msg, NatsConnection } from 'nats';
import { parseEvent, type CloudEvent } from '../../lib/envelope.ts';
import { replayStream } from '../../lib/streams.ts';
import { streams } from '../../lib/subjects.ts';
import { specs } from '../../lib/contract.ts';
import { SealkitError } from '../../lib/errors.ts';
import { prettyEvent } from '../format.ts';
import { busUsage, connect, one, server, type Command } from './common.ts';

// The subjects events are published on. A '>' subscription by the admin
// user would also receive JetStream API traffic and every event again as
// JetStream hands it to a consumer's inbox (the importer's and ima's durable
// consumers do that all day), and an anonymous one is refused: watch
// subscribes to these, or to what the user asked where that is narrower.
export const EVENT_SUBJECTS = [
  ...streams.audit.subjects, // exactly two tokens, by design
  ...specs.filter((s) => s.kind !== 'request' && s.stream !== 'audit').map((s) => s.subject),
];

const SEEN_IDS = 100_000;

export const watch: Command = {
  name: 'watch',
  summary: 'print events like "nats sub" (\'audit.*\', \'image.*\', \'>\')',
  usage: `usage: sealkit watch SUBJECT [--json] [--replay]

Prints events as they arrive, one per line. SUBJECT is a NATS subject with
wildcards: 'audit.*', 'image.*', '>'. Only CloudEvents are printed: requests
and JetStream traffic on the same subjects are not events. Runs until Ctrl-C.

options:
  --json        print each CloudEvent as one JSON line
  --replay      first print what the node's streams kept, oldest first
  -h, --help    this help
${busUsage}`,
  options: { json: { type: 'boolean' }, replay: { type: 'boolean' } },
  bus: true,
  async run(o, positionals) {
    const subject = one(positionals, 'SUBJECT', 'watch');
    const subs = eventSubjects(subject);
    const nc = await connect(o, false);
    // an event replayed and then seen live, or published again by an outbox
    // whose ack was lost, is printed once; the last ids are enough for that
    const seen = new Set<string>();
    const print = (ev: CloudEvent) => {
      if (seen.has(ev.id)) return;
      seen.add(ev.id);
      if (seen.size > SEEN_IDS) seen.delete(seen.values().next().value as string);
      process.stdout.write((o.json ? JSON.stringify(ev) : prettyEvent(ev, process.stdout.isTTY)) + '\n');
    };
    // Ctrl-C may land in the middle of --replay: closing the connection
    // then fails the replay, which is the user's doing, not an error.
    let stopping = false;
    const stop = () => {
      stopping = true;
      setTimeout(() => process.exit(0), 2000).unref();
      void nc.close().finally(() => process.exit(0));
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      // live first, held back while the replay runs, so that nothing
      // published between the two is missed
      let held: CloudEvent[] | null = o.replay ? [] : null;
      const onLive = (m: Msg) => {
        const ev = eventOf(m);
        if (!ev) return;
        if (held) held.push(ev);
        else print(ev);
      };
      const live = subs.map((s) => nc.subscribe(s, { callback: (err, m) => !err && onLive(m) }));
      await nc.flush();
      // like "nats sub": say when the subscription is in place (stderr, so
      // --json output stays events only)
      process.stderr.write(`watching ${subject} on ${server(o)}${o.replay ? ', after what the streams kept' : ''}; Ctrl-C stops\n`);
      if (o.replay) {
        await replay(nc, subject, (ev) => print(ev), () => stopping);
        for (const ev of held ?? []) print(ev);
        held = null;
      }
      if (stopping) return 0;
      await Promise.all(live.map((s) => s.closed));
    } catch (err) {
      if (!stopping) throw err;
    }
    return 0;
  },
};

// The subscriptions for SUBJECT: the event subjects it covers; or SUBJECT
// itself where it only partly overlaps one (audit.denial) or names no known
// event subject at all (a plugin's own events, say).
export function eventSubjects(subject: string): string[] {
  const tokens = subject.split('.');
  if (!subject || tokens.some((t) => t === '' || /\s/.test(t)) || tokens.slice(0, -1).includes('>')) {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `watch: "${subject}" is not a NATS subject; try 'audit.*', 'image.*' or '>'`);
  }
  const covered = EVENT_SUBJECTS.filter((k) => covers(tokens, k.split('.')));
  const partly = EVENT_SUBJECTS.some((k) => !covers(tokens, k.split('.')) && intersects(tokens, k.split('.')));
  return partly || covered.length === 0 ? [subject] : covered;
}

// Every subject filter b matches, a matches too.
function covers(a: string[], b: string[]): boolean {
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '>') return i < b.length;
    if (i >= b.length || b[i] === '>') return false;
    if (a[i] !== '*' && a[i] !== b[i]) return false;
  }
  return a.length === b.length;
}

// Some subject matches both filters.
function intersects(a: string[], b: string[]): boolean {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] === '>' || b[i] === '>') return i < a.length && i < b.length;
    if (a[i] === undefined || b[i] === undefined) return false;
    if (a[i] !== '*' && b[i] !== '*' && a[i] !== b[i]) return false;
  }
  return true;
}

// An event is a CloudEvent published on its own subject (type = subject);
// request bodies, replies and consumer deliveries are not.
export function eventOf(m: Msg): CloudEvent | null {
  if (m.data.length === 0) return null;
  try {
    const ev = parseEvent(m.data);
    return ev.type === m.subject ? ev : null;
  } catch {
    return null;
  }
}

// What the streams kept for SUBJECT, oldest first.
async function replay(nc: NatsConnection, subject: string, print: (ev: CloudEvent) => void, stopping: () => boolean): Promise<void> {
  const first = subject.split('.')[0];
  const names = first === 'audit' ? [streams.audit.name] : first === '>' || first === '*' ? [streams.audit.name, streams.events.name] : [streams.events.name];
  for (const stream of names) {
    if (stopping()) return;
    try {
      await replayStream(nc, stream, subject, (data) => {
        try {
          print(parseEvent(data));
        } catch {
          // a stream holds only events; anything else is not printed
        }
      });
    } catch (err) {
      if (stopping()) return;
      process.stderr.write(`replay of ${stream} unavailable: ${(err as Error).message}\n`);
    }
  }
}
