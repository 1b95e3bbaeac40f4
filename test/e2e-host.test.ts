import test from 'ava';
import { mkdtemp, writeFile, readFile, appendFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startContainerd, type ContainerdServer } from './helpers/containerd.ts';
import { startDocker, type DockerServer } from './helpers/docker.ts';
import { startHttp, type TestServer } from './helpers/http.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { EventLog } from './helpers/events.ts';
import { sealkit } from './helpers/cli.ts';
import { repoRoot } from '../services/lib/config.ts';
import { startTogether } from './helpers/together.ts';

// The whole node on this host, driven the way an operator drives it: keys
// and signatures made with the CLI, a policy pushed with the CLI, and the
// node's answer read from the bus by an anonymous subscriber.

let nats: NatsServer;
let ctd: ContainerdServer;
let dockerd: DockerServer;
let http: TestServer;
let work: string;
let image: BuiltImage;
const services: RunningService[] = [];
let env: Record<string, string>;

test.before(async () => {
  [nats, ctd, http] = await startTogether(startNats(), startContainerd(), startHttp());
  dockerd = await startDocker({ containerd: ctd });
  work = await mkdtemp(join(tmpdir(), 'sealkit-e2e-'));
  image = await buildImage({
    name: 'sealkit/e2e',
    tag: '1.0',
    format: 'docker',
    compression: 'gzip',
    layers: [{ 'bin/app': '#!/bin/sh\necho app\n', 'etc/app.conf': 'mode=strict\n' }, { 'etc/motd': 'sealed\n' }],
  });
  env = {
    SEALKIT_STATE: nats.stateDir,
    SEALKIT_NATS_URL: nats.url,
    SEALKIT_TRUST: join(nats.stateDir, 'trust.yaml'),
    SEALKIT_CONTAINERD_SOCK: ctd.sock,
    SEALKIT_DOCKER_SOCK: dockerd.sock,
    SEALKIT_CONTAINER_STORE: join(work, 'containers'),
    SEALKIT_KMSG: join(work, 'kmsg'),
    SEALKIT_HEARTBEAT_SEC: '1',
  };
  await writeFile(env.SEALKIT_KMSG, '');
});

