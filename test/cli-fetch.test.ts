import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startContainerd, type ContainerdServer } from './helpers/containerd.ts';
import { startHttp, type TestServer } from './helpers/http.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { makeAdmin, policyYaml, pushPolicy, type Admin } from './helpers/policy.ts';
import { sealkit } from './helpers/cli.ts';
import { startTogether } from './helpers/together.ts';

// sealkit fetch follows one image through the node — verified, imported,
// labelled — and fails with the code and reason of the first refusal on the
// way. Which stages apply is read from the policy.

let nats: NatsServer;
let ctd: ContainerdServer;
let http: TestServer;
let work: string;
let admin: Admin;
let adminNc: NatsConnection;
const services: RunningService[] = [];
const images: Record<string, BuiltImage> = {};
let cli: Record<string, string>;

const entry = (img: BuiltImage, extra: Record<string, unknown> = {}) => ({
  name: img.name,
  tag: img.tag,
  source: http.route(`/${img.name.replace('/', '-')}.tar`, { body: img.archive }),
  allowHttp: true,
  sha256: img.sha256,
  ...extra,
});

test.before(async () => {
  [nats, ctd, http] = await startTogether(startNats(), startContainerd(), startHttp());
  work = await mkdtemp(join(tmpdir(), 'sealkit-cli-fetch-'));
  admin = await makeAdmin(nats.stateDir);
  for (const n of ['labelled', 'dockeronly', 'noimport', 'tampered', 'unlabelled']) {
    images[n] = await buildImage({ name: `fetch/${n}`, tag: '1', format: 'docker', layers: [{ 'bin/app': `#!/bin/sh\necho ${n}\n`, 'etc/app.conf': 'x=1\n' }] });
  }
  const env = {
    SEALKIT_STATE: nats.stateDir,
    SEALKIT_NATS_URL: nats.url,
    SEALKIT_TRUST: admin.trustPath,
    SEALKIT_CONTAINERD_SOCK: ctd.sock,
    SEALKIT_CONTAINER_STORE: join(work, 'containers'),
  };
  for (const name of ['policy', 'fetcher', 'importer', 'ima']) services.push(await startService(name, env));
  adminNc = await nats.connectAs('admin');
  await pushPolicy(
    adminNc,
    policyYaml({
      serial: 1,
      images: [
        entry(images.labelled),
        entry(images.dockeronly, { import: { containerd: false, docker: true } }), // no Docker socket on this node
        entry(images.noimport, { import: { containerd: false, docker: false } }),
        { ...entry(images.tampered), sha256: images.labelled.sha256.replace(/^./, (c) => (c === '0' ? '1' : '0')) },
      ],
      ima: { mode: 'enforce', reverify: '10m' },
    }),
    admin.key,
  );
  cli = { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url };
});

test.after.always(async () => {
  await Promise.all(services.map((s) => s.stop()));
  await ctd?.cleanup();
  await http?.close();
  await nats?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

test.serial('fetch follows the image to verified, imported and labelled, saying what it waits for', async (t) => {
  const img = images.labelled;
  const r = await sealkit(['fetch', img.name], cli);
  t.is(r.code, 0, r.stderr);
  const out = r.stdout.split('\n');
  t.is(out[0], `verified ${img.name}:1 sha256:${img.sha256} (${img.size} bytes)`);
  t.regex(out[1], /^imported into containerd \(services\.linuxkit\) as (docker\.io\/)?fetch\/labelled:1( \(already present\))?$/);
  t.regex(out[2], /^labelled 2 files in \S+\/rootfs \(container \S+\)$/);
  t.regex(r.stderr, new RegExp(`^waiting for image.verified of ${img.name} sha256:${img.sha256.slice(0, 12)}… \\(timeout 300 s\\)…$`, 'm'));
  t.regex(r.stderr, new RegExp(`^waiting for image.imported of ${img.name} sha256:${img.sha256.slice(0, 12)}… into containerd \\(timeout \\d+(\\.\\d)? s\\)…$`, 'm'));
  t.regex(r.stderr, /^waiting for ima\.labeled of fetch\/labelled/m);

  const j = await sealkit(['fetch', img.name, '--json', '--timeout', '120'], cli);
  t.is(j.code, 0, j.stderr);
  const doc = JSON.parse(j.stdout) as { verified: { sha256: string }; imported: { sha256: string; targets: Array<{ runtime: string }> }; labeled: { image: { digest: string }; files: number } };
  t.is(doc.verified.sha256, img.sha256);
  t.is(doc.imported.sha256, img.sha256);
  t.deepEqual(doc.imported.targets.map((x) => x.runtime), ['containerd']);
  t.is(doc.labeled.image.digest, img.sha256);
  t.is(doc.labeled.files, 2);
});

test.serial('a failed import fails the fetch with the importer’s code and reason', async (t) => {
  const r = await sealkit(['fetch', images.dockeronly.name], cli);
  t.is(r.code, 1);
  t.regex(r.stdout, /^verified fetch\/dockeronly:1 /m);
  t.regex(r.stderr, /sealkit: import of fetch\/dockeronly:1 into docker failed: .*SEALKIT_DOCKER_SOCK.* \[SEALKIT_CONFIG\]$/m);
});

test.serial('a rejected image fails the fetch with the fetcher’s code and reason', async (t) => {
  const r = await sealkit(['fetch', images.tampered.name], cli);
  t.is(r.code, 1);
  t.is(r.stdout, '');
  t.regex(r.stderr, /\[SEALKIT_DIGEST_MISMATCH\]$/m);
});

test.serial('an image the policy imports nowhere is followed to verified only', async (t) => {
  const r = await sealkit(['fetch', images.noimport.name], cli);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^verified fetch\/noimport:1 /m);
  t.regex(r.stdout, /^not imported: policy serial 1 names no import target for fetch\/noimport$/m);
  t.notRegex(r.stderr, /image\.imported/);
});

test.serial('a fetch that cannot finish in --timeout says which step it waited for', async (t) => {
  // the ima service is stopped: the image is imported and then nobody labels it
  const ima = services.pop()!;
  await ima.stop();
  const r = await sealkit(['fetch', images.labelled.name, '--timeout', '15'], cli);
  t.is(r.code, 1);
  t.regex(r.stdout, /^imported into containerd/m);
  t.regex(r.stderr, /sealkit: no ima\.labeled of fetch\/labelled sha256:\w{12}… within 15 s; .* \[SEALKIT_TIMEOUT\]$/m);
});

test.serial('with ima.mode off the fetch ends at imported', async (t) => {
  await pushPolicy(adminNc, policyYaml({ serial: 2, images: [entry(images.unlabelled)], ima: { mode: 'off', reverify: '10m' } }), admin.key);
  const r = await sealkit(['fetch', images.unlabelled.name], cli);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^imported into containerd/m);
  t.regex(r.stdout, /^not labelled: policy serial 2 has ima\.mode off$/m);
});

test.serial('fetch without an image name or with two is a usage error', async (t) => {
  for (const args of [['fetch'], ['fetch', 'a', 'b']]) {
    const r = await sealkit(args, cli);
    t.is(r.code, 2);
    t.regex(r.stderr, /fetch takes one NAME/);
  }
});
