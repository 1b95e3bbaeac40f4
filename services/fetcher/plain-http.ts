import net from 'node:net';

// A GET over plain http that reads the body into one buffer used again for
// every read (net's onread). Node's http client gives every 64 KiB read
// fresh memory; for a large download the page faults on it cost five times
// the CPU of the reads themselves, and the download ran at a third of curl's
// rate. Only what a download needs: status, a few headers, a body framed by
// Content-Length, chunked coding or the end of the connection (RFC 9112 §6).

const READ_BUFFER = 1 << 20;
const MAX_HEAD = 64 * 1024; // status line and headers
const MAX_CHUNK_LINE = 4096;

export interface Head {
  status: number;
  headers: Record<string, string>; // lower-case names
}

/** Receives each piece of the body; the buffer is valid only during the call. */
export type BodyFn = (view: Buffer) => Promise<void> | void;

type Framing = { kind: 'length'; left: number } | { kind: 'chunked' } | { kind: 'close' };

export class PlainGet {
  readonly head: Promise<Head>;
  private readonly socket: net.Socket;
  private headBytes: Buffer = Buffer.alloc(0);
  private gotHead = false;
  private early?: Buffer; // body bytes that came with the head, before body() was called
  private framing?: Framing;
  private chunk = new ChunkedDecoder();
  private each?: BodyFn;
  private finish?: { resolve: () => void; reject: (err: Error) => void };
  private failure?: Error;
  private done = false;

  constructor(url: URL, headers: Record<string, string>) {
    let headDone!: { resolve: (h: Head) => void; reject: (e: Error) => void };
    this.head = new Promise<Head>((resolve, reject) => (headDone = { resolve, reject }));
    const buffer = Buffer.allocUnsafe(READ_BUFFER);
    this.socket = net.connect({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || 80),
      onread: {
        buffer,
        callback: (n: number, buf: Uint8Array) => {
          try {
            return this.onRead(Buffer.from(buf.buffer, buf.byteOffset, n), headDone.resolve);
          } catch (err) {
            this.destroy(err as Error);
            return false;
          }
        },
      },
    });
    const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), 'Connection: close', '', ''];
    this.socket.write(lines.join('\r\n'));
    this.socket.on('error', (err) => this.destroy(err));
    this.socket.on('end', () => this.onEnd());
    this.socket.on('close', () => this.destroy(new Error('the connection closed')));
    this.head.catch(() => {});
    this.fail = (err) => headDone.reject(err);
  }

  private fail: (err: Error) => void;

  /** Stream the body to `each`; resolves at its end. */
  body(each: BodyFn): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.finish = { resolve, reject };
      this.each = each;
      const early = this.early;
      this.early = undefined;
      try {
        const wait = early ? this.feed(early) : undefined;
        if (wait) wait.then(() => this.resumeAfter(), (err: Error) => this.destroy(err));
        else this.resumeAfter();
      } catch (err) {
        this.destroy(err as Error);
      }
    });
  }

  private resumeAfter(): void {
    if (this.done) this.end();
    else this.socket.resume();
  }

  destroy(err: Error): void {
    if (this.failure || (this.done && !this.finish)) {
      this.socket.destroy();
      return;
    }
    if (this.done) return;
    this.failure = err;
    this.socket.destroy();
    this.fail(err);
    this.finish?.reject(err);
  }

  private end(): void {
    this.done = true;
    this.socket.destroy();
    this.finish?.resolve();
  }

  // false pauses the socket: the buffer is not read into again until resume()
  private onRead(view: Buffer, headReady: (h: Head) => void): boolean {
    if (this.failure || this.done) return false;
    if (!this.gotHead) {
      this.headBytes = Buffer.concat([this.headBytes, view]);
      const at = this.headBytes.indexOf('\r\n\r\n');
      if (at < 0) {
        if (this.headBytes.length > MAX_HEAD) throw new Error(`the response head is larger than ${MAX_HEAD} bytes`);
        return true;
      }
      const head = parseHead(this.headBytes.subarray(0, at).toString('latin1'));
      const rest = this.headBytes.subarray(at + 4);
      if (head.status >= 100 && head.status < 200) {
        this.headBytes = Buffer.alloc(0);
        return rest.length ? this.onRead(Buffer.from(rest), headReady) : true;
      }
      this.gotHead = true;
      this.framing = framing(head);
      this.early = rest.length ? Buffer.from(rest) : undefined;
      this.headBytes = Buffer.alloc(0);
      if (this.framing.kind === 'length' && this.framing.left === 0) this.done = true;
      headReady(head);
      return false; // until body() is called
    }
    const wait = this.feed(view);
    if (this.done) {
      if (!wait) this.end();
      else wait.then(() => this.end(), (err: Error) => this.destroy(err));
      return false;
    }
    if (!wait) return true;
    wait.then(() => this.resumeAfter(), (err: Error) => this.destroy(err));
    return false;
  }

  private onEnd(): void {
    if (this.done || this.failure) return;
    if (this.gotHead && this.framing?.kind === 'close') {
      this.done = true;
      if (this.each && !this.early) this.end();
      return;
    }
    this.destroy(new Error(this.gotHead ? 'the connection closed before the end of the body' : 'the connection closed before a response'));
  }

  // Hands the body bytes of `view` to `each`; a promise when it must be awaited.
  private feed(view: Buffer): Promise<void> | void {
    const f = this.framing!;
    if (f.kind === 'close') return this.each!(view);
    if (f.kind === 'length') {
      const take = Math.min(view.length, f.left);
      f.left -= take;
      if (f.left === 0) this.done = true;
      return take ? this.each!(view.subarray(0, take)) : undefined;
    }
    return this.feedChunked(view, 0);
  }

  private feedChunked(view: Buffer, from: number): Promise<void> | void {
    let at = from;
    while (at < view.length && !this.chunk.finished) {
      const piece = this.chunk.next(view, at);
      at = piece.next;
      if (piece.data) {
        const wait = this.each!(piece.data);
        if (wait) return wait.then(() => this.feedChunked(view, at));
      }
    }
    if (this.chunk.finished) this.done = true;
  }
}

