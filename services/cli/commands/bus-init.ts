import { ensureStreams } from '../../lib/streams.ts';
import { streams } from '../../lib/subjects.ts';
import { SealkitError } from '../../lib/errors.ts';
import { busUsage, connect, none, server, timeoutMs, waiting, type Command } from './common.ts';

export const busInit: Command = {
  name: 'bus init',
  summary: 'create the JetStream streams and the policy bucket',
  usage: `usage: sealkit bus init [--timeout SEC]

Creates or updates the JetStream streams and the policy KV bucket (admin
credentials).

options:
  --timeout SEC    how long to wait for JetStream (default 30)
  -h, --help       this help
${busUsage}`,
  options: { timeout: { type: 'string' } },
  bus: true,
  async run(o, positionals) {
    none(positionals, 'bus init');
    const ms = timeoutMs(o, 30, 'bus init');
    const nc = await connect(o, true);
    let timer: NodeJS.Timeout | undefined;
    try {
      waiting(`JetStream on ${server(o)} to create the streams`, ms);
      await Promise.race([
        ensureStreams(nc),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new SealkitError('SEALKIT_TIMEOUT', `JetStream on ${server(o)} did not create the streams within ${ms / 1000} s; is nats-server running with JetStream?`)), ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      await nc.close();
    }
    process.stdout.write(`streams ${streams.audit.name}, ${streams.events.name} and the policy bucket are ready on ${server(o)}\n`);
    return 0;
  },
};
