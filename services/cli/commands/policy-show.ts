import { request } from '../../lib/bus.ts';
import { checkReply, contract } from '../../lib/contract.ts';
import { busUsage, connect, none, server, timeoutMs, waiting, type Command } from './common.ts';

export const policyShow: Command = {
  name: 'policy show',
  summary: 'show the policy in force',
  usage: `usage: sealkit policy show [--yaml | --json]

Asks the policy service (policy.get, anonymous is enough) for the policy in
force: serial, signer, when it was applied, its SHA-256 and a summary.

options:
  --yaml           print the signed YAML document itself
  --json           print the whole record as JSON
  --timeout SEC    how long to wait for the answer (default 5)
  -h, --help       this help
${busUsage}`,
  options: { yaml: { type: 'boolean' }, json: { type: 'boolean' }, timeout: { type: 'string' } },
  bus: true,
  async run(o, positionals) {
    none(positionals, 'policy show');
    const ms = timeoutMs(o, 5, 'policy show');
    const nc = await connect(o, false);
    try {
      waiting(`the policy service to answer policy.get on ${server(o)}`, ms);
      const rec = checkReply(contract.policy.get, await request(nc, contract.policy.get.subject, {}, { timeout: ms }));
      if (o.yaml) process.stdout.write(rec.yaml);
      else if (o.json) process.stdout.write(JSON.stringify(rec) + '\n');
      else process.stdout.write(`serial ${rec.serial}, signed by ${rec.keyId}, applied ${rec.appliedAt}, sha256 ${rec.sha256}\n${JSON.stringify(rec.summary, null, 2)}\n`);
    } finally {
      await nc.close();
    }
    return 0;
  },
};
