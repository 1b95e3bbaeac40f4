import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { SealkitError } from '../../lib/errors.ts';
import { writeFileAtomic } from '../../lib/atomic.ts';
import { defaultLimits } from '../../lib/policy.ts';
import { abs } from '../../lib/rootfs/tree.ts';
import { unpackInto } from '../../lib/rootfs/unpack.ts';
import { composeIpePolicy, signIpePolicy } from '../../ima/ipe.ts';
import { verityDigestOfFile } from '../../ima/verity.ts';
import type { Command } from './common.ts';

// Run by the owner, away from the node: the IPE policy for a set of images,
// each unpacked with the node's own unpacker, so the fs-verity digests are
// those of the files the node will enable fs-verity on. Signed with the key
// whose certificate is in the nodes' UEFI db.
export const ipePolicy: Command = {
  name: 'ipe policy',
  summary: 'compose and sign the IPE policy for image archives (owner key)',
  usage: `usage: sealkit ipe policy ARCHIVE... --serial N --cert CERT --key KEY [--out DIR]

Unpacks each image archive (docker save or OCI layout tar, the bytes the node
policy pins by sha256) as the node does, computes the fs-verity digest of
every regular file, and writes DIR/ipe-policy.txt (executions are allowed
only from the initramfs and of those files) and DIR/policy.p7b, the policy
signed with KEY (openssl smime, PKCS#7, no attributes). The node's boot step
deploys <state>/ima/ipe/policy.p7b; the kernel takes it only if CERT is in
the firmware's db, and only with a higher serial than the one it runs.

options:
  --serial N    the policy version (must increase: the kernel refuses rollbacks)
  --cert CERT   the owner's certificate (PEM), enrolled in the nodes' UEFI db
  --key KEY     its private key (PEM)
  --out DIR     where to write (default: the current directory)
  -h, --help    this help
`,
  options: { serial: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' }, out: { type: 'string' } },
  async run(o, archives) {
    if (archives.length === 0) throw new SealkitError('SEALKIT_BAD_REQUEST', 'ipe policy needs at least one image ARCHIVE (the file the node policy pins by sha256)');
    if (!o.cert || !o.key) throw new SealkitError('SEALKIT_BAD_REQUEST', 'ipe policy needs --cert CERT and --key KEY: the owner certificate enrolled in the firmware db and its private key (PEM)');
    const serial = Number(o.serial);
    if (o.serial === undefined || !/^\d+$/.test(String(o.serial))) throw new SealkitError('SEALKIT_BAD_REQUEST', `ipe policy needs --serial N, a whole number higher than the last policy's (got ${o.serial ?? 'none'})`);
    const out = (o.out as string | undefined) ?? '.';
    const digests = new Set<string>();
    const work = await mkdtemp(join(tmpdir(), 'sealkit-ipe-'));
    try {
      for (const [i, archive] of archives.entries()) {
        const sha = createHash('sha256');
        await pipeline(createReadStream(archive), sha).catch((err: Error) => {
          throw new SealkitError('SEALKIT_BAD_REQUEST', `cannot read the image archive ${archive}: ${err.message}`);
        });
        const rootfs = join(work, String(i));
        const unpacked = await unpackInto(archive, rootfs, { limits: defaultLimits, what: archive });
        const files = Object.keys(unpacked.files);
        for (const f of files) digests.add(await verityDigestOfFile(abs(rootfs, f)));
        process.stdout.write(`${archive}: sha256 ${sha.digest('hex')}, ${files.length} files\n`);
        await rm(rootfs, { recursive: true, force: true });
      }
      await mkdir(out, { recursive: true });
      const text = join(out, 'ipe-policy.txt');
      await writeFileAtomic(text, composeIpePolicy({ serial, digests }));
      // openssl writes the signature beside, then it is renamed into place
      const signed = join(work, 'policy.p7b');
      await signIpePolicy(text, o.cert as string, o.key as string, signed);
      await writeFileAtomic(join(out, 'policy.p7b'), await readFile(signed));
      process.stdout.write(`${digests.size} fs-verity digests, serial ${serial}: ${text}, ${join(out, 'policy.p7b')}\n`);
      return 0;
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  },
};
