import test from 'ava';
import { readFileSync, openSync, writeSync, closeSync, readSync, constants } from 'node:fs';
import { parseKmsgRecord, KERNEL_FACILITY } from '../services/auditor/kmsg.ts';
import { parseAuditMessage, isDenial, denialFacts, type IntegrityRecord } from '../services/auditor/integrity.ts';
import { canWriteKmsg } from './helpers/kmsg.ts';

// Genuine records: Debian's 6.1 kernel under QEMU with ima_appraise=enforce,
// see test/fixtures/kmsg/capture-init.sh.
const fixture = readFileSync(new URL('./fixtures/kmsg/debian-6.1-ima-appraise.kmsg', import.meta.url), 'utf8').trim().split('\n');

function integrity(line: string): IntegrityRecord {
  const k = parseKmsgRecord(line);
  if (!k) throw new Error(`not a kmsg record: ${line}`);
  const p = parseAuditMessage(k.message);
  if (p.kind !== 'integrity') throw new Error(`not an integrity record: ${line}`);
  return p.record;
}

const bySeq = (seq: number) => fixture.find((l) => l.split(',')[1] === String(seq))!;

test('kmsg header gives facility, level, seq and usec', (t) => {
  const k = parseKmsgRecord(bySeq(377))!;
  t.is(k.facility, KERNEL_FACILITY);
  t.is(k.level, 5);
  t.is(k.seq, 377);
  t.is(k.usec, 3976299);
  t.true(k.message.startsWith('audit: type=1800 audit('));
});

test('a real invalid-hash denial from the kernel is parsed field by field', (t) => {
  const r = integrity(bySeq(377));
  t.is(r.type, 1800);
  t.is(r.typeName, 'INTEGRITY_DATA');
  t.is(r.auditId, '1795431129.387:5');
  t.is(r.time, new Date(1795431129387).toISOString());
  t.true(isDenial(r));
  t.false(r.truncated);
  t.deepEqual(denialFacts(r), {
    mechanism: 'ima',
    rule: null,
    file: '/t/foo',
    cause: 'invalid-hash',
    op: 'appraise_data',
    process: { pid: 88, comm: 'cat', uid: 0 },
    dev: 'tmpfs',
    ino: 2,
    mntNs: null,
    res: 0,
    errno: 0,
  });
});

test('hex-encoded names from the kernel are decoded: a space, a double quote', (t) => {
  t.is(denialFacts(integrity(bySeq(378))).file, '/t/a b');
  t.is(denialFacts(integrity(bySeq(380))).file, '/t/q"uote');
  t.is(denialFacts(integrity(bySeq(379))).cause, 'missing-hash');
});

test('a hex-encoded comm from the kernel is decoded', (t) => {
  const f = denialFacts(integrity(bySeq(381)));
  t.is(f.process.comm, 'my tool');
  t.is(f.file, '/t/foo');
});

test('a real record cut by the kernel mid hex name is still a denial, marked truncated', (t) => {
  const r = integrity(bySeq(382));
  t.true(r.truncated);
  t.false('res' in r.fields);
  t.true(isDenial(r));
  const f = denialFacts(r);
  t.regex(f.file!, /^\/t\/d{200}\/e{200}\/file with s/);
  t.is(f.cause, 'missing-hash');
  t.is(f.process.pid, 101);
});

test('informational integrity records (res=1) are not denials', (t) => {
  const rule = integrity(bySeq(374));
  t.is(rule.type, 1807);
  t.is(rule.fields.action, 'appraise');
  t.false(isDenial(rule));
  const status = integrity(bySeq(376));
  t.is(status.type, 1802);
  t.is(status.fields.op, 'policy_update');
  t.false(isDenial(status));
  t.false(isDenial(integrity(bySeq(350)))); // 1804 boot_aggregate
});

test('non-integrity audit records and other kernel lines are not ours', (t) => {
  t.is(parseAuditMessage(parseKmsgRecord(bySeq(162))!.message).kind, 'other'); // type=2000
  t.is(parseAuditMessage(parseKmsgRecord(bySeq(161))!.message).kind, 'other');
});

test('the denial userspace wrote into /dev/kmsg in the VM carries facility 1', (t) => {
  const k = parseKmsgRecord(bySeq(383))!;
  t.is(k.facility, 1);
  t.not(k.facility, KERNEL_FACILITY);
});

test('older kernels quote op and cause; mnt_ns is read when present', (t) => {
  const msg =
    'audit: type=1800 audit(1495131746.610:29): pid=384 uid=0 auid=4294967295 ses=4294967295 subj=kernel op="appraise_data" cause="invalid-hash" comm="cat" name="/tmp/foo" mnt_ns=4026532208 dev="tmpfs" ino=13105 res=0 errno=0';
  const p = parseAuditMessage(msg);
  if (p.kind !== 'integrity') return t.fail();
  const f = denialFacts(p.record);
  t.is(f.op, 'appraise_data');
  t.is(f.cause, 'invalid-hash');
  t.is(f.mntNs, 4026532208);
  t.is(f.ino, 13105);
  t.is(p.record.auditId, '1495131746.610:29');
});

