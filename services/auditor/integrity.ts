// Integrity audit records (types 1800–1807) as the kernel prints them:
//
//   kmsg:   audit: type=1800 audit(1795431072.345:5): pid=88 uid=0 ... op=appraise_data
//           cause=invalid-hash comm="cat" name="/t/foo" dev="tmpfs" ino=2 res=0 errno=0
//   auditd: type=INTEGRITY_DATA msg=audit(1795431072.345:5): pid=88 ...
//
// integrity_audit_message() prints op and cause raw (older kernels quoted
// them) and comm, name and dev through audit_log_untrustedstring(): quoted
// when every byte is in 0x21..0x7e and not '"', otherwise upper-case hex
// without quotes. kmsg lines are cut at about 1 KiB, so a long hex name can
// end mid-byte and the trailing fields (dev, ino, res) can be missing.

export const integrityTypes: Record<number, string> = {
  1800: 'INTEGRITY_DATA',
  1801: 'INTEGRITY_METADATA',
  1802: 'INTEGRITY_STATUS',
  1803: 'INTEGRITY_HASH',
  1804: 'INTEGRITY_PCR',
  1805: 'INTEGRITY_RULE',
  1806: 'INTEGRITY_EVM_XATTR',
  1807: 'INTEGRITY_POLICY_RULE',
  // IPE (Linux 6.12) refusing an execution, security/ipe/audit.c:
  //   audit: type=1420 audit(…): ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1
  //   pid=174 comm="init" path="/s/unlisted" dev="vda" ino=20 rule="DEFAULT op=EXECUTE action=DENY"
  1420: 'IPE_ACCESS',
};
export const IPE_ACCESS = 1420;
const typeByName = new Map(Object.entries(integrityTypes).map(([n, name]) => [name, Number(n)]));

// fields printed with audit_log_untrustedstring: hex when unquoted
const untrusted = new Set(['name', 'comm', 'dev', 'file', 'exe', 'path']);

export interface IntegrityRecord {
  type: number;
  typeName: string;
  auditId: string | null; // "seconds.millis:serial" from audit(...)
  time: string | null; // ISO time of the audit timestamp
  fields: Record<string, string>; // decoded values, as printed order-independent
  truncated: boolean;
}

export type ParseResult =
  | { kind: 'integrity'; record: IntegrityRecord }
  | { kind: 'other' } // not an integrity record: not our business
  | { kind: 'malformed'; reason: string }; // claims to be one, cannot be read

const kmsgHead = /^audit: type=(\d+) /;
const logHead = /^(?:node=\S+ )?type=(?:([A-Z_]+)|UNKNOWN\[(\d+)\]) /;

export function parseAuditMessage(message: string): ParseResult {
  let type: number;
  let rest: string;
  const k = kmsgHead.exec(message);
  if (k) {
    type = Number(k[1]);
    rest = message.slice(k[0].length);
  } else {
    const l = logHead.exec(message);
    if (!l) return { kind: 'other' };
    type = l[1] !== undefined ? (typeByName.get(l[1]) ?? -1) : Number(l[2]);
    rest = message.slice(l[0].length);
    if (rest.startsWith('msg=')) rest = rest.slice(4);
  }
  if (!(type in integrityTypes)) return { kind: 'other' };
  // auditd's enriched format appends interpreted fields after 0x1d
  const gs = rest.indexOf('\x1d');
  if (gs !== -1) rest = rest.slice(0, gs);

  const stamp = /^audit\((\d+)\.(\d{3}):(\d+)\):\s?/.exec(rest);
  if (!stamp) return { kind: 'malformed', reason: `type=${type} record without an audit(...) stamp` };
  const body = rest.slice(stamp[0].length);
  const { fields, truncated } = parseFields(body);
  if (Object.keys(fields).length === 0) return { kind: 'malformed', reason: `type=${type} record without fields` };
  const ms = Number(stamp[1]) * 1000 + Number(stamp[2]);
  const when = new Date(ms); // invalid past year 275760: time is null then, not a RangeError
  // IPE's record has no res=; its last field is the rule
  const expectsRes = type !== 1805 && type !== IPE_ACCESS;
  return {
    kind: 'integrity',
    record: {
      type,
      typeName: integrityTypes[type],
      auditId: `${stamp[1]}.${stamp[2]}:${stamp[3]}`,
      time: Number.isFinite(when.getTime()) ? when.toISOString() : null,
      fields,
      truncated: truncated || (expectsRes && fields.res === undefined) || (type === IPE_ACCESS && fields.rule === undefined),
    },
  };
}

