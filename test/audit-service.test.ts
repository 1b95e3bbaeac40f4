import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { parseKmsgRecord } from '../services/auditor/kmsg.ts';
import { appendFile, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { Msg, NatsConnection, Subscription } from 'nats';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { repoRoot } from '../services/lib/config.ts';
import { generateKey, writeKeyFiles, type SecretKeyFile } from '../services/lib/sign.ts';
import { fileDigest, writeManifest, type LabelManifest } from '../services/lib/manifest.ts';
import { parseEvent, type CloudEvent } from '../services/lib/envelope.ts';
import { canWriteKmsg } from './helpers/kmsg.ts';

// The auditor as a real child process following a kmsg-format file that the
// test appends to, a real nats-server, and the anonymous monitor on audit.*.

let s: NatsServer;
let monitor: NatsConnection;
let dir: string;
const children = new Set<ChildProcess>();

test.before(async () => {
  s = await startNats();
  monitor = await s.connectAs(null);
  dir = await mkdtemp(join(tmpdir(), 'sealkit-audit-'));
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await monitor?.close();
  await s?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Node {
  name: string;
  state: string;
  kmsg: string;
  key: SecretKeyFile;
}

// Each test is its own node: own state dir (with the bus credentials), own
// kmsg file, events told apart by the Sealkit-Node header.
async function makeNode(name: string): Promise<Node> {
  const state = join(dir, name, 'state');
  await cp(join(s.stateDir, 'bus'), join(state, 'bus'), { recursive: true });
  const key = generateKey('node-manifest');
  await writeKeyFiles(key, join(state, 'ima', 'manifest-key'));
  const kmsg = join(dir, name, 'kmsg');
  await writeFile(kmsg, '');
  return { name, state, kmsg, key };
}

function startAuditor(node: Node, env: Record<string, string> = {}): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'services/auditor/main.ts')], {
    cwd: repoRoot,
    env: { ...process.env, SEALKIT_STATE: node.state, SEALKIT_NATS_URL: s.url, SEALKIT_NODE: node.name, SEALKIT_KMSG: node.kmsg, SEALKIT_AUDIT_POLL_MS: '20', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  // started, or exited: how long a start takes on a loaded machine is not
  // what this file tests (the test's own timeout bounds a hang)
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('"msg":"started"')) resolve(child);
    });
    child.stderr!.on('data', (d) => (out += d));
    child.on('exit', (code) => {
      children.delete(child);
      reject(new Error(`auditor exited ${code}: ${out}`));
    });
  });
}

