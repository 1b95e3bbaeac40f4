import { SealkitError } from '../../lib/errors.ts';
import { readSecretKey, signDetached } from '../../lib/sign.ts';
import { parsePolicyYaml } from '../../lib/policy.ts';
import { writeFileAtomic } from '../../lib/atomic.ts';
import { one, readInput, type Command } from './common.ts';

export const policySign: Command = {
  name: 'policy sign',
  summary: 'sign a policy YAML file (detached signature FILE.sig)',
  usage: `usage: sealkit policy sign FILE --key KEY [--out SIG]

Checks FILE against the policy schema, then signs "sealkit-policy-v1\\n"
followed by the exact bytes of FILE with the secret key KEY, and writes the
signature file SIG (default FILE.sig): {"keyId": "…", "signature": "<base64>"}.
docs/signatures.md specifies the format and signs with openssl instead.

options:
  --key KEY     a .key file from "sealkit keygen" (required)
  --out SIG     where to write the signature (default FILE.sig)
  -h, --help    this help
`,
  options: { key: { type: 'string' }, out: { type: 'string' }, sig: { type: 'string' } },
  async run(o, positionals) {
    const file = one(positionals, 'FILE', 'policy sign');
    if (!o.key) throw new SealkitError('SEALKIT_BAD_REQUEST', 'policy sign needs --key KEY (a .key file from "sealkit keygen")');
    const bytes = await readInput(file);
    parsePolicyYaml(bytes); // refuse to sign something the node would refuse
    const key = await readSecretKey(o.key as string);
    const out = (o.out as string | undefined) ?? (o.sig as string | undefined) ?? `${file}.sig`;
    await writeFileAtomic(out, JSON.stringify({ keyId: key.id, signature: signDetached('sealkit-policy-v1', bytes, key) }) + '\n');
    process.stdout.write(`signed ${file} with ${key.id}: ${out}\n`);
    return 0;
  },
};
