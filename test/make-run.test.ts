import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, ErrorCode, type NatsConnection } from 'nats';
import { repoRoot } from '../services/lib/config.ts';
import { generateKey, signImage } from '../services/lib/sign.ts';
import { busAnswers, freePort, untilAnswering } from './helpers/qemu.ts';
import { runReadme, spawnReadme } from './helpers/readme.ts';
import { buildImage, busyboxImage } from './helpers/images.ts';
import { EventLog } from './helpers/events.ts';
import { policyYaml } from './helpers/policy.ts';
import { cmdline, killAll, pidsWithEnv, printedCommands, runPrinted, running, spawnGroup, type Shell } from './helpers/make.ts';
import { sealkit } from './helpers/cli.ts';
import { streams } from '../services/lib/subjects.ts';
import { kernelCmdline } from '../iso/archive.ts';

// `make run` as a user runs it, on a fresh state directory and bus port: it
// builds the ISO for that state (its admin key and bus credentials are baked
// in) and boots it in QEMU; the bus answers on the forwarded port; an image
// dropped into <state>/images is fetched by the node as http://10.0.2.100/…
// once a policy naming it is signed and pushed with the commands the banner
// prints, and is verified, imported and labelled inside the VM; the README's
// workload (container ticker) runs, and the README's `sealkit ps` and
// `sealkit logs ticker` show it running and what it printed; Ctrl-C (SIGINT
// to make's process group, as a terminal sends it) powers the node off from
// the ACPI button, QEMU is gone and make exits.
//
// The same boot proves the ISO itself (a boot under TCG is minutes of the
// suite, so there is one for both): its nats-server answers with the
// generated configuration (anonymous clients are the read-only monitor
// user), the onboot step bus-init made the streams, the README's
// `sealkit status` shows the node by name with the host pids of its bundles
// (on the node every service is an OCI bundle in its own pid namespace, pid 1
// there), and no service stops and restarts while the node runs.

const minutes = (n: number) => n * 60_000;