function parseHead(text: string): Head {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0]);
  if (!m) throw new Error(`not an HTTP/1.1 response: "${lines[0].slice(0, 80)}"`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0 || /^[ \t]/.test(line)) throw new Error(`malformed header line "${line.slice(0, 80)}"`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'content-length' && headers[name] !== undefined && headers[name] !== value) throw new Error('conflicting Content-Length headers');
    headers[name] = headers[name] === undefined || name === 'content-length' ? value : `${headers[name]}, ${value}`;
  }
  return { status: Number(m[1]), headers };
}

// RFC 9112 §6.3: chunked wins over Content-Length; other codings are refused.
function framing(head: Head): Framing {
  if (head.status === 204 || head.status === 304) return { kind: 'length', left: 0 };
  const te = head.headers['transfer-encoding'];
  if (te !== undefined) {
    if (te.toLowerCase().split(',').map((s) => s.trim()).at(-1) !== 'chunked') throw new Error(`unsupported Transfer-Encoding "${te}"`);
    return { kind: 'chunked' };
  }
  const cl = head.headers['content-length'];
  if (cl !== undefined) {
    if (!/^\d{1,15}$/.test(cl)) throw new Error(`invalid Content-Length "${cl}"`);
    return { kind: 'length', left: Number(cl) };
  }
  return { kind: 'close' };
}

// chunk-size [;ext] CRLF, data, CRLF … 0 CRLF, trailers, CRLF
class ChunkedDecoder {
  private state: 'size' | 'data' | 'data-end' | 'trailer' = 'size';
  private line = '';
  private left = 0;
  finished = false;

  next(view: Buffer, at: number): { next: number; data?: Buffer } {
    if (this.state === 'data') {
      const take = Math.min(this.left, view.length - at);
      this.left -= take;
      if (this.left === 0) this.state = 'data-end';
      return { next: at + take, data: view.subarray(at, at + take) };
    }
    const nl = view.indexOf(10, at);
    const end = nl < 0 ? view.length : nl + 1;
    this.line += view.toString('latin1', at, end);
    if (this.line.length > MAX_CHUNK_LINE) throw new Error('a chunk header line is too long');
    if (nl < 0) return { next: end };
    const line = this.line.replace(/\r?\n$/, '');
    this.line = '';
    if (this.state === 'data-end') {
      if (line !== '') throw new Error('a chunk does not end with CRLF');
      this.state = 'size';
    } else if (this.state === 'size') {
      const size = line.split(';')[0].trim();
      if (!/^[0-9a-fA-F]{1,13}$/.test(size)) throw new Error(`invalid chunk size "${size.slice(0, 20)}"`);
      this.left = parseInt(size, 16);
      this.state = this.left === 0 ? 'trailer' : 'data';
    } else if (line === '') {
      this.finished = true;
    }
    return { next: end };
  }
}