test('hex name with trailing space decodes exactly', (t) => {
  const p = parseAuditMessage('audit: type=1800 audit(1.000:1): pid=1 op=appraise_data cause=invalid-hash comm="cat" name=2F746D702F61206220 dev="tmpfs" ino=1 res=0');
  t.is(p.kind === 'integrity' ? denialFacts(p.record).file : null, '/tmp/a b ');
});

test('AppArmor labels with a space stay one value', (t) => {
  const p = parseAuditMessage('audit: type=1800 audit(1.000:1): pid=1 subj=/usr/bin/foo (enforce) op=appraise_data cause=invalid-hash comm="foo" name="/x" res=0');
  if (p.kind !== 'integrity') return t.fail();
  t.is(p.record.fields.subj, '/usr/bin/foo (enforce)');
  t.is(p.record.fields.op, 'appraise_data');
});

test('auditd log lines: named type, node prefix and enriched tail', (t) => {
  const line =
    'node=n1 type=INTEGRITY_DATA msg=audit(1795431129.387:5): pid=88 uid=0 auid=4294967295 ses=4294967295 subj=unconfined op=appraise_data cause=invalid-hash comm="cat" name=2F742F612062 dev="tmpfs" ino=3 res=0 errno=0\x1dAUID="unset" UID="root"';
  const p = parseAuditMessage(line);
  if (p.kind !== 'integrity') return t.fail();
  t.is(p.record.type, 1800);
  t.is(denialFacts(p.record).file, '/t/a b');
  t.false('UID' in p.record.fields);
  const unknown = parseAuditMessage('type=UNKNOWN[1807] msg=audit(1.000:2): action=appraise res=1');
  t.is(unknown.kind === 'integrity' ? unknown.record.type : 0, 1807);
  t.is(parseAuditMessage('type=SYSCALL msg=audit(1.000:3): arch=c000003e').kind, 'other');
});

test('a quoted name cut before its closing quote is truncated, not lost', (t) => {
  const p = parseAuditMessage('audit: type=1800 audit(1.000:1): pid=7 op=appraise_data cause=invalid-hash comm="sh" name="/var/lib/very/long/pa');
  if (p.kind !== 'integrity') return t.fail();
  t.true(p.record.truncated);
  t.is(denialFacts(p.record).file, '/var/lib/very/long/pa');
  t.true(isDenial(p.record));
});

test('an integrity type without its audit stamp is malformed, not ignored', (t) => {
  t.is(parseAuditMessage('audit: type=1800 garbage').kind, 'malformed');
  t.is(parseAuditMessage('audit: type=1800 audit(1.000:1):').kind, 'malformed');
});

test('broken kmsg headers are rejected', (t) => {
  t.is(parseKmsgRecord('no header here'), null);
  t.is(parseKmsgRecord('5,x,1,-;audit: type=1800'), null);
  t.is(parseKmsgRecord('5,1;short'), null);
});

// Real data from this host: whatever userspace writes into /dev/kmsg, even
// asking for facility 0 with <5>, the kernel stores it as facility 1.
(canWriteKmsg ? test : test.skip)('userspace writes to the real /dev/kmsg never get the kernel facility', (t) => {
  const tag = `sealkit-spoof-${process.pid}-${Date.now()}`;
  const forged = [`<5>audit: type=1800 audit(1.000:1): pid=1 op=appraise_data cause=invalid-hash comm="cat" name="/${tag}-a" res=0`, `<13>${tag}-b`];
  const w = openSync('/dev/kmsg', 'w');
  for (const line of forged) writeSync(w, line + '\n'); // without the newline the record stays open and unreadable
  closeSync(w);
  const r = openSync('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
  const buf = Buffer.alloc(16384);
  const mine = [];
  for (;;) {
    let n: number;
    try {
      n = readSync(r, buf, 0, buf.length, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') break;
      if (code === 'EPIPE') continue;
      throw err;
    }
    const k = parseKmsgRecord(buf.toString('utf8', 0, n));
    if (k?.message.includes(tag)) mine.push(k);
  }
  closeSync(r);
  const denial = mine.find((k) => k.message.startsWith('audit: type=1800'));
  t.truthy(denial, 'the forged line was not found in /dev/kmsg');
  t.is(denial!.facility, 1); // asked for <5> (kernel, notice), stored as user
  t.is(denial!.level, 5);
  for (const k of mine) t.is(k.facility, 1, k.message);
});
