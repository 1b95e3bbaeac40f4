// /dev/kmsg records: `prio,seq,usec,flags[,...];message` followed by optional
// continuation lines that start with a space (` KEY=value` dictionary). One
// read() of the device returns exactly one record; a file copy holds one per
// line. The facility is prio >> 3: 0 is the kernel; anything userspace writes
// into /dev/kmsg is forced to facility 1 (user) or higher by the kernel, which
// is what lets us tell a real kernel denial from a forged line.

export const KERNEL_FACILITY = 0;

export interface KmsgRecord {
  facility: number;
  level: number;
  seq: number;
  usec: number;
  flags: string;
  message: string;
  dict: Record<string, string>;
}

export function parseKmsgRecord(text: string): KmsgRecord | null {
  const nl = text.indexOf('\n');
  const first = nl === -1 ? text : text.slice(0, nl);
  const semi = first.indexOf(';');
  if (semi === -1) return null;
  const head = first.slice(0, semi).split(',');
  if (head.length < 4) return null;
  const [prio, seq, usec] = head.slice(0, 3).map((s) => (/^\d+$/.test(s) ? Number(s) : NaN));
  if (!Number.isSafeInteger(prio) || !Number.isSafeInteger(seq) || !Number.isSafeInteger(usec)) return null;
  const dict: Record<string, string> = {};
  if (nl !== -1) {
    for (const line of text.slice(nl + 1).split('\n')) {
      if (!line.startsWith(' ')) continue;
      const eq = line.indexOf('=');
      if (eq > 1) dict[line.slice(1, eq)] = line.slice(eq + 1);
    }
  }
  return {
    // not >> and &: those cut to 32 bits, and a forged prio of 2^32+6 would read as the kernel
    facility: Math.floor(prio / 8),
    level: prio % 8,
    seq,
    usec,
    flags: head[3],
    message: unescapeKmsg(first.slice(semi + 1)),
    dict,
  };
}

// The kernel escapes unprintable bytes in /dev/kmsg output as \xNN.
function unescapeKmsg(s: string): string {
  if (!s.includes('\\x')) return s;
  return s.replace(/\\x([0-9a-f]{2})/g, (_m, h: string) => String.fromCharCode(Number.parseInt(h, 16)));
}
