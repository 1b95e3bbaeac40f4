import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { SealkitError } from '../lib/errors.ts';
import { PlainGet, type BodyFn } from './plain-http.ts';

// One download under the image's rules: scheme, redirects (count, no
// https→http, only allowed hosts), size cap (stop reading past it), a total
// deadline and a stall timer. Bytes go to a sink while being hashed; nothing
// here looks at what they mean.

export interface Rules {
  what: string; // names the image in messages
  allowHttp: boolean;
  redirects: { max: number; hosts: string[] };
  maxBytes: number; // stop reading past this
  expectedSize?: number; // the size the policy pins, if any
  deadline: number; // Date.now() value by which the download must be done
  stallMs: number; // no bytes for this long: give up
  accept?: string;
  signal?: AbortSignal; // aborts the request (another download of the same image failed)
  onBytes?: (bytes: number, total: number | undefined) => void;
}

export interface Sink {
  /** A promise only when the caller must wait before the next chunk (backpressure). */
  write(chunk: Buffer): Promise<void> | void;
  /** write() copies the chunk: the caller may reuse its memory afterwards */
  readonly copies?: boolean;
}

// One response, from Node's http(s) client or, for plain http, PlainGet.
interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  discard(): void;
  destroy(err: Error): void;
  body(each: BodyFn): Promise<void>;
}

export interface Downloaded {
  sha256: string;
  size: number;
  url: string; // after redirects
  contentType?: string;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export async function download(source: string, sink: Sink, r: Rules): Promise<Downloaded> {
  const origin = new URL(source);
  let url = origin;
  for (let hop = 0; ; hop++) {
    checkScheme(url, r, source);
    if (url.protocol === 'file:') return readFile(url, sink, r);
    const res = url.protocol === 'http:' ? await plainGet(url, r) : await get(url, r);
    const status = res.status;
    if (REDIRECTS.has(status)) {
      res.discard();
      const location = typeof res.headers.location === 'string' ? res.headers.location : undefined;
      if (!location) throw new SealkitError('SEALKIT_FETCH_FAILED', `${r.what}: ${url.href} answered ${status} without a Location header`);
      const next = new URL(location, url);
      checkRedirect(url, next, origin, hop, r);
      url = next;
      continue;
    }
    if (status !== 200) {
      res.discard();
      throw new SealkitError('SEALKIT_FETCH_FAILED', `${r.what}: HTTP ${status} from ${url.href}; check the source URL`, { url: url.href, status });
    }
    return readBody(res, url, sink, r);
  }
}

function checkScheme(url: URL, r: Rules, source: string): void {
  if (url.protocol === 'https:' || url.protocol === 'file:') return;
  if (url.protocol === 'http:' && r.allowHttp) return;
  const why = url.protocol === 'http:' ? 'plain http is not allowed for this image (set allowHttp: true to permit it)' : `scheme ${url.protocol} is not supported`;
  throw new SealkitError('SEALKIT_SOURCE_INVALID', `${r.what}: cannot fetch ${url.href} (source ${source}): ${why}`, { url: url.href });
}

function checkRedirect(from: URL, to: URL, origin: URL, hop: number, r: Rules): void {
  const refuse = (why: string) => {
    throw new SealkitError('SEALKIT_REDIRECT_REFUSED', `${r.what}: redirect from ${from.href} to ${to.href} refused: ${why}; the download was discarded`, { from: from.href, to: to.href });
  };
  if (hop + 1 > r.redirects.max) refuse(`more than ${r.redirects.max} redirects (images[].redirects.max)`);
  if (to.protocol !== 'https:' && to.protocol !== 'http:') refuse(`scheme ${to.protocol} is not allowed in a redirect`);
  if (from.protocol === 'https:' && to.protocol === 'http:') refuse('it downgrades https to http');
  if (to.protocol === 'http:' && !r.allowHttp) refuse('plain http is not allowed for this image');
  const allowed = to.host === origin.host || r.redirects.hosts.some((h) => h === to.host || h === to.hostname);
  if (!allowed) refuse(`host ${to.host} is neither the source host ${origin.host} nor listed in images[].redirects.hosts`);
}

// Stall and deadline timers around one request; when one fires, the request
// is destroyed and the recorded reason wins over the socket error.
function timers(r: Rules, url: URL, destroy: (err: SealkitError) => void) {
  let failure: SealkitError | undefined;
  const fail = (err: SealkitError) => {
    failure ??= err;
    destroy(err);
  };
  const total = setTimeout(
    () => fail(new SealkitError('SEALKIT_FETCH_TIMEOUT', `${r.what}: ${url.href} did not finish in time (limits.fetchTimeout); the download was discarded`, { url: url.href })),
    Math.max(0, r.deadline - Date.now()),
  );
  const stall = setTimeout(
    () => fail(new SealkitError('SEALKIT_FETCH_TIMEOUT', `${r.what}: ${url.href} sent nothing for ${r.stallMs} ms (limits.stallTimeout); the download was discarded`, { url: url.href })),
    r.stallMs,
  );
  return {
    touch: () => void stall.refresh(),
    get failure() {
      return failure;
    },
    clear() {
      clearTimeout(total);
      clearTimeout(stall);
    },
  };
}

function requestHeaders(r: Rules): Record<string, string> {
  return { 'user-agent': 'sealkit-fetcher', ...(r.accept ? { accept: r.accept } : {}) };
}

function fetchFailed(r: Rules, url: URL, err: Error): SealkitError {
  return new SealkitError('SEALKIT_FETCH_FAILED', `${r.what}: cannot fetch ${url.href}: ${err.message}`, { url: url.href }, { cause: err });
}

function get(url: URL, r: Rules): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.get(url, { headers: requestHeaders(r), signal: r.signal });
    const t = timers(r, url, (err) => req.destroy(err));
    req.on('response', (res) => {
      t.clear();
      resolve(nodeReply(res));
    });
    req.on('error', (err) => {
      t.clear();
      reject(t.failure ?? fetchFailed(r, url, err));
    });
  });
}

