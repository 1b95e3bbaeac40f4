import test from 'ava';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { bootVm, ensureTestCaseIso, testStateDir, untilAnswering, type Vm } from './helpers/qemu.ts';
import { startHttp, type TestServer } from './helpers/http.ts';
import { buildImage, busyboxImage, sha256 } from './helpers/images.ts';
import { EventLog } from './helpers/events.ts';
import { policyYaml, pushPolicy } from './helpers/policy.ts';
import { generateKey, readSecretKey, signImage } from '../services/lib/sign.ts';
import { readCreds } from '../services/lib/natsconf.ts';
import { SealkitError } from '../services/lib/errors.ts';
import { request } from '../services/lib/bus.ts';
import { subjects } from '../services/lib/subjects.ts';
import type { LogsReply } from '../services/lib/contract.ts';

// The node as a user runs it: the ISO's kernel and initrd boot in QEMU (TCG)
// with the bus forwarded to the host and a host HTTP server reachable from
// the guest as http://10.0.2.100/. From the host, an operator pushes a signed
// policy naming an image served by the host; inside the VM the node fetches
// and verifies it, imports it into its containerd, unpacks and labels the
// container rootfs on the IMA-appraised store. The test case
// test/cases/e2e-denials (a service in the test image only) then forges a
// label and adds an unlabelled file in that rootfs; the kernel refuses both,
// and the auditor's audit.denial events reach the host subscriber.
// The policy also names a workload: the runner runs container "ticker" from
// the labelled rootfs of a second image, a busybox loop that execs the
// image's /bin/tick every second. The same test step then changes bin/tick
// offline (on the store's block device, unseen by the node); the next exec
// inside the container fails with EACCES, the denial names the container,
// and the runner, re-verifying before the restart, refuses it.

const minutes = (n: number) => n * 60_000;
const bookworm = /^VERSION_CODENAME=bookworm$/m.test(readFileSync('/etc/os-release', 'utf8'));

