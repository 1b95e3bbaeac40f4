import fc from 'fast-check';

// Hostile tar streams, byte by byte: any name, type flag, link target, size
// encoding (octal, base-256, garbage), pax and GNU long-name records, wrong
// checksums. tar-stream's packer cannot write most of these, so this does.

export interface RawEntry {
  name: string;
  type: string; // the type flag character
  linkname: string;
  content: Buffer;
  size?: string | number; // header size field: number (octal), 'b256:<n>', or raw text
  pax?: Array<[string, string]>;
  gnuLong?: boolean; // put the name in a GNU 'L' record
  badChecksum?: boolean;
  mode?: number;
  ustar?: boolean;
}

const BLOCK = 512;

function field(h: Buffer, off: number, len: number, s: string) {
  Buffer.from(s, 'utf8').copy(h, off, 0, len);
}

function octal(n: number, len: number): string {
  return n.toString(8).padStart(len - 1, '0') + '\0';
}

function header(e: { name: string; type: string; linkname: string; size: string | number; mode: number; badChecksum?: boolean; ustar?: boolean }): Buffer {
  const h = Buffer.alloc(BLOCK);
  let name = e.name;
  let prefix = '';
  if (Buffer.byteLength(name) > 100 && e.ustar !== false) {
    const cut = name.lastIndexOf('/', 155);
    if (cut > 0 && Buffer.byteLength(name.slice(cut + 1)) <= 100) {
      prefix = name.slice(0, cut);
      name = name.slice(cut + 1);
    }
  }
  field(h, 0, 100, name);
  field(h, 100, 8, octal(e.mode & 0o7777777, 8));
  field(h, 108, 8, octal(0, 8));
  field(h, 116, 8, octal(0, 8));
  if (typeof e.size === 'number') field(h, 124, 12, octal(Math.max(0, Math.min(e.size, 8 ** 11 - 1)), 12));
  else if (typeof e.size !== 'string') throw new Error(`size field ${typeof e.size} ${JSON.stringify(e).slice(0, 500)}`);
  else if (e.size.startsWith('b256:')) {
    // base-256: high bit set, big-endian; "b256:-1" is all ones (negative)
    const v = e.size.slice(5);
    if (v === '-1') h.fill(0xff, 124, 136);
    else {
      let n = BigInt(v);
      for (let i = 135; i > 124; i--) {
        h[i] = Number(n & 0xffn);
        n >>= 8n;
      }
      h[124] = 0x80;
    }
  } else field(h, 124, 12, e.size);
  field(h, 136, 12, octal(0, 12));
  h.write(e.type.slice(0, 1) || '\0', 156, 1, 'latin1');
  field(h, 157, 100, e.linkname);
  if (e.ustar !== false) {
    h.write('ustar\0', 257, 6, 'latin1');
    h.write('00', 263, 2, 'latin1');
    field(h, 345, 155, prefix);
  }
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  if (e.badChecksum) sum += 1;
  h.write(octal(sum, 7) + ' ', 148, 8, 'latin1');
  return h;
}

const pad = (n: number) => Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);

function paxBody(records: Array<[string, string]>): Buffer {
  return Buffer.concat(
    records.map(([k, v]) => {
      const rest = ` ${k}=${v}\n`;
      let len = Buffer.byteLength(rest);
      len += String(len).length;
      if (String(len).length !== String(len - String(len).length).length) len++;
      return Buffer.from(`${len}${rest}`, 'utf8');
    }),
  );
}

export function tarBytes(entries: RawEntry[], opts: { trailer?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (e.pax?.length) {
      const body = paxBody(e.pax);
      parts.push(header({ name: 'PaxHeaders/x', type: 'x', linkname: '', size: body.length, mode: 0o644 }), body, pad(body.length));
    }
    let name = e.name;
    if (e.gnuLong) {
      const body = Buffer.from(e.name + '\0', 'utf8');
      parts.push(header({ name: '././@LongLink', type: 'L', linkname: '', size: body.length, mode: 0o644 }), body, pad(body.length));
      name = name.slice(0, 99);
    }
    parts.push(header({ name, type: e.type, linkname: e.linkname, size: e.size ?? e.content.length, mode: e.mode ?? 0o644, badChecksum: e.badChecksum, ustar: e.ustar }));
    parts.push(e.content, pad(e.content.length));
  }
  if (opts.trailer !== false) parts.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(parts);
}

