// The few protobuf wire-format pieces containerd's metadata calls need:
// strings, bytes, bools, int64s and nested messages (maps are repeated
// key=1/value=2 messages). Decoding keeps every field as a list, in order.

export class ProtoWriter {
  private parts: Buffer[] = [];

  string(field: number, s: string | undefined): this {
    return s === undefined ? this : this.bytes(field, Buffer.from(s, 'utf8'));
  }

  bytes(field: number, b: Buffer): this {
    this.parts.push(varint((field << 3) | 2), varint(b.length), b);
    return this;
  }

  message(field: number, m: ProtoWriter): this {
    return this.bytes(field, m.finish());
  }

  uint(field: number, n: number | boolean): this {
    const v = Number(n);
    if (v) this.parts.push(varint(field << 3), varint(v));
    return this;
  }

  map(field: number, entries: Record<string, string>): this {
    for (const [k, v] of Object.entries(entries)) this.message(field, new ProtoWriter().string(1, k).string(2, v));
    return this;
  }

  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

function varint(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`cannot encode ${n} as a protobuf varint`);
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return Buffer.from(out);
}

export type Fields = Map<number, Array<number | Buffer>>;

export function decode(buf: Buffer): Fields {
  const out: Fields = new Map();
  let i = 0;
  const readVarint = (): number => {
    let n = 0;
    let mul = 1;
    for (;;) {
      if (i >= buf.length) throw new Error('truncated protobuf varint');
      const b = buf[i++];
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 0x80;
    }
  };
  while (i < buf.length) {
    const key = readVarint();
    const field = Math.floor(key / 8);
    let value: number | Buffer;
    switch (key & 7) {
      case 0:
        value = readVarint();
        break;
      case 1:
        value = buf.subarray(i, (i += 8));
        break;
      case 2: {
        const len = readVarint();
        value = buf.subarray(i, (i += len));
        break;
      }
      case 5:
        value = buf.subarray(i, (i += 4));
        break;
      default:
        throw new Error(`unsupported protobuf wire type ${key & 7}`);
    }
    if (i > buf.length) throw new Error('truncated protobuf field');
    const list = out.get(field);
    if (list) list.push(value);
    else out.set(field, [value]);
  }
  return out;
}

export const str = (f: Fields, n: number): string => {
  const v = f.get(n)?.at(-1);
  return Buffer.isBuffer(v) ? v.toString('utf8') : '';
};
export const num = (f: Fields, n: number): number => {
  const v = f.get(n)?.at(-1);
  return typeof v === 'number' ? v : 0;
};
export const msg = (f: Fields, n: number): Fields => {
  const v = f.get(n)?.at(-1);
  return decode(Buffer.isBuffer(v) ? v : Buffer.alloc(0));
};
export const msgs = (f: Fields, n: number): Fields[] => (f.get(n) ?? []).filter(Buffer.isBuffer).map(decode);
export const strMap = (f: Fields, n: number): Record<string, string> => Object.fromEntries(msgs(f, n).map((e) => [str(e, 1), str(e, 2)]));
