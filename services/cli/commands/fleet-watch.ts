import { ChainVerifier, parseNodeKeys } from '../../lib/eventverify.ts';
import { prettyEvent } from '../format.ts';
import { one, readInput, type Command } from './common.ts';
import { eventOf, eventSubjects } from './watch.ts';
import { connectHub, hubOptions, hubUsage } from './fleet-hub.ts';
import { gapLine, hubKeys, verdictLine } from './fleet-verify.ts';

export const fleetWatch: Command = {
  name: 'fleet watch',
  summary: "print every node's events as the hub sees them ('audit.*', '>')",
  usage: `usage: sealkit fleet watch SUBJECT [--json] [--keys FILE]

Like "sealkit watch", on the hub: every enrolled node's live events on
SUBJECT ('audit.*', 'policy.applied', '>'), one per line, each naming its
node. Each event is checked against the registry of node keys and its
publisher's chain: a forged, altered, reordered, duplicate or forked event is
flagged on stderr, and so is a gap (events the live view missed, such as
those of a node that was cut off: the hub's streams keep them, "sealkit fleet
verify" checks those). Runs until Ctrl-C.

options:
  --json        print each CloudEvent as one JSON line
  --keys FILE   the registry: "node: <base64 ed25519 public key>" (default:
                the hub's registry of enrolled nodes)
  -h, --help    this help
${hubUsage}`,
  options: { ...hubOptions, json: { type: 'boolean' }, keys: { type: 'string' } },
  async run(o, positionals) {
    const subject = one(positionals, 'SUBJECT', 'fleet watch');
    const subs = eventSubjects(subject);
    const nc = await connectHub(o);
    const keys = o.keys ? parseNodeKeys((await readInput(o.keys as string)).toString('utf8'), o.keys as string) : await hubKeys(nc, 'the hub');
    const verifier = new ChainVerifier(keys);
    const stop = () => {
      setTimeout(() => process.exit(0), 2000).unref();
      void nc.close().finally(() => process.exit(0));
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const live = subs.map((s) =>
      nc.subscribe(s, {
        callback: (err, m) => {
          const ev = err ? null : eventOf(m);
          if (!ev) return;
          const v = verifier.check(ev);
          if (v.gap) process.stderr.write(gapLine(v.gap).replace('never arrived', 'not seen live') + '\n');
          if (v.kind !== 'ok') process.stderr.write(verdictLine(v) + '\n');
          process.stdout.write((o.json ? JSON.stringify(ev) : prettyEvent(ev, process.stdout.isTTY)) + '\n');
        },
      }),
    );
    await nc.flush();
    process.stderr.write(`watching ${subject} on the hub; Ctrl-C stops\n`);
    await Promise.all(live.map((s) => s.closed));
    return 0;
  },
};
