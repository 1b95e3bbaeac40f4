import { connect, type ClientHttp2Session } from 'node:http2';
import { connect as netConnect } from 'node:net';

// Unary, server- and client-streaming gRPC calls over one HTTP/2 connection to a unix
// socket (node:http2; a gRPC message is a 5-byte prefix and protobuf bytes,
// the status comes in the trailers). containerd's metadata calls this way
// take a millisecond where a `ctr` process took 50–300 ms to start and dial.

export const Status = { DeadlineExceeded: 4, NotFound: 5, AlreadyExists: 6, Unavailable: 14 } as const;

export class GrpcError extends Error {
  // code -1: the connection itself failed (no socket, refused, reset)
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

// a call that hangs this long is treated as an unreachable daemon
const DEADLINE_MS = 30_000;

export class GrpcClient {
  private session?: ClientHttp2Session;
  private inFlight = 0;

  constructor(readonly sock: string) {}

  /** All response messages of one call (one for a unary call). */
  call(path: string, request: Buffer, headers: Record<string, string> = {}): Promise<Buffer[]> {
    const s = this.stream(path, headers);
    s.end(frame(request));
    return s.done;
  }

  /**
   * A call whose request is several messages (client or bidirectional
   * streaming): `write` takes whole gRPC frames (see `frame`) and resolves
   * when the buffer may be reused; `done` gives every response message once
   * the server has sent its status.
   */
  stream(path: string, headers: Record<string, string> = {}): GrpcStream {
    const session = this.open();
    this.inFlight++;
    session.ref(); // an idle connection keeps no process alive, a call does
    const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': `${DEADLINE_MS}m`, ...headers });
    const chunks: Buffer[] = [];
    const wanted: Array<{ n: number; resolve: (m: Buffer[]) => void }> = [];
    const wake = (all = false) => {
      if (!wanted.length) return;
      let got: Buffer[];
      try {
        got = frames(Buffer.concat(chunks), true);
      } catch {
        got = [];
      }
      for (const w of [...wanted]) {
        if (all || got.length >= w.n) {
          wanted.splice(wanted.indexOf(w), 1);
          w.resolve(got);
        }
      }
    };
    const done = new Promise<Buffer[]>((resolve, reject) => {
      let status: string | undefined;
      let message = '';
      const onHeaders = (h: Record<string, unknown>) => {
        if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
        if (h['grpc-message'] !== undefined) message = decodeURIComponent(String(h['grpc-message']));
      };
      req.on('response', onHeaders);
      req.on('trailers', onHeaders);
      req.on('data', (d: Buffer) => {
        chunks.push(d);
        wake();
      });
      req.setTimeout(DEADLINE_MS, () => req.close());
      req.on('error', (e: Error) => reject(new GrpcError(-1, e.message)));
      req.on('close', () => {
        if (status === undefined) return reject(new GrpcError(-1, `${path}: the connection closed before a gRPC status`));
        if (status !== '0') return reject(new GrpcError(Number(status), message || `${path}: gRPC status ${status}`));
        try {
          resolve(frames(Buffer.concat(chunks)));
        } catch (e) {
          reject(new GrpcError(-1, `${path}: ${(e as Error).message}`));
        }
      });
    }).finally(() => {
      if (--this.inFlight === 0) session.unref();
    });
    done.catch(() => {}); // the caller awaits it; a write failing first must not leave it unhandled
    // a stream the server already ended takes no more: the status in `done`
    // says why, and writes still waiting for their callback are let go
    const waiting = new Set<() => void>();
    req.once('close', () => {
      wake(true);
      for (const w of waiting) w();
      waiting.clear();
    });
    const closed = () => req.closed || req.destroyed || req.writableEnded;
    return {
      write: (f: Buffer) =>
        closed()
          ? Promise.resolve()
          : new Promise<void>((resolve) => {
              const go = () => {
                waiting.delete(go);
                resolve();
              };
              waiting.add(go);
              req.write(f, go); // an error surfaces in `done`
            }),
      received: () => frames(Buffer.concat(chunks), true),
      receivedAtLeast: (n: number) =>
        new Promise<Buffer[]>((resolve) => {
          wanted.push({ n, resolve });
          wake(req.closed || req.destroyed);
        }),
      end: (f?: Buffer) => {
        if (!closed()) req.end(f);
      },
      cancel: () => req.close(8 /* NGHTTP2_CANCEL */),
      done,
    };
  }

  close(): void {
    this.session?.close();
    this.session = undefined;
  }

  private open(): ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const s = connect('http://localhost', { createConnection: () => netConnect(this.sock) });
    s.on('error', () => {}); // each call sees the failure on its own stream
    s.on('close', () => {
      if (this.session === s) this.session = undefined;
    });
    s.on('goaway', () => {
      if (this.session === s) this.session = undefined;
    });
    s.unref();
    this.session = s;
    return s;
  }
}

export interface GrpcStream {
  write(frame: Buffer): Promise<void>;
  end(frame?: Buffer): void;
  received(): Buffer[]; // the whole response messages so far, also after a failed status
  receivedAtLeast(n: number): Promise<Buffer[]>; // or fewer, once the stream closed
  cancel(): void;
  done: Promise<Buffer[]>;
}

/** A gRPC message: 5-byte prefix (uncompressed, length) and the bytes. */
export function frame(message: Buffer): Buffer {
  const f = Buffer.alloc(5 + message.length);
  f.writeUInt32BE(message.length, 1);
  message.copy(f, 5);
  return f;
}

function frames(body: Buffer, partial = false): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; ) {
    if (partial && (body.length - i < 5 || i + 5 + body.readUInt32BE(i + 1) > body.length)) break;
    if (body.length - i < 5) throw new Error('truncated gRPC frame');
    if (body[i] !== 0) throw new Error('compressed gRPC frame, none was asked for');
    const len = body.readUInt32BE(i + 1);
    if (i + 5 + len > body.length) throw new Error('truncated gRPC message');
    out.push(body.subarray(i + 5, i + 5 + len));
    i += 5 + len;
  }
  return out;
}
