import test from 'ava';
import { appendFileSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { buildImage } from './helpers/images.ts';
import { generateKey, writeKeyFiles } from '../services/lib/sign.ts';
import { makeEvent, parseEvent, type CloudEvent } from '../services/lib/envelope.ts';
import { encode, request, type NatsConnection } from '../services/lib/bus.ts';
import { isSealkitError } from '../services/lib/errors.ts';
import type { Msg } from 'nats';

// The running ima service (its own process, its own bus user) labels an
// imported image and then appraises the rootfs in userspace: a modified, a
// replaced and an added file each become an audit.tamper that an anonymous
// subscriber sees within 2 s.

let s: NatsServer;
let svc: RunningService;
let monitor: NatsConnection;
let admin: NatsConnection;
let store: string;
const seen: Array<{ ev: CloudEvent<Record<string, any>>; headers: Record<string, string>; at: number }> = [];

test.before(async () => {
  s = await startNats();
  const trust = generateKey('admin-test');
  await writeKeyFiles(trust, join(s.dir, 'admin'));
  writeFileSync(join(s.stateDir, 'trust.yaml'), `keys:\n  - id: ${trust.id}\n    ed25519: ${trust.ed25519}\n`);
  store = mkdtempSync(join(tmpdir(), 'sealkit-ima-store-'));
  monitor = await s.connectAs(null);
  admin = await s.connectAs('admin');
  for (const subject of ['ima.*', 'audit.*']) {
    monitor.subscribe(subject, {
      callback: (_e, m: Msg) => {
        // ima.* also carries the ima.verify/ima.status requests: not events
        let ev: CloudEvent<Record<string, any>>;
        try {
          ev = parseEvent(m.data) as CloudEvent<Record<string, any>>;
        } catch {
          return;
        }
        const headers: Record<string, string> = {};
        for (const k of m.headers?.keys() ?? []) headers[k] = m.headers!.get(k);
        seen.push({ ev, headers, at: Date.now() });
      },
    });
  }
  await monitor.flush();
  svc = await startService('ima', { SEALKIT_STATE: s.stateDir, SEALKIT_NATS_URL: s.url, SEALKIT_CONTAINER_STORE: store, SEALKIT_NODE: 'node-t' });
});

test.after.always(async () => {
  await svc?.stop();
  await monitor?.close();
  await admin?.close();
  await s?.cleanup();
  rmSync(store, { recursive: true, force: true });
});

async function waitFor<T>(pred: () => T | undefined, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const tamper = (file: string, kind: string) => () => seen.find((x) => x.ev.type === 'audit.tamper' && x.ev.data.file === file && x.ev.data.kind === kind);

test.serial('ima reports how it enforces: userspace on a kernel without ima_appraise', async (t) => {
  const e = await waitFor(() => seen.find((x) => x.ev.type === 'ima.enforcing'), 10_000, 'ima.enforcing');
  t.is(e.ev.data.mode, 'userspace');
  t.is(typeof e.ev.data.why, 'string');
  t.deepEqual(Object.keys(e.ev.data.kernel).sort(), ['appraise', 'ima', 'ipe', 'ipeEnforce', 'ipePolicy', 'namespaces', 'policyWritable']);
});

test.serial('an imported image is labelled, then a modified, a replaced and an added file are each reported within 2 s', async (t) => {
  const img = await buildImage({ name: 'sealkit/web', tag: '1.0', layers: [{ 'bin/web': '#!/bin/sh\necho web\n', 'etc/web.conf': 'port=80\n', 'etc/motd': 'hello\n' }] });
  const archive = join(s.dir, 'web.tar');
  writeFileSync(archive, img.archive);
  const ev = makeEvent('importer', 'image.imported', {
    name: img.name, tag: img.tag, sha256: img.sha256, source: `file://${archive}`, manifestDigest: img.manifestDigest, policySerial: 1,
    archive: { path: archive, sha256: img.sha256, format: 'oci-archive', compression: 'none' }, targets: [],
  });
  await admin.jetstream().publish('image.imported', encode(ev), { msgID: ev.id });

  const labeled = await waitFor(() => seen.find((x) => x.ev.type === 'ima.labeled'), 20_000, 'ima.labeled');
  const { container, rootfs } = labeled.ev.data;
  t.like(labeled.ev.data, { files: 3, image: { name: 'sealkit/web', tag: '1.0', digest: img.sha256 } });
  t.is(labeled.headers['Sealkit-Container'], container);

  // modified in place
  let t0 = Date.now();
  appendFileSync(join(rootfs, 'etc/web.conf'), 'evil=1\n');
  const mod = await waitFor(tamper('etc/web.conf', 'modified'), 2000, 'modified');
  t.true(mod.at - t0 <= 2000);
  t.like(mod.ev.data, { container, image: { name: 'sealkit/web', tag: '1.0', digest: img.sha256 }, policySerial: 1, action: 'blocked' });
  t.regex(mod.ev.data.expectedSha256, /^[0-9a-f]{64}$/);
  t.not(mod.ev.data.actualSha256, mod.ev.data.expectedSha256);
  t.is(mod.headers['Sealkit-Container'], container);
  t.is(mod.headers['Sealkit-Image'], 'sealkit/web:1.0');
  t.is(statSync(join(rootfs, 'etc/web.conf')).mode & 0o777, 0, 'enforce mode blocks the modified file');

  // replaced by an unlabelled copy with the same bytes (a new inode)
  t0 = Date.now();
  writeFileSync(join(rootfs, 'etc/.motd.new'), 'hello\n');
  renameSync(join(rootfs, 'etc/.motd.new'), join(rootfs, 'etc/motd'));
  const rep = await waitFor(tamper('etc/motd', 'label-mismatch'), 2000, 'label-mismatch');
  t.true(rep.at - t0 <= 2000);
  t.is(rep.ev.data.actualSha256, rep.ev.data.expectedSha256);

  // replaced by different content
  t0 = Date.now();
  writeFileSync(join(rootfs, 'bin/.web.new'), '#!/bin/sh\nexec /bin/evil\n');
  renameSync(join(rootfs, 'bin/.web.new'), join(rootfs, 'bin/web'));
  await waitFor(tamper('bin/web', 'modified'), 2000, 'replaced bin/web');
  t.true(Date.now() - t0 <= 2000);

  // added
  t0 = Date.now();
  writeFileSync(join(rootfs, 'bin/backdoor'), 'nc -l 4444\n');
  const add = await waitFor(tamper('bin/backdoor', 'added'), 2000, 'added');
  t.true(add.at - t0 <= 2000);
  t.is(add.ev.data.expectedSha256, null);

  // on demand: ima.verify answers with everything that differs now
  const res = await request<{ findings: Array<{ file: string; kind: string }> }>(admin, 'ima.verify', { container }, { timeout: 10_000 });
  const kinds = Object.fromEntries(res.findings.map((f) => [f.file, f.kind]));
  t.is(kinds['etc/web.conf'], 'modified');
  t.is(kinds['bin/web'], 'modified');
  t.is(kinds['bin/backdoor'], 'added');
  t.false('etc/motd' in kinds, 'enforce mode restored the label of the identical copy');

  // removed
  rmSync(join(rootfs, 'etc/motd'));
  await waitFor(tamper('etc/motd', 'removed'), 2000, 'removed');

  // each finding is reported once, not on every later event
  t.is(seen.filter((x) => x.ev.type === 'audit.tamper' && x.ev.data.file === 'etc/web.conf').length, 1);

  // anyone may ask for the status; a bad verify request is answered with a code
  const status = await request<{ containers: Array<{ container: string }>; enforcement: { mode: string } }>(monitor, 'ima.status', {});
  t.deepEqual(status.containers.map((c) => c.container), [container]);
  t.is(status.enforcement.mode, 'userspace');
  const err = await t.throwsAsync(request(admin, 'ima.verify', { container: 'no-such-container' }));
  t.true(isSealkitError(err, 'SEALKIT_BAD_REQUEST'), String(err));
});
