import { join } from 'node:path';
import { SealkitError } from '../../lib/errors.ts';
import { generateKey, writeKeyFiles } from '../../lib/sign.ts';
import { stateDir } from '../../lib/config.ts';
import { exists, none, type Command } from './common.ts';

export const keygen: Command = {
  name: 'keygen',
  summary: 'create an ed25519 key pair (BASE.key, BASE.pub)',
  usage: `usage: sealkit keygen [--id ID] [--out BASE]

Writes BASE.key (secret, mode 0600) and BASE.pub, and prints the public key
as a trust entry. Add the printed "- id: …, ed25519: …" entry to the node's
trust file (bootstrap trust). Keys are never overwritten.

options:
  --id ID       key id (default admin)
  --out BASE    file name without extension (default <state>/keys/<id>)
  -h, --help    this help
`,
  options: { id: { type: 'string' }, out: { type: 'string' } },
  async run(o, positionals) {
    none(positionals, 'keygen');
    const id = (o.id as string | undefined) ?? 'admin';
    const base = (o.out as string | undefined) ?? join(stateDir(), 'keys', id);
    if (await exists(`${base}.key`)) {
      throw new SealkitError('SEALKIT_BAD_REQUEST', `${base}.key exists; choose another --out or remove it first (keys are never overwritten)`);
    }
    const key = generateKey(id);
    const { secretPath, publicPath } = await writeKeyFiles(key, base);
    process.stdout.write(`secret key: ${secretPath} (keep it off the node)\npublic key: ${publicPath}\ntrust entry:\n  - id: ${key.id}\n    ed25519: ${key.ed25519}\n`);
    return 0;
  },
};
