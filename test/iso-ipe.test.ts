import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { bootVm, ensureTestCaseIso, testStateDir, untilAnswering, type Vm } from './helpers/qemu.ts';
import { startHttp, type TestServer } from './helpers/http.ts';
import { busyboxImage, sha256 } from './helpers/images.ts';
import { EventLog } from './helpers/events.ts';
import { policyYaml, pushPolicy } from './helpers/policy.ts';
import { ownerCert, ownerVars } from './helpers/kernel-vm.ts';
import { assertBuilt, sealkit } from './helpers/cli.ts';
import { generateKey, readSecretKey, signImage } from '../services/lib/sign.ts';
import { readCreds } from '../services/lib/natsconf.ts';
import { request } from '../services/lib/bus.ts';
import { subjects } from '../services/lib/subjects.ts';
import type { SealkitError } from '../services/lib/errors.ts';
import type { LogsReply } from '../services/lib/contract.ts';

// Issue 14's proof on the node itself: the test-case ISO (test/cases/
// ipe-workload) boots under OVMF with a throwaway owner certificate in the
// firmware's db, on Debian's 6.12 kernel. From the host the owner pushes the
// IPE policy made by `sealkit ipe policy` from the workload's archive (then
// an older and an unsigned one, which the kernel refuses), then the node
// policy naming the workload; the node fetches, verifies, imports, labels
// and enables fs-verity, and the runner starts "ticker" from that rootfs
// through containerd and crun. The intruder step, root on the node, then
// writes to a binary of the rootfs and runs new binaries from the store and
// from the rootfs, and the workload's own loop runs the new one inside the
// container: the kernel refuses each, and the host receives audit.denial
// (mechanism ipe) naming the container. On bookworm's 6.1 (the IMA tier)
// the same steps succeed: the write, and both new binaries run.