test('make run boots the node, serves <state>/images to it, takes a policy pushed as its banner says, and Ctrl-C powers it off', async (t) => {
  t.timeout(minutes(30));
  const state = await mkdtemp(join(tmpdir(), 'sealkit-make-run-'));
  const port = await freePort();
  const shells: Shell[] = [];
  let qemuPid: number | undefined;
  let anon: NatsConnection | undefined;
  let events: EventLog | undefined;
  t.teardown(async () => {
    events?.close();
    await anon?.close().catch(() => {});
    for (const s of shells) if (!s.done()) s.signal('SIGKILL');
    // QEMU runs in its own session; its parent's death kills it, and so does this
    killAll([...(qemuPid ? [qemuPid] : []), ...pidsWithEnv('SEALKIT_STATE', state)]);
    await rm(state, { recursive: true, force: true });
  });

  const run = spawnReadme('make run', { cwd: repoRoot, env: { SEALKIT_STATE: state, SEALKIT_BUS_PORT: String(port) } });
  shells.push(run);
  // the build may first wait for another test file's (one build at a time)
  qemuPid = Number((await run.waitFor(/booting in QEMU \(pid (\d+)\)/, minutes(20)))[1]);
  const built = run.output().match(/iso: \S+ [\d.]+ MB sha256 \w+ in ([\d.]+)s/);
  t.log(built ? `ISO built in ${built[1]} s` : 'ISO reused');

  await run.waitFor(new RegExp(`run: bus answering on 127\\.0\\.0\\.1:${port} ([\\d.]+) s`), minutes(15));
  t.true(await busAnswers(port), `the bus answers on 127.0.0.1:${port}`);
  t.log(run.output().match(/run: bus answering .*/)![0]);
  const qemu = cmdline(qemuPid);
  t.regex(qemu, /^qemu-system-x86_64 /);
  t.true(qemu.includes(`hostfwd=tcp:127.0.0.1:${port}-:4222`), 'SEALKIT_BUS_PORT moves the bus');
  t.true(qemu.includes(join(state, 'build', 'sealkit.iso')), 'the ISO built for this state is booted');
  t.true(qemu.includes(`-drive file=${join(state, 'build', 'sealkit.iso')},format=raw,if=virtio,readonly=on`), 'attached as a disk, as a USB stick would be');
  t.regex(run.output(), /under BIOS \(SeaBIOS\) from the ISO as a disk/);

  // the node's bus, as generated: anonymous clients may read, not publish events
  const probe = await connect({ servers: `127.0.0.1:${port}`, name: 'make-run-probe', reconnect: false });
  try {
    t.is(probe.info?.server_name, 'sealkit-node');
    t.true(probe.info?.jetstream, 'JetStream is on');
    t.log(`round trip through QEMU: ${await probe.rtt()} ms`);
    const denied = new Promise<string | undefined>((resolve) => {
      void (async () => {
        for await (const s of probe.status()) if (s.type === 'error') resolve(String(s.data));
      })();
      setTimeout(() => resolve(undefined), 5000);
    });
    probe.publish('audit.denial', new TextEncoder().encode('{}'));
    await probe.flush();
    t.is(await denied, ErrorCode.PermissionsViolation, 'an anonymous client must not be able to publish audit events');
  } finally {
    await probe.close();
  }

  // the image, in <state>/images, signed by a release key the policy names
  const image = await buildImage({
    name: 'sealkit/make-run',
    tag: '1',
    format: 'oci',
    compression: 'gzip',
    layers: [{ 'bin/app': '#!/bin/sh\necho app\n', 'etc/motd': 'make run\n' }],
  });
  const release = generateKey('release');
  const sig = signImage({ name: 'sealkit/make-run', tag: '1', sha256: image.sha256, size: image.archive.length }, [release]);
  await mkdir(join(state, 'images'), { recursive: true });
  await writeFile(join(state, 'images', 'make-run.tar.gz'), image.archive);
  await writeFile(join(state, 'images', 'make-run.tar.gz.sig'), JSON.stringify(sig));
  // the README's workload image: a static busybox and the script its container execs
  const ticker = await busyboxImage('acme/ticker', '1', { 'bin/tick': '#!/bin/busybox sh\necho tick\n' });
  const tickerSig = signImage({ name: 'acme/ticker', tag: '1', sha256: ticker.sha256, size: ticker.archive.length }, [release]);
  await writeFile(join(state, 'images', 'ticker.tar.gz'), ticker.archive);
  await writeFile(join(state, 'images', 'ticker.tar.gz.sig'), JSON.stringify(tickerSig));

  anon = await connect({ servers: `127.0.0.1:${port}`, name: 'make-run-test' });
  events = new EventLog(anon, ['image.*', 'ima.*', 'container.*', 'policy.applied']);
  await anon.flush();
  // a push needs the policy service up; the others follow the policy whenever they come up
  await untilAnswering(anon, 'policy', minutes(10));
  const info = await (await anon.jetstreamManager()).streams.info(streams.audit.name);
  t.deepEqual(info.config.subjects, [...streams.audit.subjects], 'the onboot step bus-init created the audit stream');

  // the README's status, as written there (the bus and state are this test's):
  // every service answers, each a process of its own on the host
  const cli = { cwd: repoRoot, env: { SEALKIT_STATE: state, SEALKIT_NATS_URL: `nats://127.0.0.1:${port}` }, timeoutMs: minutes(2) };
  const deadline = Date.now() + minutes(8);
  let status = await runReadme('bin/sealkit status', cli);
  while (status.code !== 0 && Date.now() < deadline) status = await runReadme('bin/sealkit status', cli);
  t.is(status.code, 0, status.stdout + status.stderr);
  t.regex(status.stdout, /^node: sealkit-[0-9a-f]{6} \(sealkit 0\.1\.0, kernel \S+\)$/m);
  const json = await sealkit(['status', '--json', '--timeout', '30'], cli.env, { timeoutMs: minutes(2) });
  t.is(json.code, 0, json.stderr);
  const s = JSON.parse(json.stdout) as { node: { name: string; os: { distro: string }; ima: { ima: boolean } }; services: Array<{ service: string; pid: number; hostPid: boolean }>; missing: string[] };
  t.regex(s.node.name, /^sealkit-[0-9a-f]{6}$/);
  t.is(s.node.os.distro, 'sealkit');
  t.true(s.node.ima.ima, 'nodeinfo sees securityfs');
  t.deepEqual(s.missing, []);
  t.deepEqual(s.services.map((x) => x.service).sort(), ['auditor', 'fetcher', 'ima', 'importer', 'nodeinfo', 'policy', 'runner']);
  const pids = s.services.map((x) => x.pid);
  t.true(s.services.every((x) => x.hostPid), JSON.stringify(s.services));
  t.true(pids.every((p) => p > 1));
  t.is(new Set(pids).size, pids.length, 'one process each');
  t.log(`status: node ${s.node.name}, ${s.services.map((x) => `${x.service}=${x.pid}`).join(' ')}`);

  const policy = join(state, 'policy.yaml');
  await writeFile(
    policy,
    policyYaml({
      serial: 1,
      keys: [{ id: 'release', ed25519: release.ed25519 }],
      images: [
        {
          name: 'sealkit/make-run',
          tag: '1',
          source: 'http://10.0.2.100/make-run.tar.gz',
          allowHttp: true,
          sha256: image.sha256,
          signatures: { keys: ['release'], threshold: 1 },
          import: { containerd: { namespace: 'sealkit' } },
        },
        {
          name: 'acme/ticker',
          tag: '1',
          source: 'http://10.0.2.100/ticker.tar.gz',
          allowHttp: true,
          sha256: ticker.sha256,
          signatures: { keys: ['release'], threshold: 1 },
        },
      ],
      // the README's container, as written there
      containers: [{ name: 'ticker', image: 'acme/ticker', command: ['/bin/busybox', 'sh', '-c', 'while :; do /bin/tick || exit; /bin/busybox sleep 1; done'], restart: 'on-failure' }],
      ima: { mode: 'enforce', reverify: '10m' },
    }),
  );
  // as the banner says, from the directory make ran in (policy.yaml is the user's file)
  const commands = printedCommands(run.output());
  t.log(commands.join('\n'));
  const sh = (command: string) => runPrinted(command, policy, shells);
  const sign = commands.find((c) => c.includes(' policy sign '));
  const push = commands.find((c) => c.includes(' policy push '));
  t.truthy(sign && push, 'the banner shows how to sign and push a policy');
  t.true(sign!.includes(join(state, 'keys', 'admin.key')), "signing uses the state's admin key, the one baked into this ISO");
  const signed = await sh(sign!);
  t.is(signed.code, 0, signed.output);
  const t0 = Date.now();
  const pushed = await sh(push!);
  // policy.applied is the node's acknowledgement. The CLI waits 10 s for the
  // reply, which a VM starved by a loaded host can miss after applying it.
  if (pushed.code !== 0 && /\[SEALKIT_TIMEOUT\]/.test(pushed.output)) t.log(`push: ${pushed.output.trim()} (waiting for policy.applied)`);
  else t.is(pushed.code, 0, pushed.output);
  const applied = await events.wait((e) => e.type === 'policy.applied' && e.data.serial === 1, minutes(5));
  t.is(applied.data.sha256, createHash('sha256').update(await readFile(policy)).digest('hex'), 'the pushed bytes are in force');

  const ofImage = (type: string) => (e: { type: string; data: Record<string, any> }) =>
    e.type === type && (e.data.name === 'sealkit/make-run' || e.data.image?.name === 'sealkit/make-run');
  const refused = (type: string) => events!.wait(ofImage(type), minutes(10)).then((e) => Promise.reject(new Error(`${type}: ${JSON.stringify(e.data)}`)));
  const labeled = await Promise.race([events.wait(ofImage('ima.labeled'), minutes(10)), refused('image.rejected'), refused('image.import_failed')]);
  t.is(labeled.data.image.digest, image.sha256);
  t.is(labeled.data.files, 2);
  t.log(`push to ima.labeled: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  t.regex(run.output(), /http: GET \/make-run\.tar\.gz -> 200/, 'the node fetched the archive from <state>/images');
  t.regex(run.output(), /http: GET \/make-run\.tar\.gz\.sig -> 200/);

  // the watch command as printed shows what the streams kept
  const replay = commands.find((c) => c.endsWith(" watch '>' --replay"));
  t.truthy(replay);
  const watch = spawnGroup('sh', ['-c', replay!], { cwd: repoRoot });
  shells.push(watch);
  await watch.waitFor(/ima\.labeled +.*sealkit\/make-run/, minutes(1));
  watch.signal('SIGINT');
  await watch.exited;

  // the README's workload, and its ps and logs as the README writes them
  // (the bus moved to this test's port, the state to its own)
  const started = await Promise.race([
    events.wait((e) => e.type === 'container.started' && e.data.name === 'ticker', minutes(10)),
    events.wait((e) => e.type === 'container.refused' && e.data.name === 'ticker', minutes(10)).then((e) => Promise.reject(new Error(`container.refused: ${JSON.stringify(e.data)}`))),
  ]);
  t.is(started.data.image.digest, ticker.sha256);
  t.log(`push to container.started: ${((Date.parse(started.time) - t0) / 1000).toFixed(1)} s`);
  const ps = await runReadme('bin/sealkit ps', cli);
  t.is(ps.code, 0, ps.stdout + ps.stderr);
  t.regex(ps.stdout, /^ticker +acme\/ticker:1 .*\brunning\b/m, ps.stdout);
  // its first tick may be a moment after the start
  let logs = await runReadme('bin/sealkit logs ticker', cli);
  for (let i = 0; logs.code === 0 && !/^tick$/m.test(logs.stdout) && i < 30; i++) logs = await runReadme('bin/sealkit logs ticker', cli);
  t.is(logs.code, 0, logs.stdout + logs.stderr);
  t.regex(logs.stdout, /^tick$/m, 'the container ran its /bin/tick');

  // Ctrl-C
  events.close();
  events = undefined;
  await anon.close();
  anon = undefined;
  run.signal('SIGINT');
  const ended = await run.exited;
  t.log(`make run ended with ${ended.signal ?? ended.code}; ${run.output().match(/run: QEMU stopped \(\w+\)/)?.[0]}`);
  t.regex(run.output(), /run: interrupted; powering the node off/);
  t.regex(run.output(), /run: QEMU stopped \(acpi\)/, 'the node powers off from the ACPI button');
  t.false(running(qemuPid), `QEMU (pid ${qemuPid}) is gone`);
  t.deepEqual(pidsWithEnv('SEALKIT_STATE', state).map((p) => `${p} ${cmdline(p)}`), [], 'nothing make run started is left');
  const console = await readFile(join(state, 'run', 'console.log'), 'latin1');
  t.regex(console, /sealkit: onboot done/);
  // isolinux's command line, which test/iso-uefi finds GRUB giving under OVMF
  const builtCmdline = (await readFile(join(state, 'build', 'cmdline'), 'utf8')).trim();
  t.is(console.match(/Command line: ([^\r\n]*)/)?.[1].trim(), kernelCmdline(builtCmdline), 'the kernel gets the one command line of linuxkit.yml');
  const restarts = console.match(/sealkit: \S+ stopped; restarting[^\n]*(\n  \|[^\n]*)*/g) ?? [];
  t.deepEqual(restarts, [], 'no service stops and restarts while the node runs');
});