test.after.always(async () => {
  await Promise.all(services.map((s) => s.stop()));
  await dockerd?.cleanup();
  await ctd?.cleanup();
  await http?.close();
  await nats?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

test.serial('push a signed policy with the CLI: the image is verified, imported into containerd and Docker, tagged, and labelled', async (t) => {
  const cli = (args: string[]) => sealkit(args, { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url });

  // operator keys: the admin key goes into the node's bootstrap trust
  const admin = await cli(['keygen', '--id', 'admin', '--out', join(work, 'admin')]);
  t.is(admin.code, 0, admin.stderr);
  await writeFile(env.SEALKIT_TRUST, `keys:\n${admin.stdout.split('trust entry:\n')[1]}`);
  const release = await cli(['keygen', '--id', 'release', '--out', join(work, 'release')]);
  const releasePub = /ed25519: (\S+)/.exec(release.stdout)![1];

  // the image archive and its signature, served over loopback http
  await writeFile(join(work, 'e2e.tar.gz'), image.archive);
  const signed = await cli(['sign-image', join(work, 'e2e.tar.gz'), '--name', 'sealkit/e2e', '--tag', '1.0', '--key', join(work, 'release.key')]);
  t.is(signed.code, 0, signed.stderr);
  const url = http.route('/e2e.tar.gz', { body: image.archive });
  http.route('/e2e.tar.gz.sig', { body: await readFile(join(work, 'e2e.tar.gz.sig')) });

  for (const name of ['policy', 'fetcher', 'importer', 'ima', 'runner', 'auditor', 'nodeinfo']) services.push(await startService(name, env));

  const anon = await nats.connectAs(null);
  const events = new EventLog(anon, ['image.*', 'ima.*', 'audit.*', 'policy.applied']);
  await anon.flush();

  const policyFile = join(work, 'policy.yaml');
  await writeFile(
    policyFile,
    `apiVersion: sealkit/v1
kind: NodePolicy
serial: 1
keys:
  - id: release
    ed25519: ${releasePub}
images:
  - name: sealkit/e2e
    tag: "1.0"
    source: ${url}
    allowHttp: true
    sha256: ${image.sha256}
    signatures: {keys: [release], threshold: 1}
    import: {containerd: {namespace: services.linuxkit}, docker: true}
ima:
  mode: enforce
  reverify: 1m
`,
  );
  t.is((await cli(['policy', 'sign', policyFile, '--key', join(work, 'admin.key')])).code, 0);
  const pushed = await cli(['policy', 'push', policyFile]);
  t.is(pushed.code, 0, pushed.stderr);
  t.regex(pushed.stdout, /policy serial 1 applied/);

  const verified = await events.wait('image.verified', 60_000);
  t.is(verified.data.sha256, image.sha256);
  t.deepEqual(verified.data.signedBy, ['release']);

  const imported = await Promise.race([
    events.wait('image.imported', 60_000),
    events.wait('image.import_failed', 60_000).then((e) => Promise.reject(new Error(`import failed: ${JSON.stringify(e.data)}`))),
  ]);
  const runtimes = (imported.data.targets as Array<{ runtime: string }>).map((x) => x.runtime).sort();
  t.deepEqual(runtimes, ['containerd', 'docker']);
  const ls = await ctd.ctr(['images', 'ls'], 'services.linuxkit');
  t.regex(ls, /sealkit\/e2e:1\.0/);
  t.regex(ls, new RegExp(`sealkit\\.sha256=${image.sha256}`));
  const dockerImages = await dockerd.docker.listImages();
  t.true(dockerImages.some((i) => (i.RepoTags ?? []).includes('sealkit/e2e:1.0')));

  const labeled = await events.wait('ima.labeled', 60_000);
  t.is(labeled.data.files, 3);
  await events.wait('ima.enforcing');

  // tamper with the labelled rootfs: userspace appraisal reports it
  await appendFile(join(labeled.data.rootfs as string, 'etc/motd'), 'owned\n');
  const tamper = await events.wait('audit.tamper', 10_000);
  t.is(tamper.data.file, 'etc/motd');
  t.is(tamper.data.kind, 'modified');

  // a kernel denial of a file in that rootfs maps back to the container and image
  const file = join(labeled.data.rootfs as string, 'bin/app');
  await appendFile(env.SEALKIT_KMSG, `5,900,1000000,-;audit: type=1800 audit(1700000000.100:90): pid=77 uid=0 auid=4294967295 ses=4294967295 subj=unconfined op=appraise_data cause=invalid-hash comm="app" name="${file}" dev="sda1" ino=12 res=0 errno=0\n`);
  const denial = await events.wait('audit.denial', 10_000);
  t.is(denial.data.container, labeled.data.container);
  t.is((denial.data.image as { digest: string }).digest, image.sha256);
  t.is(denial.data.cause, 'invalid-hash');
  anon.close();
});

test.serial('sealkit status and sealkit watch show the node as an operator sees it', async (t) => {
  const cliEnv = { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url };
  const status = await sealkit(['status', '--json'], cliEnv);
  t.is(status.code, 0, status.stderr);
  const s = JSON.parse(status.stdout) as { services: Array<{ service: string }>; policy: { serial: number }; node: { os: { kernel: string } } };
  t.deepEqual(s.services.map((x) => x.service).sort(), ['auditor', 'fetcher', 'ima', 'importer', 'nodeinfo', 'policy', 'runner']);
  t.is(s.policy.serial, 1);
  t.truthy(s.node.os.kernel);

  // watch --replay prints what the audit stream kept, as one JSON line each
  const watch = spawn(join(repoRoot, 'bin', 'sealkit'), ['watch', 'audit.*', '--json', '--replay', '--server', nats.url], { env: { ...process.env, SEALKIT_STATE: join(work, 'nowhere') } });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`watch printed: ${out}`)), 20_000);
    watch.stdout.on('data', (d) => {
      out += d;
      if (out.includes('"audit.denial"') && out.includes('"audit.tamper"')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const exited = new Promise((r) => watch.once('exit', r));
  watch.kill('SIGINT');
  const killer = setTimeout(() => watch.kill('SIGKILL'), 15_000);
  t.is(await exited, 0, 'watch exits cleanly on Ctrl-C');
  clearTimeout(killer);
  const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { type: string; specversion: string });
  t.true(lines.every((l) => l.specversion === '1.0' && l.type.startsWith('audit.')));

  // Ctrl-C while --replay is still reading the stream is the user's doing: exit 0, no error
  const early = spawn(join(repoRoot, 'bin', 'sealkit'), ['watch', '>', '--json', '--replay', '--server', nats.url], { env: { ...process.env, SEALKIT_STATE: join(work, 'nowhere') } });
  let earlyErr = '';
  early.stderr.on('data', (d) => (earlyErr += d));
  early.stdout.once('data', () => early.kill('SIGINT'));
  const earlyKiller = setTimeout(() => early.kill('SIGKILL'), 15_000);
  t.is(await new Promise((r) => early.once('exit', r)), 0, `watch interrupted mid-replay exits 0; stderr: ${earlyErr}`);
  clearTimeout(earlyKiller);
  t.regex(earlyErr, /^watching > on nats:\/\/\S+, after what the streams kept; Ctrl-C stops\n$/, 'nothing on stderr but the subscription line: no error from the interrupted replay');
});

test.serial('sealkit fetch refuses a name the policy does not know, with a clear error and exit code', async (t) => {
  const r = await sealkit(['fetch', 'nobody/else'], { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url });
  t.is(r.code, 1);
  t.regex(r.stderr, /SEALKIT_IMAGE_UNKNOWN/);
  t.regex(r.stderr, /sealkit\/e2e/, 'names the images it does know');
});