function parseFields(body: string): { fields: Record<string, string>; truncated: boolean } {
  const fields: Record<string, string> = {};
  let truncated = false;
  let last: string | undefined;
  let i = 0;
  const n = body.length;
  while (i < n) {
    while (i < n && body[i] === ' ') i++;
    if (i >= n) break;
    const keyMatch = /^([A-Za-z0-9_-]+)=/.exec(body.slice(i, i + 64));
    if (!keyMatch) {
      // a word without '=' continues the previous value, e.g. AppArmor's
      // "subj=/usr/bin/foo (enforce)"; anything else is noise
      const end = nextSpace(body, i);
      if (last !== undefined && !untrusted.has(last)) fields[last] += ' ' + body.slice(i, end);
      i = end;
      continue;
    }
    const key = keyMatch[1];
    i += keyMatch[0].length;
    let value: string;
    if (body[i] === '"') {
      const close = body.indexOf('"', i + 1);
      if (close === -1) {
        value = body.slice(i + 1);
        truncated = true;
        i = n;
      } else {
        value = body.slice(i + 1, close);
        i = close + 1;
      }
    } else {
      const end = nextSpace(body, i);
      value = body.slice(i, end);
      i = end;
      if (untrusted.has(key) && /^[0-9A-Fa-f]*$/.test(value)) {
        if (value.length % 2 === 1) truncated = true;
        value = fromHex(value);
      }
    }
    fields[key] = value;
    last = key;
  }
  return { fields, truncated };
}

function nextSpace(s: string, from: number): number {
  const j = s.indexOf(' ', from);
  return j === -1 ? s.length : j;
}

function fromHex(hex: string): string {
  const even = hex.length - (hex.length % 2);
  return Buffer.from(hex.slice(0, even), 'hex').toString('utf8');
}

// A failure the kernel reports: res=0. A record cut before res= but carrying
// a cause is treated as a failure too — informational records (res=1) are
// short enough never to be cut.
export function isDenial(r: IntegrityRecord): boolean {
  // IPE audits only refusals unless success_audit is on; with enforce 0 the
  // refusal is recorded but not made, and reported all the same
  if (r.type === IPE_ACCESS) return r.fields.rule === undefined ? r.truncated : r.fields.rule.endsWith('action=DENY');
  if (r.fields.res === '0') return true;
  return r.fields.res === undefined && r.truncated && r.fields.cause !== undefined;
}

function num(v: string | undefined): number | null {
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : null;
}

export interface DenialFacts {
  mechanism: 'ima' | 'ipe';
  rule: string | null; // IPE: the policy rule that decided
  file: string | null;
  cause: string | null;
  op: string | null;
  process: { pid: number | null; comm: string | null; uid: number | null };
  dev: string | null;
  ino: number | null;
  mntNs: number | null;
  res: number | null;
  errno: number | null;
}

export function denialFacts(r: IntegrityRecord): DenialFacts {
  const f = r.fields;
  if (r.type === IPE_ACCESS) {
    const enforcing = f.enforcing !== '0';
    return {
      mechanism: 'ipe',
      rule: f.rule ?? null,
      file: f.path ?? null,
      // refused (EACCES), or only recorded while IPE is switched off
      cause: enforcing ? 'ipe-denied' : 'ipe-permissive',
      op: f.ipe_op && f.ipe_hook ? `${f.ipe_op}/${f.ipe_hook}` : (f.ipe_op ?? null),
      process: { pid: num(f.pid), comm: f.comm ?? null, uid: null },
      dev: f.dev ?? null,
      ino: num(f.ino),
      mntNs: null,
      res: enforcing ? 0 : 1,
      errno: enforcing ? 13 : null,
    };
  }
  return {
    mechanism: 'ima',
    rule: null,
    file: f.name ?? f.file ?? null,
    cause: f.cause ?? null,
    op: f.op ?? null,
    process: { pid: num(f.pid), comm: f.comm ?? null, uid: num(f.uid) },
    dev: f.dev ?? null,
    ino: num(f.ino),
    mntNs: num(f.mnt_ns),
    res: num(f.res),
    errno: f.errno !== undefined && /^-?\d+$/.test(f.errno) ? Number(f.errno) : null,
  };
}
