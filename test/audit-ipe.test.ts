import test from 'ava';
import { readFileSync } from 'node:fs';
import { parseKmsgRecord } from '../services/auditor/kmsg.ts';
import { denialFacts, isDenial, parseAuditMessage, type IntegrityRecord } from '../services/auditor/integrity.ts';

// Genuine IPE records: Debian's 6.12 kernel under OVMF enforcing sealkit's
// policy, read from /dev/kmsg by test/ipe-kernel-vm.test.ts's /init (its
// KMSG lines): refusals (1420), the enforce switch (1404), and 1420 again
// while IPE is switched off.
const fixture = readFileSync(new URL('./fixtures/kmsg/debian-6.12-ipe.kmsg', import.meta.url), 'utf8').trim().split('\n');
const bySeq = (seq: number) => parseAuditMessage(parseKmsgRecord(fixture.find((l) => l.split(',')[1] === String(seq))!)!.message);

function record(seq: number): IntegrityRecord {
  const p = bySeq(seq);
  if (p.kind !== 'integrity') throw new Error(`seq ${seq} is not a record the auditor reads: ${p.kind}`);
  return p.record;
}

test('an IPE refusal is a denial with the mechanism, the rule, the path and the process', (t) => {
  const r = record(464);
  t.is(r.typeName, 'IPE_ACCESS');
  t.is(r.auditId, '1796621853.744:6');
  t.false(r.truncated);
  t.true(isDenial(r));
  t.deepEqual(denialFacts(r), {
    mechanism: 'ipe',
    rule: 'DEFAULT op=EXECUTE action=DENY',
    file: '/s/unlisted',
    cause: 'ipe-denied',
    op: 'EXECUTE/BPRM_CHECK',
    process: { pid: 170, comm: 'init', uid: null },
    dev: 'vda',
    ino: 23,
    mntNs: null,
    res: 0,
    errno: 13,
  });
  t.like(denialFacts(record(467)), { file: '/t/true', dev: 'tmpfs' });
});

test('a path the kernel printed in hex is decoded', (t) => {
  t.is(denialFacts(record(466)).file, '/s/un listed');
});

test('with IPE switched off the refusal is recorded, not made, and said so', (t) => {
  const bprm = record(470);
  t.true(isDenial(bprm));
  t.like(denialFacts(bprm), { cause: 'ipe-permissive', errno: null, res: 1, op: 'EXECUTE/BPRM_CHECK' });
  t.like(denialFacts(record(471)), { cause: 'ipe-permissive', op: 'EXECUTE/MMAP', process: { pid: 181, comm: 'true', uid: null } });
});

test('the enforce switch (1404) is not a denial: the ima service reports it as tamper from securityfs', (t) => {
  t.is(bySeq(468).kind, 'other');
  t.is(bySeq(469).kind, 'other'); // IPE also emits an empty 1404 record
});

test('an IPE record cut before its rule is still a denial, marked truncated', (t) => {
  const line = fixture.find((l) => l.split(',')[1] === '465')!;
  const cut = parseAuditMessage(parseKmsgRecord(line.slice(0, line.indexOf(' rule=')))!.message);
  if (cut.kind !== 'integrity') return t.fail(cut.kind);
  t.true(cut.record.truncated);
  t.true(isDenial(cut.record));
  t.is(denialFacts(cut.record).file, '/s/plain');
});
