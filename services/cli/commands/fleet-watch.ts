import { prettyEvent } from '../format.ts';
import { one, type Command } from './common.ts';
import { eventOf, eventSubjects } from './watch.ts';
import { connectHub, hubOptions, hubUsage } from './fleet-hub.ts';

export const fleetWatch: Command = {
  name: 'fleet watch',
  summary: "print every node's events as the hub sees them ('audit.*', '>')",
  usage: `usage: sealkit fleet watch SUBJECT [--json]

Like "sealkit watch", on the hub: every enrolled node's live events on
SUBJECT ('audit.*', 'policy.applied', '>'), one per line, each naming its
node. Runs until Ctrl-C.

options:
  --json        print each CloudEvent as one JSON line
  -h, --help    this help
${hubUsage}`,
  options: { ...hubOptions, json: { type: 'boolean' } },
  async run(o, positionals) {
    const subject = one(positionals, 'SUBJECT', 'fleet watch');
    const subs = eventSubjects(subject);
    const nc = await connectHub(o);
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
          if (ev) process.stdout.write((o.json ? JSON.stringify(ev) : prettyEvent(ev, process.stdout.isTTY)) + '\n');
        },
      }),
    );
    await nc.flush();
    process.stderr.write(`watching ${subject} on the hub; Ctrl-C stops\n`);
    await Promise.all(live.map((s) => s.closed));
    return 0;
  },
};
