import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import nacl from 'tweetnacl';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { EventLog } from './helpers/events.ts';
import { assertBuilt, sealkit } from './helpers/cli.ts';
import { repoRoot } from '../services/lib/config.ts';
import { request } from '../services/lib/bus.ts';
import { sha256Hex } from '../services/lib/digest.ts';
import { checkThreshold, imageStatement } from '../services/lib/sign.ts';
import { fileDigest, writeManifest, MANIFEST_VERSION } from '../services/lib/manifest.ts';
import { loadOrCreateManifestKey } from '../services/ima/keys.ts';

// docs/signatures.md is the specification a third party signs by: its
// recipes are run exactly as written, with openssl, and the node must take
// the result.

const run = promisify(execFile);
const doc = await readFile(join(repoRoot, 'docs', 'signatures.md'), 'utf8');

function recipe(title: string): string {
  const m = new RegExp(`<!-- recipe: ${title} -->\\n\`\`\`sh\\n([\\s\\S]*?)\`\`\`\\n`).exec(doc);
  if (!m) throw new Error(`docs/signatures.md has no recipe "${title}"`);
  return m[1];
}

// as a person pastes it into a shell: sh, stop at the first failing command,
// sealkit on PATH
const sh = (script: string, cwd: string, env: Record<string, string> = {}) =>
  run('sh', ['-e', '-c', script], { cwd, env: { ...process.env, PATH: `${join(repoRoot, 'bin')}:${process.env.PATH}`, ...env } });

let nats: NatsServer;
let dir: string;
let policy: RunningService | undefined;

test.before(async () => {
  assertBuilt();
  nats = await startNats();
  dir = await mkdtemp(join(tmpdir(), 'sealkit-sigdoc-'));
});

test.after.always(async () => {
  await policy?.stop();
  await nats?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test.serial('a policy signed with openssl by the documented recipe is applied by the policy service', async (t) => {
  const work = join(dir, 'policy');
  await run('mkdir', ['-p', work]);
  await sh(recipe('sign a policy with openssl'), work);

  // the trust file the recipe wrote is the node's bootstrap trust
  policy = await startService('policy', { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: join(work, 'trust.yaml') });
  const anon = await nats.connectAs(null);
  const events = new EventLog(anon, ['policy.applied', 'audit.policy']);
  await anon.flush();

  // a byte changed after signing, or a signature over the bytes without the prefix, is refused
  const yaml = await readFile(join(work, 'policy.yaml'));
  await writeFile(join(work, 'changed.yaml'), Buffer.concat([yaml, Buffer.from('# changed\n')]));
  const changed = await sealkit(['policy', 'push', 'changed.yaml', '--sig', 'policy.yaml.sig'], { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url }, { cwd: work });
  t.is(changed.code, 1);
  t.regex(changed.stderr, /\[SEALKIT_SIGNATURE_INVALID\]/);
  await sh(`openssl pkeyutl -sign -inkey ops.pem -rawin -in policy.yaml -out bare.bin && printf '{"keyId":"ops-openssl","signature":"%s"}' "$(base64 -w0 bare.bin)" > bare.sig`, work);
  const bare = await sealkit(['policy', 'push', 'policy.yaml', '--sig', 'bare.sig'], { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url }, { cwd: work });
  t.is(bare.code, 1);
  t.regex(bare.stderr, /\[SEALKIT_SIGNATURE_INVALID\]/);

  const pushed = await sh(recipe('push the signed policy'), work, { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url });
  t.regex(pushed.stdout, /^policy serial 1 applied$/m);
  const applied = await events.wait('policy.applied');
  t.is(applied.data.serial, 1);
  t.is(applied.data.keyId, 'ops-openssl');
  t.is(applied.data.sha256, sha256Hex(yaml));
  const shown = await request<{ serial: number; keyId: string }>(anon, 'policy.get', {});
  t.is(shown.serial, 1);
  t.is(shown.keyId, 'ops-openssl');
  events.close();
});

test.serial('an image signed with openssl by the documented recipe verifies, and matches sealkit sign-image byte for byte', async (t) => {
  const work = join(dir, 'image');
  await run('mkdir', ['-p', work]);
  await sh('openssl genpkey -algorithm ed25519 -out release.pem && head -c 100000 /dev/urandom > base.tar.gz', work);
  await sh(recipe('sign an image with openssl'), work);

  const archive = await readFile(join(work, 'base.tar.gz'));
  const pub = (await run('sh', ['-c', 'openssl pkey -in release.pem -pubout -outform DER | tail -c 32 | base64 -w0'], { cwd: work })).stdout;
  const file = JSON.parse(await readFile(join(work, 'base.tar.gz.sig'), 'utf8')) as { signatures: Array<{ keyid: string; sig: string }> };
  const statement = { name: 'acme/base', tag: '1', sha256: sha256Hex(archive), size: archive.length };
  t.deepEqual(checkThreshold('sealkit-image-v1', imageStatement(statement), file.signatures, [{ id: 'release', ed25519: pub }], 1, 'acme/base:1'), ['release']);

  // the same key as a sealkit key file: seed = the last 32 bytes of the PKCS#8 DER
  const seed = (await run('sh', ['-c', 'openssl pkey -in release.pem -outform DER | tail -c 32 | base64 -w0'], { cwd: work })).stdout;
  const pair = nacl.sign.keyPair.fromSeed(Buffer.from(seed, 'base64'));
  t.is(Buffer.from(pair.publicKey).toString('base64'), pub);
  await writeFile(join(work, 'release.key'), JSON.stringify({ id: 'release', ed25519: pub, secret: Buffer.from(pair.secretKey).toString('base64') }));
  const cli = await sealkit(['sign-image', 'base.tar.gz', '--name', 'acme/base', '--tag', '1', '--key', 'release.key', '--out', 'cli.sig'], {}, { cwd: work });
  t.is(cli.code, 0, cli.stderr);
  const fromCli = JSON.parse(await readFile(join(work, 'cli.sig'), 'utf8')) as typeof file;
  t.deepEqual(fromCli.signatures, file.signatures);
});

test.serial('a label manifest as the ima service signs it verifies with openssl by the documented recipe; an edited digest does not', async (t) => {
  const work = join(dir, 'manifest');
  await run('mkdir', ['-p', work]);
  const key = await loadOrCreateManifestKey(work, 'node-1'); // writes manifest-key.pub here
  const files = {
    'bin/app': fileDigest(sha256Hex('app')),
    'etc/my conf': fileDigest(sha256Hex('conf')),
    keyId: fileDigest(sha256Hex('a file named like the envelope key')), // the cut takes the last ,"keyId":
  };
  await writeManifest(work, { version: MANIFEST_VERSION, image: { name: 'acme/web', tag: '1', digest: sha256Hex('image') }, container: 'web', rootfs: '/var/lib/containerd/sealkit/web/rootfs', policySerial: 7, createdAt: new Date().toISOString(), files }, key);
  const ok = await sh(recipe('verify a label manifest with openssl'), work);
  t.regex(ok.stdout, /Signature Verified Successfully/);

  const path = join(work, 'web.json');
  await writeFile(path, (await readFile(path, 'utf8')).replace(sha256Hex('app'), sha256Hex('evil')));
  await t.throwsAsync(sh(recipe('verify a label manifest with openssl'), work));
});