// kernel: as make iso KERNEL=… takes it; the default is the newest installed
const e2e = test.macro(async (t, kernel?: string) => {
  t.timeout(minutes(30));
  const iso = await ensureTestCaseIso('e2e-denials', (l) => t.log(l), kernel);
  const built = (JSON.parse(await readFile(iso.manifest, 'utf8')) as { kernel: { version: string } }).kernel.version;
  t.log(`ISO ${(iso.bytes / 1e6).toFixed(1)} MB with kernel ${built}, ${iso.reused ? 'reused' : `built in ${iso.seconds.toFixed(0)} s`}`);
  if (kernel) t.true(built.startsWith(`${kernel}.`), `KERNEL=${kernel} builds with ${kernel}, not ${built}`);
  else if (bookworm) t.regex(built, /^6\.12\./, 'on Debian 12 the node kernel is the 6.12 that make deps installs from bookworm-backports');

  // the image and its signature by a release key the policy names
  const image = await buildImage({
    name: 'sealkit/e2e',
    tag: '1.0',
    format: 'oci',
    compression: 'gzip',
    layers: [{ 'bin/app': '#!/bin/sh\necho app\n', 'etc/app.conf': 'mode=strict\n' }, { 'etc/motd': 'sealed\n' }],
  });
  const release = generateKey('release');
  const sig = signImage({ name: 'sealkit/e2e', tag: '1.0', sha256: image.sha256, size: image.archive.length }, [release]);
  // A connection idle for 5 s gets a 408: a forward that connected once when
  // QEMU started, instead of once per guest connection, fails here every time.
  const http: TestServer = await startHttp({ headersTimeoutMs: 5000 });
  http.route('/e2e.tar.gz', { body: image.archive });
  http.route('/e2e.tar.gz.sig', { body: Buffer.from(JSON.stringify(sig)) });
  // the workload: a static busybox and the script its loop execs; the loop
  // ends when an exec fails, so the container exits with sh's status
  const ticker = await busyboxImage('sealkit/e2e-ticker', '1', { 'bin/tick': '#!/bin/busybox sh\necho tick\n' });
  const tickerSig = signImage({ name: 'sealkit/e2e-ticker', tag: '1', sha256: ticker.sha256, size: ticker.archive.length }, [release]);
  http.route('/ticker.tar.gz', { body: ticker.archive });
  http.route('/ticker.tar.gz.sig', { body: Buffer.from(JSON.stringify(tickerSig)) });

  const vm: Vm = await bootVm({
    kernel: iso.kernel,
    initrd: iso.initrd,
    append: iso.cmdline,
    httpPort: Number(new URL(http.origin).port),
  });
  let anon: NatsConnection | undefined;
  let admin: NatsConnection | undefined;
  let events: EventLog | undefined;
  const names = (e: { data: Record<string, unknown> }) => (e.data.services as Array<{ service: string }>).map((x) => x.service);
  try {
    const busMs = await vm.waitForBus(minutes(8));
    const ready = await vm.busReady(minutes(2));
    t.regex(vm.console(), new RegExp(`Linux version ${built.replace(/[.+]/g, '\\$&')} `), `the guest runs ${built}`);
    t.log(`boot to bus answering on the host: ${(busMs / 1000).toFixed(1)} s (guest: ${ready.atSec} s after the kernel started, memory used ${ready.usedMiB} of ${ready.totalMiB} MiB)`);

    const servers = `127.0.0.1:${vm.busPort}`;
    anon = await connect({ servers, name: 'iso-e2e-watch' });
    events = new EventLog(anon, ['image.*', 'ima.*', 'audit.*', 'container.*', 'policy.applied', 'node.heartbeat']);
    await anon.flush();
    const creds = await readCreds(join(testStateDir, 'bus', 'creds', 'admin.json'));
    admin = await connect({ servers, name: 'iso-e2e-admin', user: creds.user, pass: creds.password });

    // the policy service answers: the others follow the policy from the KV
    // bucket whenever they come up
    const up = await untilAnswering(anon, 'policy', minutes(10));
    t.log(`policy answers ${((Date.now() - vm.startedAt) / 1000).toFixed(1)} s after QEMU started (with ${up.join(', ')})`);

    const yaml = policyYaml({
      serial: 1,
      keys: [{ id: 'release', ed25519: release.ed25519 }],
      images: [
        {
          name: 'sealkit/e2e',
          tag: '1.0',
          source: 'http://10.0.2.100/e2e.tar.gz',
          allowHttp: true,
          sha256: image.sha256,
          signatures: { keys: ['release'], threshold: 1 },
          import: { containerd: { namespace: 'sealkit' } },
        },
        {
          name: 'sealkit/e2e-ticker',
          tag: '1',
          source: 'http://10.0.2.100/ticker.tar.gz',
          allowHttp: true,
          sha256: ticker.sha256,
          signatures: { keys: ['release'], threshold: 1 },
        },
      ],
      containers: [
        {
          name: 'ticker',
          image: 'sealkit/e2e-ticker',
          command: ['/bin/busybox', 'sh', '-c', 'while :; do /bin/tick || exit; /bin/busybox sleep 1; done'],
          restart: 'on-failure',
          backoff: { initial: '1s', max: '5s' },
        },
      ],
      ima: { mode: 'enforce', reverify: '10m' },
    });
    const adminKey = await readSecretKey(join(testStateDir, 'keys', 'admin.key'));

    // unsigned: refused, nothing applied, and audit.policy records it
    const unsigned = await t.throwsAsync<SealkitError>(pushPolicy(admin, yaml, null), undefined, 'an unsigned policy is refused');
    t.regex(unsigned!.code, /^SEALKIT_/);
    t.log(`unsigned push: ${unsigned!.code}: ${unsigned!.message}`);
    await events.wait('audit.policy', 30_000);

    // signed by the bootstrap admin key: applied
    const t0 = Date.now();
    // policy.applied, for exactly these bytes, is the node's acknowledgement;
    // the request's reply can miss its 10 s deadline in a guest starved while
    // its other services start, after the policy is applied
    const reply = await pushPolicy(admin, yaml, adminKey).catch((err: SealkitError) => {
      if (err.code !== 'SEALKIT_TIMEOUT') throw err;
      t.log(`signed push: no reply within 10 s (${err.message}); waiting for policy.applied`);
      return undefined;
    });
    if (reply) t.is(reply.serial, 1);
    const applied = await events.wait((e) => e.type === 'policy.applied' && e.data.serial === 1, minutes(5));
    t.is(applied.data.sha256, sha256(Buffer.from(yaml)), 'the pushed bytes are in force');

    const fail = (type: string) => events!.wait(type, minutes(10)).then((e) => Promise.reject(new Error(`${type}: ${JSON.stringify(e.data)}`)));
    const ofE2e = (type: string) => (e: { type: string; data: Record<string, any> }) => e.type === type && (e.data.name === 'sealkit/e2e' || e.data.image?.name === 'sealkit/e2e');
    const verified = await Promise.race([events.wait(ofE2e('image.verified'), minutes(5)), fail('image.rejected'), fail('audit.rejected')]);
    t.is(verified.data.sha256, image.sha256);
    t.true(http.hits('/e2e.tar.gz') >= 1 && http.hits('/e2e.tar.gz.sig') >= 1, 'archive and signature came from the host');
    t.deepEqual(verified.data.signedBy, ['release']);
    const imported = await Promise.race([events.wait(ofE2e('image.imported'), minutes(5)), fail('image.import_failed')]);
    t.deepEqual((imported.data.targets as Array<{ runtime: string }>).map((x) => x.runtime), ['containerd']);
    const labeled = await Promise.race([events.wait(ofE2e('ima.labeled'), minutes(5)), fail('audit.rejected')]);
    t.is(labeled.data.files, 3);
    t.regex(labeled.data.rootfs as string, /^\/var\/lib\/containerd\/sealkit\//, 'the rootfs is on the appraised store');
    t.log(`push to labelled: ${((Date.now() - t0) / 1000).toFixed(1)} s (image.verified, image.imported, ima.labeled)`);
    const enforcing = await events.wait('ima.enforcing', 30_000);
    t.is(enforcing.data.mode, 'host-policy', `the kernel enforces: ${JSON.stringify(enforcing.data)}`);

    // the guest step tampers with the rootfs; the kernel refuses; the host hears it
    const denialOf = (file: string, cause: string) => (e: { type: string; data: Record<string, unknown> }) =>
      e.type === 'audit.denial' && String(e.data.file).endsWith(file) && e.data.cause === cause && (e.data.process as { comm?: string } | null)?.comm === 'cat';
    const forged = await events.wait(denialOf('/bin/app', 'invalid-hash'), minutes(3));
    const added = await events.wait(denialOf('/bin/added', 'missing-hash'), minutes(1));
    for (const d of [forged, added]) {
      t.is(d.data.container, labeled.data.container);
      t.is((d.data.image as { digest: string }).digest, image.sha256);
      t.is(d.data.policySerial, 1);
    }
    t.is(forged.data.expectedSha256, sha256(image.files['bin/app']), 'the denial says what the file should hash to');
    // the denial can reach the host before the step's own line about it has
    // come through the serial port: its last line says all are there
    await vm.waitFor(/E2E-DENIALS done/, minutes(1));
    const said = vm.console().split(/\r?\n/).filter((l) => l.includes('E2E-DENIALS')).map((l) => l.slice(l.indexOf('E2E-DENIALS') + 12));
    t.log(said.join('\n'));
    t.true(said.includes('read untouched allowed'), 'an untouched file of the labelled rootfs opens');
    t.true(said.some((l) => /^read forged denied: .*Permission denied/.test(l)), 'the forged file is refused with EACCES');
    t.true(said.some((l) => /^read added denied: .*Permission denied/.test(l)), 'the added file is refused with EACCES');

    // the workload: running from its labelled rootfs, under this policy
    const started = await Promise.race([events.wait((e) => e.type === 'container.started' && e.data.name === 'ticker', minutes(5)), fail('container.refused')]);
    t.log(`push to container running: ${((Date.parse(started.time) - t0) / 1000).toFixed(1)} s (container.started, pid ${started.data.pid}, ${started.data.verifiedFiles} files re-verified)`);
    t.is(started.data.image.digest, ticker.sha256);
    t.is(started.data.policySerial, 1);
    const tickerLabeled = await events.wait((e) => e.type === 'ima.labeled' && e.data.image.name === 'sealkit/e2e-ticker', 30_000);
    t.is(started.data.rootfs, tickerLabeled.data.rootfs, 'it runs from the labelled rootfs');
    t.is(started.data.verifiedFiles, 2, 'every file of its rootfs was re-hashed before the start');

    // the step changes bin/tick offline; the next exec is refused by the kernel
    const inTicker = (type: string) => (e: { type: string; data: Record<string, any> }) => e.type === type && e.data.name === 'ticker';
    const denied = await events.wait((e) => e.type === 'audit.denial' && e.data.workload === 'ticker', minutes(5)).catch((err: Error) => {
      const seen = events!.of('audit.denial').map((e) => ({ path: e.data.path, file: e.data.file, workload: e.data.workload, comm: e.data.process?.comm }));
      throw new Error(`${err.message.split(';')[0]}: no audit.denial naming workload ticker; denials: ${JSON.stringify(seen)}`);
    });
    t.is(denied.data.path, '/bin/tick', "the kernel names the file as the container's process saw it");
    t.is(denied.data.file, `${tickerLabeled.data.rootfs}/bin/tick`, 'and the auditor names it on the node');
    t.is(denied.data.cause, 'invalid-hash');
    t.is(denied.data.container, tickerLabeled.data.container);
    t.is(denied.data.image.digest, ticker.sha256);
    t.is(denied.data.policySerial, 1);
    t.is(denied.data.expectedSha256, sha256(ticker.files['bin/tick']));
    const exited = await events.wait(inTicker('container.exited'), minutes(2));
    t.is(exited.data.code, 126, 'sh: the command could not be executed');
    t.is(exited.data.image.digest, ticker.sha256);
    // restart: on-failure, and the re-verification before it finds the change
    await events.wait(inTicker('container.restarting'), minutes(1));
    const refused = await events.wait(inTicker('container.refused'), minutes(2));
    t.is(refused.data.file, '/bin/tick', 'the re-verification before the restart names the changed file');
    t.is(refused.data.image.digest, ticker.sha256);
    t.is(refused.data.policySerial, 1);
    t.log(`container.refused: ${refused.data.code}: ${refused.data.reason}`);
    const ps = await request<{ containers: Array<{ name: string; state: string; restarts: number }> }>(anon, subjects.runner.ps, {}, { timeout: 10_000 });
    t.like(ps.containers.find((c) => c.name === 'ticker'), { state: 'refused', restarts: 1 }, 'runner.ps: refused, not running');
    const tamper = events.of('audit.tamper').find((e) => e.data.container === tickerLabeled.data.container && String(e.data.file).endsWith('bin/tick'));
    t.truthy(tamper, `audit.tamper for bin/tick; saw: ${JSON.stringify(events.of('audit.tamper').map((e) => e.data))}`);
    await vm.waitFor(/E2E-WORKLOAD (done|error|skip)/, minutes(1));
    const worked = vm.console().split(/\r?\n/).filter((l) => l.includes('E2E-WORKLOAD')).map((l) => l.slice(l.indexOf('E2E-WORKLOAD') + 13));
    t.log(worked.join('\n'));
    const rewrote = worked.map((l) => /^rewrote bin\/tick offline at ([\d.]+) s/.exec(l)).find(Boolean);
    t.truthy(rewrote, 'the step changed bin/tick offline');
    if (rewrote && denied.data.kernel.usec) t.log(`tamper to denial: ${(denied.data.kernel.usec / 1e6 - Number(rewrote[1])).toFixed(2)} s in the guest (the kernel's record), audit.denial ${((Date.parse(exited.time) - Date.parse(denied.time)) / 1000).toFixed(2)} s before container.exited`);
    const logs = await request<LogsReply>(admin, subjects.runner.logs, { name: 'ticker' }, { timeout: 10_000 });
    t.regex(logs.data, /^tick$/m, 'the container ran bin/tick');
    t.regex(logs.data, /\/bin\/tick: Permission denied/, 'the next exec failed with EACCES');

    // the same signed bytes again: a replayed serial is refused
    const replay = await t.throwsAsync<SealkitError>(pushPolicy(admin, yaml, adminKey), undefined, 'a replayed serial is refused');
    t.log(`replayed push: ${replay!.code}: ${replay!.message}`);
    t.regex(replay!.message, /serial/);

    t.log(`last heartbeat: ${names(events.of('node.heartbeat').at(-1)!).join(', ')}`);
    const settled = await vm.settled(minutes(3)).catch(() => null);
    if (settled) t.log(`guest 60 s after the bus: memory used ${settled.usedMiB} of ${settled.totalMiB} MiB; running: ${settled.running.join(' ')}`);
  } catch (err) {
    // the power-off assertion below would otherwise be all ava shows
    t.log(`failed: ${(err as Error).message}`);
    const guest = vm.console().split(/\r?\n/).filter((l) => /E2E-DENIALS|E2E-WORKLOAD|sealkit: .*(stopped|restarting)|^  \| /.test(l));
    t.log(`guest console:\n${guest.slice(-60).join('\n')}`);
    if (events) t.log(`heartbeats: ${events.of('node.heartbeat').map((e) => names(e).join(',')).slice(-3).join(' | ')}`);
    throw err;
  } finally {
    events?.close();
    await anon?.close();
    await admin?.close();
    await http.close();
    const how = await vm.powerOff();
    t.log(`power off: ${how}`);
    t.is(how, 'acpi', 'the node powers off from the ACPI button');
  }
});

// one QEMU at a time: two TCG guests on two cores starve each other
test.serial('in QEMU: a signed policy pushed from the host is fetched, imported, labelled and enforced by the kernel, and denials reach the host', e2e);
test.serial("the same on bookworm's 6.1 kernel (make iso KERNEL=6.1)", e2e, '6.1');
