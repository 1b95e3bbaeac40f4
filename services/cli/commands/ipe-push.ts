import { request } from '../../lib/bus.ts';
import { checkReply, contract } from '../../lib/contract.ts';
import { busUsage, connect, one, readInput, server, timeoutMs, waiting, type Command } from './common.ts';

export const ipePush: Command = {
  name: 'ipe push',
  summary: 'push an owner-signed IPE policy to the node (applied now, kept for boot)',
  usage: `usage: sealkit ipe push FILE [--json]

Sends FILE (policy.p7b from "sealkit ipe policy") on ima.ipe. The node
applies it at once if its kernel takes it (signed by a key in the firmware's
db, a higher version than the active one, containers can still start under
it) and keeps it for the boot step of the next boots; otherwise it answers
with a code (SEALKIT_POLICY_ROLLBACK, SEALKIT_KEY_UNTRUSTED, …) and keeps
nothing.

options:
  --json           print the node's reply as JSON
  --timeout SEC    how long to wait for the ima service's answer (default 30)
  -h, --help       this help
${busUsage}`,
  options: { json: { type: 'boolean' }, timeout: { type: 'string' } },
  bus: true,
  async run(o, positionals) {
    const file = one(positionals, 'FILE', 'ipe push');
    const p7b = Buffer.from(await readInput(file)).toString('base64');
    const ms = timeoutMs(o, 30, 'ipe push');
    const nc = await connect(o, true);
    try {
      waiting(`the ima service to answer ima.ipe on ${server(o)}`, ms);
      const reply = checkReply(contract.ima.ipe, await request(nc, contract.ima.ipe.subject, { p7b }, { timeout: ms })) as { version?: string; updated?: boolean };
      if (o.json) process.stdout.write(JSON.stringify(reply) + '\n');
      else process.stdout.write(`IPE policy version ${reply.version ?? '?'} ${reply.updated ? 'replaced the active one' : 'deployed'} and active\n`);
    } finally {
      await nc.close();
    }
    return 0;
  },
};
