import fc from 'fast-check';
import { KERNEL_FACILITY, parseKmsgRecord } from '../../services/auditor/kmsg.ts';
import { denialFacts, integrityTypes, isDenial, parseAuditMessage } from '../../services/auditor/integrity.ts';
import { check, mutated, utf8, type Target } from './harness.ts';

// /dev/kmsg records and integrity audit messages (kmsg and auditd forms).

const messages = [
  'audit: type=1800 audit(1495131746.610:29): pid=384 uid=0 auid=4294967295 ses=4294967295 subj=kernel op="appraise_data" cause="invalid-hash" comm="cat" name="/tmp/foo" mnt_ns=4026532208 dev="tmpfs" ino=13105 res=0 errno=0',
  'audit: type=1800 audit(1.000:1): pid=1 op=appraise_data cause=invalid-hash comm="cat" name=2F746D702F61206220 dev="tmpfs" ino=1 res=0',
  'audit: type=1800 audit(1.000:1): pid=1 subj=/usr/bin/foo (enforce) op=appraise_data cause=invalid-hash comm="foo" name="/x" res=0',
  'node=n1 type=INTEGRITY_DATA msg=audit(1795431129.387:5): pid=88 uid=0 auid=4294967295 ses=4294967295 subj=unconfined op=appraise_data cause=invalid-hash comm="cat" name=2F742F612062 dev="tmpfs" ino=3 res=0 errno=0\x1dAUID="unset" UID="root"',
  'audit: type=1800 audit(1.000:1): pid=7 op=appraise_data cause=invalid-hash comm="sh" name="/var/lib/very/long/pa',
  'type=UNKNOWN[1805] msg=audit(1.000:2): pid=1 op=measure res=1',
  'audit: type=1805 audit(1.000:3): action=measure func=BPRM_CHECK res=1',
  'kauditd_printk_skb: 12 callbacks suppressed',
  'audit: type=1400 audit(1.000:1): apparmor="DENIED"',
];

const prio = fc.oneof(
  fc.integer({ min: 0, max: 191 }).map(String),
  fc.constantFrom('0', '3', '6', '8', '13', '14', '1023', '2147483648', '2147483654', '4294967296', '4294967302', '4294967299', '9007199254740991', '9007199254740992', '18446744073709551622', '99999999999999999999', '-1', '', '06', '+6', ' 6', '6 ', '0x6', '1e3'),
);
const num = fc.oneof(fc.nat().map(String), fc.constantFrom('0', '18446744073709551615', '9007199254740993', '', 'x', '-1', '1.5'));
const field = fc.oneof(
  fc.constantFrom('name', 'comm', 'dev', 'file', 'exe', 'op', 'cause', 'res', 'pid', 'uid', 'ino', 'errno', 'mnt_ns', '__proto__', 'constructor', 'toString', 'hasOwnProperty'),
  fc.stringMatching(/^[A-Za-z0-9_-]{1,70}$/),
);
const value = fc.oneof(
  fc.constantFrom('0', '1', '"cat"', '"', '""', '2F746D70', '2F7', 'ZZ', '-2', '"/a b"', '(enforce)', '\\x41', '\\x0', ''),
  fc.string({ maxLength: 40 }),
  fc.stringMatching(/^[0-9A-Fa-f]{0,80}$/),
);
const stamp = fc.oneof(
  fc.tuple(fc.nat(), fc.integer({ min: 0, max: 999 }), fc.nat()).map(([s, ms, n]) => `audit(${s}.${String(ms).padStart(3, '0')}:${n}): `),
  fc.constantFrom('audit(1.000:1): ', 'audit(99999999999999999999.000:1): ', 'audit(8640000000000.001:1): ', 'audit(8640000000001.000:1): ', 'audit(1.00:1): ', 'audit(:): ', 'audit(1.000:1):', ''),
);
const typeHead = fc.oneof(
  fc.integer({ min: 1799, max: 1808 }).map((n) => `audit: type=${n} `),
  fc.constantFrom('type=INTEGRITY_DATA msg=', 'node=x type=INTEGRITY_RULE msg=', 'type=UNKNOWN[1800] msg=', 'type=UNKNOWN[99999999999999999999] msg=', 'type=__proto__ msg=', 'type=constructor msg=', 'audit: type=1800', 'audit: type=00001800 '),
);
const built = fc
  .tuple(typeHead, stamp, fc.array(fc.tuple(field, value), { maxLength: 12 }), fc.option(fc.constantFrom('\x1dAUID="x"', ' (enforce)', ' ', '"')))
  .map(([h, s, fs, tail]) => h + s + fs.map(([k, v]) => `${k}=${v}`).join(' ') + (tail ?? ''));