// ---------- generators ----------

export const hostileName = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('a', 'a/b', 'dir/', 'dir/f', './x', 'lnk', 'lnk/x', 'lnk/../x', 'a/lnk/x', 'bin/sh', 'etc/passwd', 'f', 'f/', 'dir/sub/deep') },
  { weight: 2, arbitrary: fc.constantFrom('../x', '..', '../', 'a/../../x', 'a/b/../../../x', '/etc/passwd', '/', '//x', 'a//b', '.', './', '', './..', 'a/./../..', '..\\x', 'x\0../y', '\0', '.../x', 'a/..', 'dir/..', ' ../x') },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('a/', 'x'.repeat(99) + '/', 'p/'.repeat(60), ''), fc.constantFrom('x'.repeat(100), 'y'.repeat(120), '../z', 'q')).map(([a, b]) => a + b) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom('a', '..', '.', '', 'lnk', 'dir', 'é', '\u202e', 'x'.repeat(40)), { minLength: 1, maxLength: 6 }).map((p) => p.join('/')) },
);
export const hostileLink = fc.oneof(
  fc.constantFrom('', '.', '..', '../..', '../../etc', '/', '/etc/passwd', '/bin/busybox', 'a', 'f', 'dir', 'dir/f', 'lnk', 'lnk/x', 'a/../..', 'dir/../..', 'dir/sub/../../..', './../x', 'x\0y', '//etc', 'bin/../../x', 'lnk/..'),
  hostileName,
);
export const typeFlag = fc.oneof({ weight: 6, arbitrary: fc.constantFrom('0', '0', '0', '\0', '5', '2', '1') }, { weight: 1, arbitrary: fc.constantFrom('3', '4', '6', '7', 'g', 'K', 'S', 'V', 'D', 'M', 'N', 'A', 'z', '9') });
const paxRec = fc.oneof(
  fc.tuple(fc.constantFrom('path', 'linkpath'), hostileName),
  fc.tuple(fc.constant('size'), fc.constantFrom('0', '5', '511', '512', '513', '-1', '-512', 'abc', '', '1e3', '0x10', '99999999999999999999', '9007199254740993', ' 7', '1.5', 'NaN', 'Infinity')),
  fc.tuple(fc.constantFrom('mtime', 'uid', 'gid', 'uname', 'SCHILY.xattr.security.ima', 'comment', 'hdrcharset'), fc.string({ maxLength: 20 })),
);
const sizeField = fc.oneof(
  { weight: 8, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 4096 }) },
  { weight: 1, arbitrary: fc.constantFrom<string | number>('b256:0', 'b256:5', 'b256:9007199254740993', 'b256:18446744073709551615', 'b256:-1', '99999999999', '77777777777\0', '', '       ', 'garbage', '-1', '0x10', '1 2', 8 ** 11 - 1) },
);

export const rawEntry: fc.Arbitrary<RawEntry> = fc
  .record({
    name: hostileName,
    type: typeFlag,
    linkname: hostileLink,
    content: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('', 'hello\n', '#!/bin/sh\necho hi\n').map((s) => Buffer.from(s)) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 1200 }).map((b) => Buffer.from(b)) }),
    size: sizeField,
    pax: fc.option(fc.array(paxRec, { minLength: 1, maxLength: 3 }), { nil: undefined, freq: 4 }),
    gnuLong: fc.constantFrom(false, false, false, false, true),
    badChecksum: fc.constantFrom(false, false, false, false, false, false, false, false, false, true),
    ustar: fc.constantFrom(true, true, true, false),
  })
  .map((e) => Object.freeze({ ...e, content: e.type === '0' || e.type === '\0' ? e.content : Buffer.alloc(0) }) as RawEntry);

/** Entries that make sense together: dirs, files, symlinks and links that refer to each other, plus hostile ones. */
export const entryList = fc.array(rawEntry, { minLength: 0, maxLength: 12 });