function nodeReply(res: http.IncomingMessage): Reply {
  return {
    status: res.statusCode ?? 0,
    headers: res.headers,
    discard: () => res.destroy(),
    destroy: (err) => res.destroy(err),
    // the body flows into a writable with room for a few MiB: consuming it
    // chunk by chunk (for await) pauses and resumes the socket every 16 KiB
    body: (each) =>
      pipeline(
        res,
        new Writable({
          highWaterMark: 4 << 20,
          write(chunk: Buffer, _enc, done) {
            try {
              const wait = each(chunk);
              if (wait) wait.then(() => done(), done);
              else done();
            } catch (err) {
              done(err as Error);
            }
          },
        }),
      ),
  };
}

async function plainGet(url: URL, r: Rules): Promise<Reply> {
  const p = new PlainGet(url, requestHeaders(r));
  // cancelled with the other downloads of an image when one of them fails
  const abort = () => p.destroy(new Error('cancelled: another download of this image failed'));
  if (r.signal?.aborted) abort();
  r.signal?.addEventListener('abort', abort, { once: true });
  const off = () => r.signal?.removeEventListener('abort', abort);
  const t = timers(r, url, (err) => p.destroy(err));
  try {
    const head = await p.head;
    return {
      status: head.status,
      headers: head.headers,
      discard: () => (off(), p.destroy(new Error('discarded'))),
      destroy: (err) => (off(), p.destroy(err)),
      body: (each) => p.body(each).finally(off),
    };
  } catch (err) {
    off();
    throw t.failure ?? fetchFailed(r, url, err as Error);
  } finally {
    t.clear();
  }
}

function cap(r: Rules): number {
  return Math.min(r.maxBytes, r.expectedSize ?? Number.POSITIVE_INFINITY);
}

function tooLarge(r: Rules, url: URL, detail: string): SealkitError {
  const limit = cap(r);
  const which = r.expectedSize !== undefined && r.expectedSize <= r.maxBytes ? 'the pinned size' : 'the size limit';
  return new SealkitError('SEALKIT_SIZE_LIMIT', `${r.what}: ${url.href} ${detail}, more than ${which} of ${limit} bytes; the download was discarded`, { url: url.href, limit });
}

async function readBody(res: Reply, url: URL, sink: Sink, r: Rules): Promise<Downloaded> {
  const header = (name: string) => {
    const v = res.headers[name];
    return Array.isArray(v) ? v.join(', ') : v;
  };
  const declared = header('content-length') !== undefined ? Number(header('content-length')) : undefined;
  if (declared !== undefined && declared > cap(r)) {
    res.discard();
    throw tooLarge(r, url, `announces ${declared} bytes`);
  }
  const t = timers(r, url, (err) => res.destroy(err));
  const hash = createHash('sha256');
  let size = 0;
  try {
    await res.body((chunk) => {
      t.touch();
      if (size + chunk.length > cap(r)) throw tooLarge(r, url, 'sent');
      hash.update(chunk);
      size += chunk.length;
      r.onBytes?.(size, declared ?? r.expectedSize);
      return sink.write(sink.copies ? chunk : Buffer.from(chunk));
    });
  } catch (err) {
    res.discard();
    if (t.failure) throw t.failure;
    if (err instanceof SealkitError) throw err;
    throw new SealkitError('SEALKIT_FETCH_FAILED', `${r.what}: the connection to ${url.href} broke after ${size}${declared !== undefined ? ` of ${declared}` : ''} bytes (${(err as Error).message}); the download was discarded`, { url: url.href, bytes: size }, { cause: err });
  } finally {
    t.clear();
  }
  if (t.failure) throw t.failure;
  if (declared !== undefined && size !== declared) {
    throw new SealkitError('SEALKIT_FETCH_FAILED', `${r.what}: ${url.href} ended after ${size} of ${declared} bytes; the download was discarded`, { url: url.href, bytes: size });
  }
  return { sha256: hash.digest('hex'), size, url: url.href, contentType: header('content-type') };
}

async function readFile(url: URL, sink: Sink, r: Rules): Promise<Downloaded> {
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of createReadStream(fileURLToPath(url), { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      if (size + chunk.length > cap(r)) throw tooLarge(r, url, 'holds');
      if (Date.now() > r.deadline) throw new SealkitError('SEALKIT_FETCH_TIMEOUT', `${r.what}: reading ${url.href} did not finish in time (limits.fetchTimeout)`);
      hash.update(chunk);
      size += chunk.length;
      await sink.write(chunk);
      r.onBytes?.(size, r.expectedSize);
    }
  } catch (err) {
    if (err instanceof SealkitError) throw err;
    throw new SealkitError('SEALKIT_FETCH_FAILED', `${r.what}: cannot read ${url.href}: ${(err as Error).message}`, { url: url.href }, { cause: err });
  }
  return { sha256: hash.digest('hex'), size, url: url.href };
}

/** A sink that keeps the bytes in memory (small things: signature files, manifests). */
export function memorySink(): Sink & { bytes(): Buffer } {
  const chunks: Buffer[] = [];
  return {
    write(c) {
      chunks.push(c);
    },
    bytes: () => Buffer.concat(chunks),
  };
}