const message = fc.oneof(fc.constantFrom(...messages), built, fc.string({ maxLength: 200 }));
const dict = fc.array(fc.oneof(fc.tuple(field, value).map(([k, v]) => ` ${k}=${v}`), fc.constantFrom(' =x', ' SUBSYSTEM=', 'DEVICE=+x', ' ', '')), { maxLength: 4 });
const record = fc
  .tuple(prio, num, num, fc.constantFrom('-', 'c', '+', '', '-,caller=T1', '-;'), message, dict)
  .map(([p, s, u, f, m, d]) => [`${p},${s},${u},${f};${m}`, ...d].join('\n'));

const kmsgPrio = /^(\d+),/;

export const target: Target = {
  name: 'kmsg',
  timeoutMs: 5000,
  arbitrary: () => fc.oneof({ weight: 4, arbitrary: record.map(utf8) }, { weight: 2, arbitrary: mutated(record.map(utf8)) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }) }),
  run(input) {
    const text = Buffer.from(input).toString('utf8');
    const k = parseKmsgRecord(text);
    if (k) {
      check(Number.isSafeInteger(k.facility) && k.facility >= 0, `facility ${k.facility} is not a non-negative integer`);
      check(Number.isInteger(k.level) && k.level >= 0 && k.level <= 7, `level ${k.level}`);
      check(Number.isSafeInteger(k.seq) && k.seq >= 0 && Number.isSafeInteger(k.usec) && k.usec >= 0, 'seq/usec');
      check(typeof k.message === 'string' && typeof k.flags === 'string', 'message/flags');
      for (const [key, v] of Object.entries(k.dict)) check(typeof key === 'string' && typeof v === 'string', 'dict');
      // the kernel forces what userspace writes to facility >= 1: a prio of 8 or
      // more must never come out as a kernel record
      const p = kmsgPrio.exec(text);
      check(p, 'a record was parsed from a line without a decimal prio');
      const prioValue = BigInt(p[1]);
      check(prioValue < 8n || k.facility !== KERNEL_FACILITY, `prio ${p[1]} (userspace facility ${prioValue >> 3n}) parsed as a kernel record`);
      check(BigInt(k.facility) * 8n + BigInt(k.level) === prioValue, `prio ${p[1]} parsed as facility ${k.facility} level ${k.level}`);
    }
    for (const m of k ? [k.message, text] : [text]) {
      const r = parseAuditMessage(m);
      check(r.kind === 'integrity' || r.kind === 'other' || r.kind === 'malformed', `kind ${(r as { kind: string }).kind}`);
      if (r.kind !== 'integrity') continue;
      const rec = r.record;
      check(rec.type in integrityTypes && rec.typeName === integrityTypes[rec.type], `type ${rec.type}`);
      check(rec.time === null || !Number.isNaN(Date.parse(rec.time)), `time ${rec.time}`);
      for (const v of Object.values(rec.fields)) check(typeof v === 'string', 'field value not a string');
      const facts = denialFacts(rec);
      check(typeof isDenial(rec) === 'boolean', 'isDenial');
      JSON.stringify(facts);
    }
  },
};
