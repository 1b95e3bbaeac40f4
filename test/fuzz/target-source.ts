import { createHash } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { openSource, type RawRecord } from '../../services/auditor/source.ts';
import { check, mutated, utf8, type Target } from './harness.ts';

// The file follower (a kmsg capture or auditd's audit.log that grows): the
// input is the file content, appended in pieces between reads with varying
// batch sizes, and read again after a restart from a saved offset.
// Properties: exactly the complete lines come out, in order, each once, with
// the byte offset after it; a restart from a record's offset yields the
// records after it; what the follower holds between reads stays bounded.

const line = fc.oneof(
  fc.constantFrom(
    '6,1,100,-;audit: type=1800 audit(1.000:1): pid=1 op=appraise_data cause=invalid-hash comm="cat" name="/x" res=0',
    'type=INTEGRITY_DATA msg=audit(1795431129.387:5): pid=88 op=appraise_data cause=invalid-hash comm="cat" name=2F742F612062 res=0',
    ' SUBSYSTEM=x',
    '',
    '\r',
    'é\u0000\uffff',
  ),
  fc.string({ maxLength: 120 }),
);
const content = fc.tuple(fc.array(line, { maxLength: 40 }), fc.option(fc.string({ maxLength: 50 }), { nil: undefined })).map(([ls, tail]) => ls.join('\n') + (ls.length ? '\n' : '') + (tail ?? ''));
// now and then one line far longer than any kernel record
const long = fc.tuple(fc.integer({ min: 70_000, max: 3 * 1024 * 1024 }), fc.boolean()).map(([n, nl]) => `6,1,1,-;${'A'.repeat(n)}${nl ? '\n6,2,2,-;after\n' : ''}`);

const dir = mkdtempSync(join(tmpdir(), 'sealkit-fuzz-source-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const MAX_HELD = 1024 * 1024 + 64 * 1024;

// the follower cuts a line at 64 KiB (the offset of a cut line is wherever it stopped holding it)
const MAX_LINE = 64 * 1024;
function expected(buf: Buffer): Array<{ text: string; end: number | null }> {
  const out: Array<{ text: string; end: number | null }> = [];
  let at = 0;
  for (let nl = buf.indexOf(0x0a, at); nl !== -1 || buf.length - at > MAX_LINE; nl = buf.indexOf(0x0a, at)) {
    const stop = nl === -1 ? buf.length : nl;
    const text = buf.toString('utf8', at, Math.min(stop, at + MAX_LINE));
    if (text.length > 0 && !text.startsWith(' ')) out.push({ text, end: stop - at > MAX_LINE ? null : stop + 1 });
    if (nl === -1) break;
    at = nl + 1;
  }
  return out;
}

let n = 0;
export const target: Target = {
  name: 'audit-source',
  timeoutMs: 30_000,
  arbitrary: () => fc.oneof({ weight: 6, arbitrary: content.map(utf8) }, { weight: 2, arbitrary: mutated(content.map(utf8), 4) }, { weight: 1, arbitrary: long.map(utf8) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2000 }) }),
  async run(input) {
    const buf = Buffer.from(input);
    const h = createHash('sha256').update(buf).digest();
    const path = join(dir, `log-${n++ % 4}`);
    writeFileSync(path, '');
    const src = await openSource(path);
    const got: RawRecord[] = [];
    try {
      // append in up to 4 pieces; between them, read in batches of 1..8
      const cuts = [0, ...[h[0], h[1], h[2]].map((b) => Math.floor((b / 256) * buf.length)).sort((a, b) => a - b), buf.length];
      for (let i = 0; i + 1 < cuts.length; i++) {
        appendFileSync(path, buf.subarray(cuts[i], cuts[i + 1]));
        for (let k = 0; k < 10_000; k++) {
          const batch = await src.read(1 + (h[3 + (k % 8)] % 8));
          check(!batch.overflow, 'a file source reported overflow');
          got.push(...batch.records);
          const held = (src as unknown as { pending: Buffer }).pending.length;
          check(held <= MAX_HELD, `the follower holds ${held} bytes of one line between reads`);
          if (batch.records.length === 0) break;
        }
      }
    } finally {
      await src.close();
    }
    const want = expected(buf);
    const isLong = want.some((w) => w.end === null);
    check(got.length === want.length, `${got.length} records read, ${want.length} complete lines written`);
    got.forEach((r, i) => check(r.text === want[i].text && (want[i].end === null || r.end === want[i].end), `record ${i}: ${JSON.stringify(r).slice(0, 100)} != ${JSON.stringify(want[i]).slice(0, 100)}`));
    for (let i = 1; i < got.length; i++) check(got[i].end > got[i - 1].end, 'offsets do not increase');
    // restart from the middle: the records after that point, again
    if (got.length > 1 && !isLong) {
      const from = h[12] % got.length;
      const again = await openSource(path, { identity: src.identity, offset: got[from].end });
      try {
        const rest: RawRecord[] = [];
        for (let b = await again.read(1000); b.records.length; b = await again.read(1000)) rest.push(...b.records);
        check(rest.length === got.length - from - 1 && rest.every((r, i) => r.text === got[from + 1 + i].text && r.end === got[from + 1 + i].end), `a restart at offset ${got[from].end} yields ${rest.length} records, not the ${got.length - from - 1} after it`);
      } finally {
        await again.close();
      }
    }
    rmSync(path, { force: true });
  },
};
