import { readFile } from 'node:fs/promises';
import { SealkitError } from '../../lib/errors.ts';
import { readSecretKey, signImage, type SignatureFile } from '../../lib/sign.ts';
import { sha256File } from '../../lib/digest.ts';
import { writeFileAtomic } from '../../lib/atomic.ts';
import { exists, one, type Command } from './common.ts';

export const signImageCommand: Command = {
  name: 'sign-image',
  summary: 'sign an image archive for images[].signatures',
  usage: `usage: sealkit sign-image FILE --name NAME --tag TAG --key KEY [--out SIG]

Signs the archive FILE (its SHA-256 and size) as NAME:TAG with the secret key
KEY. Writes or adds to SIG (default FILE.sig, served next to the archive so
the node finds it at <source>.sig). Format: docs/signatures.md.

options:
  --name NAME   image name as in the policy (required)
  --tag TAG     image tag as in the policy (required)
  --key KEY     a .key file from "sealkit keygen" (required)
  --out SIG     signature file to write or add to (default FILE.sig)
  -h, --help    this help
`,
  options: { name: { type: 'string' }, tag: { type: 'string' }, key: { type: 'string' }, out: { type: 'string' } },
  async run(o, positionals) {
    const file = one(positionals, 'FILE', 'sign-image');
    if (!o.name || !o.tag || !o.key) throw new SealkitError('SEALKIT_BAD_REQUEST', 'sign-image needs --name, --tag and --key; see "sealkit sign-image --help"');
    const [name, tag] = [o.name as string, o.tag as string];
    const key = await readSecretKey(o.key as string);
    const { sha256, size } = await sha256File(file).catch((err) => {
      throw new SealkitError('SEALKIT_BAD_REQUEST', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    });
    const out = (o.out as string | undefined) ?? `${file}.sig`;
    let existing: SignatureFile | undefined;
    if (await exists(out)) {
      try {
        existing = JSON.parse(await readFile(out, 'utf8')) as SignatureFile;
        if (!Array.isArray(existing.signatures)) throw new Error('no signatures list');
      } catch (err) {
        throw new SealkitError('SEALKIT_SIGNATURE_INVALID', `${out} exists but is not an image signature file (${(err as Error).message}); remove it or choose another --out`);
      }
    }
    const signed = signImage({ name, tag, sha256, size }, [key], existing);
    await writeFileAtomic(out, JSON.stringify(signed, null, 2) + '\n');
    process.stdout.write(`signed ${name}:${tag} sha256:${sha256} (${size} bytes) with ${key.id}: ${out} (${signed.signatures.length} signature(s))\n`);
    return 0;
  },
};