const minutes = (n: number) => n * 60_000;
const dir = mkdtempSync(join(tmpdir(), 'sealkit-iso-ipe-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const LOOP = 'while :; do /bin/tick || exit; if [ -x /bin/busybox-new ]; then /bin/busybox-new echo new ran; echo "busybox-new $?"; fi; /bin/busybox sleep 1; done';

const scenario = test.macro(async (t, kernel?: string) => {
  t.timeout(minutes(30));
  assertBuilt();
  const iso = await ensureTestCaseIso('ipe-workload', (l) => t.log(l), kernel);
  const built = (JSON.parse(await readFile(iso.manifest, 'utf8')) as { kernel: { version: string } }).kernel.version;
  const ipe = !kernel;
  t.log(`ISO with kernel ${built}, ${iso.reused ? 'reused' : `built in ${iso.seconds.toFixed(0)} s`}`);
  if (ipe) t.regex(built, /^6\.12\./, 'the IPE scenario runs on the 6.12 kernel make deps installs');

  // the owner: a certificate enrolled in the VM's db, and its IPE policies
  // for the workload's archive, made by the README's commands
  const work = mkdtempSync(join(dir, 'work-'));
  const owner = ownerCert(work, 'owner');
  const other = ownerCert(work, 'other');
  const release = generateKey('release');
  const ticker = await busyboxImage('sealkit/ipe-ticker', '1', { 'bin/tick': '#!/bin/busybox sh\necho tick\n' });
  const sig = signImage({ name: 'sealkit/ipe-ticker', tag: '1', sha256: ticker.sha256, size: ticker.archive.length }, [release]);
  writeFileSync(join(work, 'ticker.tar.gz'), ticker.archive);
  const policyFor = async (serial: number, by: { cert: string; key: string }, out: string) => {
    const r = await sealkit(['ipe', 'policy', 'ticker.tar.gz', '--serial', String(serial), '--cert', by.cert, '--key', by.key, '--out', out], {}, { cwd: work });
    t.is(r.code, 0, r.stderr);
    return join(work, out, 'policy.p7b');
  };
  const v1 = await policyFor(1, owner, 'v1');
  const v2 = await policyFor(2, owner, 'v2');
  const foreign = await policyFor(3, other, 'other');

  const http: TestServer = await startHttp({ headersTimeoutMs: 5000 });
  http.route('/ticker.tar.gz', { body: ticker.archive });
  http.route('/ticker.tar.gz.sig', { body: Buffer.from(JSON.stringify(sig)) });
  const vm: Vm = await bootVm({ iso: iso.iso, firmware: 'uefi', ovmfVars: ownerVars(work, owner.cert), httpPort: Number(new URL(http.origin).port) });
  let anon: NatsConnection | undefined;
  let admin: NatsConnection | undefined;
  let events: EventLog | undefined;
  const said = () => vm.console().split(/\r?\n/).filter((l) => l.includes('IPE-INTRUDER')).map((l) => l.slice(l.indexOf('IPE-INTRUDER') + 13));
  try {
    await vm.waitForBus(minutes(10));
    await vm.busReady(minutes(2));
    t.regex(vm.console(), /efi: EFI v[\d.]+ by EDK II/, 'booted by UEFI firmware');
    const servers = `127.0.0.1:${vm.busPort}`;
    anon = await connect({ servers, name: 'iso-ipe-watch' });
    events = new EventLog(anon, ['image.*', 'ima.*', 'audit.*', 'container.*', 'policy.applied']);
    await anon.flush();
    const creds = await readCreds(join(testStateDir, 'bus', 'creds', 'admin.json'));
    admin = await connect({ servers, name: 'iso-ipe-admin', user: creds.user, pass: creds.password });
    await untilAnswering(anon, 'ima', minutes(10));
    const ipePush = (p7b: Buffer) => request<{ version: string; updated: boolean; enforcement: { mode: string } }>(admin!, subjects.ima.ipe, { p7b: p7b.toString('base64') }, { timeout: 60_000 });

    if (ipe) {
      // the policy the owner signed: taken by the kernel, and the node's tier
      const applied = await ipePush(readFileSync(v2));
      t.like(applied, { version: '0.0.2', enforcement: { mode: 'ipe-verity' } }, JSON.stringify(applied));
      const refusal = async (p7b: Buffer) => (await t.throwsAsync<SealkitError>(ipePush(p7b)))!;
      const older = await refusal(readFileSync(v1));
      t.is(older.code, 'SEALKIT_POLICY_ROLLBACK', older.message);
      const unsigned = await refusal(readFileSync(join(work, 'v2', 'ipe-policy.txt')));
      t.is(unsigned.code, 'SEALKIT_SIGNATURE_INVALID', unsigned.message);
      const notOwners = await refusal(readFileSync(foreign));
      t.is(notOwners.code, 'SEALKIT_KEY_UNTRUSTED', notOwners.message);
      t.log(`IPE policy 0.0.2 active; refused: ${older.code}, ${unsigned.code}, ${notOwners.code}`);
      // this VM's standing weaknesses, as the ima service sees them from its
      // container: OVMF with only db enrolled (Setup Mode: rcS's copy of the
      // variable) and the initramfs root read-write (init's mountinfo)
      for (const kind of ['firmware-setup-mode', 'initramfs-root-writable']) {
        const w = await events.wait((e) => e.type === 'audit.tamper' && e.data.scope === 'node' && e.data.kind === kind, minutes(1));
        t.like(w.data, { mechanism: 'ipe-verity', action: 'reported' });
      }
    } else {
      const no = await t.throwsAsync<SealkitError>(ipePush(readFileSync(v2)));
      t.is(no!.code, 'SEALKIT_IMA_UNAVAILABLE', no!.message);
    }

    const yaml = policyYaml({
      serial: 1,
      keys: [{ id: 'release', ed25519: release.ed25519 }],
      images: [{ name: 'sealkit/ipe-ticker', tag: '1', source: 'http://10.0.2.100/ticker.tar.gz', allowHttp: true, sha256: ticker.sha256, signatures: { keys: ['release'], threshold: 1 } }],
      // onTamper report: the container keeps running, so its own try of the
      // intruder's binary is seen on both kernels
      containers: [{ name: 'ticker', image: 'sealkit/ipe-ticker', command: ['/bin/busybox', 'sh', '-c', LOOP], restart: 'on-failure', onTamper: 'report' }],
      ima: { mode: 'enforce', reverify: '10m' },
    });
    await pushPolicy(admin, yaml, await readSecretKey(join(testStateDir, 'keys', 'admin.key'))).catch((err: SealkitError) => {
      if (err.code !== 'SEALKIT_TIMEOUT') throw err;
    });
    const fail = (type: string) => events!.wait(type, minutes(10)).then((e) => Promise.reject(new Error(`${type}: ${JSON.stringify(e.data)}`)));
    const labeled = await Promise.race([events.wait('ima.labeled', minutes(8)), fail('ima.label_failed'), fail('image.rejected')]);
    const started = await Promise.race([events.wait((e) => e.type === 'container.started' && e.data.name === 'ticker', minutes(5)), fail('container.refused')]);
    t.is(started.data.rootfs, labeled.data.rootfs, 'the workload runs from the labelled rootfs');
    const enforcing = events.of('ima.enforcing').at(-1)!;
    t.is(enforcing.data.mode, ipe ? 'ipe-verity' : 'host-policy', JSON.stringify(enforcing.data));

    await vm.waitFor(/IPE-INTRUDER done/, minutes(5));
    const lines = said();
    t.log(lines.join('\n'));
    const of = (what: string) => lines.find((l) => l.startsWith(what)) ?? `(no "${what}" line)`;
    const logs = await request<LogsReply>(admin, subjects.runner.logs, { name: 'ticker' }, { timeout: 10_000 });
    t.regex(logs.data, /^tick$/m, 'the workload ran bin/tick');
    if (ipe) {
      t.is(of('append'), 'append refused: Operation not permitted', 'a file with fs-verity is immutable (EPERM)');
      t.regex(of('exec store'), /^exec store refused 126: .*Permission denied$/, 'a new binary on the store is refused (EACCES)');
      t.regex(of('exec rootfs'), /^exec rootfs refused 126: .*Permission denied$/, "a new binary in the container's rootfs is refused");
      t.regex(logs.data, /busybox-new: Permission denied/, 'inside the container too');
      t.regex(logs.data, /^busybox-new 126$/m);
      t.notRegex(logs.data, /new ran/);
      // the kernel's record of the container's try, as the host sees it
      const denied = await events.wait((e) => e.type === 'audit.denial' && e.data.workload === 'ticker', minutes(2));
      t.like(denied.data, { mechanism: 'ipe', path: '/bin/busybox-new', container: labeled.data.container, file: `${labeled.data.rootfs}/bin/busybox-new` });
      t.is(denied.data.image.digest, ticker.sha256);
      t.log(`audit.denial: ${JSON.stringify({ mechanism: denied.data.mechanism, rule: denied.data.rule, path: denied.data.path, workload: denied.data.workload, container: denied.data.container, comm: denied.data.process?.comm })}`);
      const fromNode = events.of('audit.denial').filter((e) => e.data.mechanism === 'ipe' && String(e.data.file).endsWith('busybox-intruder'));
      t.true(fromNode.length > 0, `the node-side exec on the store is an audit.denial too; saw ${JSON.stringify(events.of('audit.denial').map((e) => e.data.file))}`);
    } else {
      // the IMA tier: the kernel relabels what root writes through it
      t.is(of('append'), 'append ok', 'on 6.1 root can change a binary of the rootfs');
      t.is(of('exec store'), 'exec store ran: store ran', 'and run a new binary from the store');
      t.is(of('exec rootfs'), 'exec rootfs ran: rootfs ran', "and one written into the container's rootfs");
      // userspace appraisal finds the changed binary afterwards, and takes
      // its modes away: the container's next run of it fails, after it ran
      const tamper = await events.wait((e) => e.type === 'audit.tamper' && e.data.container === labeled.data.container && e.data.file === 'bin/tick', minutes(2));
      t.like(tamper.data, { kind: 'modified', action: 'blocked' });
      t.log(`audit.tamper after the fact: /${tamper.data.file} ${tamper.data.kind}, ${tamper.data.action}`);
    }
  } catch (err) {
    t.log(`failed: ${(err as Error).message}`);
    t.log(`intruder:\n${said().join('\n')}`);
    t.log(`guest console:\n${vm.console().split(/\r?\n/).filter((l) => /sealkit: |^  \| |audit: type=14/.test(l)).slice(-40).join('\n')}`);
    throw err;
  } finally {
    events?.close();
    await anon?.close();
    await admin?.close();
    await http.close();
    t.is(await vm.powerOff(), 'acpi', 'the node powers off from the ACPI button');
  }
});

// one QEMU at a time: two TCG guests on two cores starve each other
test.serial('in QEMU under OVMF with the owner key in db, on 6.12: IPE + fs-verity refuse what root writes and runs, and the host hears it naming the container', scenario);
test.serial("the same steps on bookworm's 6.1 (IMA tier): the write and both new binaries succeed", scenario, '6.1');