async function stopAuditor(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

// Collects this node's audit.* events as they arrive.
class Watch {
  readonly events: Array<{ ev: CloudEvent<any>; msg: Msg }> = [];
  private readonly sub: Subscription;
  private waiters: Array<() => void> = [];

  constructor(node: string) {
    this.sub = monitor.subscribe('audit.*', {
      callback: (_e, msg) => {
        if (msg.headers?.get('Sealkit-Node') !== node) return;
        this.events.push({ ev: parseEvent(msg.data), msg });
        for (const w of this.waiters.splice(0)) w();
      },
    });
  }

  of(type: string): Array<CloudEvent<any>> {
    return this.events.filter((e) => e.ev.type === type).map((e) => e.ev);
  }

  async until(pred: () => boolean, what: string, ms = 20_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.events.map((e) => e.ev.type))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  close(): void {
    this.sub.unsubscribe();
  }
}

// The auditor has read (and put in its outbox or storm window) every record
// up to `seq`: its cursor file says so.
async function cursorAt(node: Node, seq: number, ms = 20_000): Promise<void> {
  const file = join(node.state, 'auditor', 'cursor.json');
  for (const deadline = Date.now() + ms; ; ) {
    const cur = await readFile(file, 'utf8').then(JSON.parse, () => null);
    if (cur && cur.seq >= seq) return;
    if (Date.now() > deadline) throw new Error(`the auditor's cursor did not reach ${seq}: ${JSON.stringify(cur)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const SHA = (c: string) => c.repeat(64);

function denial(seq: number, name: string, opts: { cause?: string; comm?: string; ino?: number; prio?: number; hex?: boolean } = {}): string {
  const n = opts.hex ? Buffer.from(name).toString('hex').toUpperCase() : `"${name}"`;
  const comm = opts.comm ?? 'cat';
  return (
    `${opts.prio ?? 5},${seq},${seq * 1000},-;audit: type=1800 audit(1795431129.${String(seq % 1000).padStart(3, '0')}:${seq}): ` +
    `pid=${100 + seq} uid=0 auid=4294967295 ses=4294967295 subj=unconfined op=appraise_data cause=${opts.cause ?? 'invalid-hash'} ` +
    `comm="${comm}" name=${n} dev="overlay" ino=${opts.ino ?? seq} res=0 errno=0\n`
  );
}

test('a kernel denial becomes audit.denial naming container, image and expected digest', async (t) => {
  const node = await makeNode('n-map');
  const rootfs = join(dir, 'n-map', 'rootfs', 'web');
  const manifest: LabelManifest = {
    version: 2,
    image: { name: 'mozsecure/centos6', tag: '20150615', digest: SHA('a') },
    container: 'web',
    rootfs,
    policySerial: 7,
    createdAt: new Date().toISOString(),
    files: { 'usr/bin/app': fileDigest(SHA('b')), 'etc/my conf': fileDigest(SHA('c')) },
  };
  await writeManifest(join(node.state, 'ima', 'manifests'), manifest, node.key);
  const w = new Watch(node.name);
  const child = await startAuditor(node);
  t.teardown(() => child.kill('SIGKILL'));

  const t0 = Date.now();
  await appendFile(
    node.kmsg,
    '6,1,10,-;audit: initializing netlink subsys (disabled)\n' +
      denial(2, `${rootfs}/usr/bin/app`) +
      // forged by userspace: facility 1, must never be a denial
      denial(3, `${rootfs}/usr/bin/app`, { prio: 13, cause: 'forged' }) +
      denial(4, `${rootfs}/etc/my conf`, { hex: true, comm: 'my tool' }) +
      denial(5, '/opt/unknown/file'),
  );
  await w.until(() => w.of('audit.denial').length >= 3 && w.of('audit.spoof').length >= 1, '3 denials and a spoof report');
  t.log(`write → 3 denials on audit.* in ${Date.now() - t0} ms (poll 20 ms)`);
  const [app, conf, unknown] = w.of('audit.denial');
  t.like(app.data, {
    file: `${rootfs}/usr/bin/app`,
    cause: 'invalid-hash',
    op: 'appraise_data',
    process: { pid: 102, comm: 'cat' },
    dev: 'overlay',
    ino: 2,
    container: 'web',
    image: { name: 'mozsecure/centos6', tag: '20150615', digest: SHA('a') },
    expectedSha256: SHA('b'),
    policySerial: 7,
    match: 'rootfs-prefix',
    kernel: { seq: 2, usec: 2000, auditId: '1795431129.002:2' },
  });
  t.true(app.data.raw.startsWith('5,2,2000,-;audit: type=1800'));
  const hdrs = w.events.find((e) => e.ev.id === app.id)!.msg.headers!;
  t.is(hdrs.get('Sealkit-Container'), 'web');
  t.is(hdrs.get('Sealkit-Image'), 'mozsecure/centos6:20150615');
  t.like(conf.data, { file: `${rootfs}/etc/my conf`, process: { comm: 'my tool' }, expectedSha256: SHA('c'), container: 'web' });
  t.like(unknown.data, { file: '/opt/unknown/file', container: null, image: null, expectedSha256: null, policySerial: null });
  t.false(w.of('audit.denial').some((e) => e.data.cause === 'forged'));
  t.like(w.of('audit.spoof')[0].data, { count: 1, firstSeq: 3 });
  t.is(app.source, 'sealkit/auditor/n-map');

  // a manifest written while the auditor runs is picked up
  await writeManifest(join(node.state, 'ima', 'manifests'), { ...manifest, container: 'db', rootfs: `${rootfs}-db`, files: { x: fileDigest(SHA('d')) } }, node.key);
  await appendFile(node.kmsg, denial(6, `${rootfs}-db/x`));
  await w.until(() => w.of('audit.denial').length >= 4, 'the 4th denial');
  t.like(w.of('audit.denial')[3].data, { container: 'db', expectedSha256: SHA('d') });
  w.close();
});

test('a manifest edited on disk is not trusted', async (t) => {
  const node = await makeNode('n-forged');
  const rootfs = '/var/lib/sealkit/rootfs/evil';
  const mdir = join(node.state, 'ima', 'manifests');
  await writeManifest(mdir, { version: 2, image: { name: 'x', tag: '1', digest: SHA('a') }, container: 'evil', rootfs, policySerial: 1, createdAt: '', files: { f: fileDigest(SHA('b')) } }, node.key);
  const path = join(mdir, 'evil.json');
  await writeFile(path, (await readFile(path, 'utf8')).replace(SHA('b'), SHA('e')));
  const w = new Watch(node.name);
  const child = await startAuditor(node);
  t.teardown(() => child.kill('SIGKILL'));
  await appendFile(node.kmsg, denial(1, `${rootfs}/f`));
  await w.until(() => w.of('audit.denial').length >= 1, 'the denial');
  t.like(w.of('audit.denial')[0].data, { container: null, expectedSha256: null });
  w.close();
});

test('restart: records written while the auditor is down arrive once, nothing twice', async (t) => {
  const node = await makeNode('n-restart');
  const w = new Watch(node.name);
  let child = await startAuditor(node);
  t.teardown(() => child.kill('SIGKILL'));
  let text = '';
  for (let i = 1; i <= 20; i++) text += denial(i, `/f/${i}`);
  await appendFile(node.kmsg, text);
  await w.until(() => w.of('audit.denial').length >= 20, '20 denials');
  await stopAuditor(child);

  text = '';
  for (let i = 21; i <= 40; i++) text += denial(i, `/f/${i}`);
  await appendFile(node.kmsg, text);
  child = await startAuditor(node);
  await w.until(() => w.of('audit.denial').length >= 40, '40 denials');
  await appendFile(node.kmsg, denial(41, '/f/41'));
  await w.until(() => w.of('audit.denial').length >= 41, 'the 41st denial');
  // a duplicate of an earlier record would be published before a later one
  await appendFile(node.kmsg, denial(42, '/f/42'));
  await w.until(() => w.of('audit.denial').some((e) => e.data.kernel.seq === 42), 'the 42nd denial');
  const seqs = w.of('audit.denial').map((e) => e.data.kernel.seq);
  t.deepEqual(seqs, Array.from({ length: 42 }, (_, i) => i + 1));
  t.is(w.of('audit.lost').length, 0);
  w.close();
});

test('kernel losses (a sequence jump, kernel rate-limiting, an unreadable record) are counted exactly on audit.lost', async (t) => {
  const node = await makeNode('n-gap');
  const w = new Watch(node.name);
  const child = await startAuditor(node);
  t.teardown(() => child.kill('SIGKILL'));
  await appendFile(node.kmsg, denial(10, '/g/a') + denial(11, '/g/b') + denial(50, '/g/c') + 'garbage without header\n' + '5,51,1,-;audit: type=1800 no stamp here\n' + '4,52,1,-;kauditd_printk_skb: 12 callbacks suppressed\n');
  await w.until(() => w.of('audit.lost').length >= 3 && w.of('audit.denial').length >= 3, 'lost reports');
  const lost = w.of('audit.lost').map((e) => e.data);
  t.like(lost.find((l) => l.reason === 'ring-overflow'), { service: 'auditor', dropped: 38, fromSeq: 12, toSeq: 49 });
  t.like(lost.find((l) => l.reason === 'parse'), { dropped: 1 });
  t.like(lost.find((l) => l.reason === 'kernel-ratelimit'), { dropped: 12, fromSeq: 52 });
  w.close();
});

test('a storm of 5,000 records is collapsed and capped, and the numbers add up exactly', async (t) => {
  const node = await makeNode('n-storm');
  const w = new Watch(node.name);
  const child = await startAuditor(node, { SEALKIT_AUDIT_WINDOW_MS: '400', SEALKIT_AUDIT_MAX_PER_SEC: '50' });
  t.teardown(() => child.kill('SIGKILL'));
  // 4,000 identical (same file, cause, comm) and 1,000 distinct
  let text = '';
  for (let i = 1; i <= 5000; i++) text += i <= 4000 ? denial(i, '/storm/same', { ino: 7 }) : denial(i, `/storm/${i}`);
  const t0 = Date.now();
  await appendFile(node.kmsg, text);

  const total = () => {
    let n = 0;
    for (const e of w.of('audit.denial')) n += e.data.repeats ?? 1;
    for (const e of w.of('audit.lost')) n += e.data.dropped;
    return n;
  };
  await w.until(() => total() >= 5000, 'accounting for 5,000 records', 60_000);
  const elapsed = Date.now() - t0;
  await new Promise((r) => setTimeout(r, 600)); // one more window: nothing extra may arrive
  t.is(total(), 5000);
  const denials = w.of('audit.denial');
  const lost = w.of('audit.lost');
  t.true(denials.length < 200, `collapsed into ${denials.length} events`);
  t.true(denials.some((e) => e.data.file === '/storm/same' && e.data.repeats > 0));
  t.true(lost.length >= 1 && lost.every((e) => e.data.reason === 'rate-limit'));
  t.log(`5000 records → ${denials.length} denial events (${denials.filter((e) => e.data.repeats).length} with repeats), ${lost.reduce((n, e) => n + e.data.dropped, 0)} counted on audit.lost in ${lost.length} reports; all accounted ${elapsed} ms after the write`);
  w.close();
});

test('a crash (SIGKILL) mid-stream loses nothing and stores nothing twice', async (t) => {
  const node = await makeNode('n-crash');
  const w = new Watch(node.name);
  const env = { SEALKIT_AUDIT_MAX_PER_SEC: '100000' };
  let child = await startAuditor(node, env);
  t.teardown(() => child.kill('SIGKILL'));
  let text = '';
  for (let i = 1; i <= 1000; i++) text += denial(i, `/crash/${i}`);
  await appendFile(node.kmsg, text);
  await w.until(() => w.of('audit.denial').length >= 50, 'the first denials');
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  child = await startAuditor(node, env);
  await w.until(() => new Set(w.of('audit.denial').map((e) => e.data.kernel.seq)).size >= 1000, 'all 1,000 denials', 60_000);

  // the stream, not the live feed, is the record: each seq exactly once
  const js = monitor.jetstream();
  // nats-server 2.9 has no filter on ordered consumers: filter here
  const consumer = await js.consumers.get('SEALKIT_AUDIT');
  const seen = new Map<number, number>();
  for (;;) {
    const m = await consumer.next({ expires: 1000 });
    if (!m) break;
    if (m.subject !== 'audit.denial' || m.headers?.get('Sealkit-Node') !== node.name) continue;
    const seq = (parseEvent(m.data) as CloudEvent<any>).data.kernel.seq as number;
    seen.set(seq, (seen.get(seq) ?? 0) + 1);
  }
  t.is(seen.size, 1000);
  t.deepEqual([...seen.values()].filter((n) => n !== 1), []);
  t.log(`live feed saw ${w.of('audit.denial').length} publishes for 1000 records; the stream kept ${seen.size}`);
  w.close();
});

// The real /dev/kmsg of this host (root only): a denial forged by userspace is
// read, reported as a spoof, and never as a denial.
(canWriteKmsg ? test : test.skip)('on the real /dev/kmsg a forged denial is a spoof, never a denial', async (t) => {
  const node = await makeNode('n-devkmsg');
  const w = new Watch(node.name);
  const child = await startAuditor(node, { SEALKIT_KMSG: '/dev/kmsg' });
  t.teardown(() => child.kill('SIGKILL'));
  const tag = `sealkit-forged-${process.pid}-${Date.now()}`;
  await appendFile('/dev/kmsg', `<5>audit: type=1800 audit(1795431129.387:5): pid=88 uid=0 auid=4294967295 ses=4294967295 subj=unconfined op=appraise_data cause=invalid-hash comm="cat" name="/${tag}" dev="tmpfs" ino=2 res=0 errno=0\n`);
  const mine = findInDevKmsg(tag);
  t.truthy(mine, 'the forged line is in /dev/kmsg');
  t.is(mine!.facility, 1); // asked for <5>, the kernel stored it as user
  const covers = (e: CloudEvent<any>) => e.data.firstSeq <= mine!.seq && mine!.seq <= e.data.lastSeq;
  await w.until(() => w.of('audit.spoof').some(covers), 'the spoof report');
  t.false(w.of('audit.denial').some((e) => e.data.raw.includes(tag)));
  // the cursor is written right after the batch's events are in the outbox
  let cursor: { identity: string; seq: number } = { identity: '', seq: -1 };
  for (let i = 0; i < 100 && cursor.seq < mine!.seq; i++) {
    cursor = await readFile(join(node.state, 'auditor', 'cursor.json'), 'utf8').then(JSON.parse, () => cursor);
    if (cursor.seq < mine!.seq) await new Promise((r) => setTimeout(r, 50));
  }
  t.regex(cursor.identity, /^kmsg:[0-9a-f-]{36}$/);
  t.true(cursor.seq >= mine!.seq);
  w.close();
});

function findInDevKmsg(tag: string): { seq: number; facility: number } | null {
  const fd = openSync('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
  const buf = Buffer.alloc(16384);
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue;
        if (code === 'EAGAIN') return null;
        throw err;
      }
      const k = parseKmsgRecord(buf.toString('utf8', 0, n));
      if (k?.message.includes(tag)) return { seq: k.seq, facility: k.facility };
    }
  } finally {
    closeSync(fd);
  }
}

test('repeats still counted when the auditor stops are reported after it starts again', async (t) => {
  const node = await makeNode('n-held');
  const w = new Watch(node.name);
  let child = await startAuditor(node, { SEALKIT_AUDIT_WINDOW_MS: '60000' });
  t.teardown(() => child.kill('SIGKILL'));
  let text = '';
  for (let i = 1; i <= 10; i++) text += denial(i, '/held/same', { ino: 3 });
  await appendFile(node.kmsg, text);
  await w.until(() => w.of('audit.denial').length >= 1, 'the first denial');
  // the 9 repeats wait in the open window once all 10 are read; stop, then start with a short window
  await cursorAt(node, 10);
  await stopAuditor(child);
  child = await startAuditor(node, { SEALKIT_AUDIT_WINDOW_MS: '200' });
  await appendFile(node.kmsg, denial(11, '/held/other'));
  await w.until(() => w.of('audit.denial').some((e) => e.data.repeats), 'the follow-up', 70_000);
  const denials = w.of('audit.denial');
  t.is(denials.filter((e) => e.data.file === '/held/same' && !e.data.repeats).length, 1);
  t.like(denials.find((e) => e.data.repeats)!.data, { file: '/held/same', repeats: 9, kernel: { seq: 10 } });
  w.close();
});

test('an auditd log file is followed from its byte offset across a restart', async (t) => {
  const node = await makeNode('n-auditd');
  const log = join(dir, 'n-auditd', 'audit.log');
  const line = (serial: number, name: string) =>
    `type=INTEGRITY_DATA msg=audit(1795431129.${String(serial).padStart(3, '0')}:${serial}): pid=9 uid=0 auid=4294967295 ses=4294967295 subj=unconfined op=appraise_data cause=invalid-hash comm="cat" name=${Buffer.from(name).toString('hex').toUpperCase()} dev="sda1" ino=${serial} res=0 errno=0\n`;
  await writeFile(log, `type=SYSCALL msg=audit(1795431129.000:1): arch=c000003e syscall=257\n${line(2, '/a b')}`);
  const w = new Watch(node.name);
  let child = await startAuditor(node, { SEALKIT_AUDIT_LOG: log });
  t.teardown(() => child.kill('SIGKILL'));
  await w.until(() => w.of('audit.denial').length >= 1, 'the first denial');
  t.like(w.of('audit.denial')[0].data, { file: '/a b', dev: 'sda1', kernel: { seq: null, auditId: '1795431129.002:2' } });
  await stopAuditor(child);
  await appendFile(log, line(3, '/c') + line(4, '/d'));
  child = await startAuditor(node, { SEALKIT_AUDIT_LOG: log });
  await w.until(() => w.of('audit.denial').length >= 3, '3 denials');
  // a duplicate of an earlier line would be published before a later one
  await appendFile(log, line(5, '/e'));
  await w.until(() => w.of('audit.denial').some((e) => e.data.file === '/e'), 'the line after');
  // The outbox publishes at least once: an event whose JetStream ack it had
  // not recorded (a stop, a slow ack on a loaded machine) is sent again
  // under its id, and the stream keeps one. A plain subscriber sees both
  // (a fresh-clone run saw '/a b' three times), so events are counted by id;
  // a line read twice into a new event would have a new id.
  const denials = w.of('audit.denial');
  const firstOfId = denials.filter((e, i) => denials.findIndex((x) => x.id === e.id) === i);
  t.deepEqual(firstOfId.map((e) => e.data.file), ['/a b', '/c', '/d', '/e']);
  for (const e of denials) t.is(firstOfId.find((x) => x.id === e.id)?.data.file, e.data.file, 'a repeated id is the same event');
  w.close();
});
