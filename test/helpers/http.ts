import http from 'node:http';
import https from 'node:https';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo, Socket } from 'node:net';

// A real HTTP(S) server on 127.0.0.1 that misbehaves on request: serve a
// body, or cut it short, drop the connection, stall, lie about the length,
// redirect anywhere. Tests point the fetcher at it; nothing is mocked.

export type Behaviour =
  | { body: Buffer | string; contentType?: string }
  | { body: Buffer; truncateAt: number } // chunked, ends cleanly early: no length to betray it
  | { body: Buffer; dropAt: number } // announces the full length, then destroys the socket
  | { body: Buffer; stallAt: number } // sends part, then nothing, connection kept open
  | { body: Buffer; chunked: true } // no Content-Length: the size is known only by reading
  | { redirect: string; status?: number }
  | { status: number };

export interface TestServer {
  origin: string; // http://127.0.0.1:PORT
  url(path: string): string;
  route(path: string, b: Behaviour): string; // returns the full URL
  hits(path: string): number;
  close(): Promise<void>;
}

// headersTimeoutMs: drop connections that send no complete request in that
// time (Node answers 408), as a strict server would.
export async function startHttp(opts: { tls?: { key: string; cert: string }; headersTimeoutMs?: number } = {}): Promise<TestServer> {
  const routes = new Map<string, Behaviour>();
  const counts = new Map<string, number>();
  const sockets = new Set<Socket>();
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const b = routes.get(path);
    if (!b) {
      res.writeHead(404).end('not found');
      return;
    }
    if ('redirect' in b) {
      res.writeHead(b.status ?? 302, { location: b.redirect }).end();
      return;
    }
    if (!('body' in b)) {
      res.writeHead(b.status).end();
      return;
    }
    const body = Buffer.isBuffer(b.body) ? b.body : Buffer.from(b.body);
    if ('truncateAt' in b) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(body.subarray(0, b.truncateAt));
    } else if ('dropAt' in b) {
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, b.dropAt), () => setTimeout(() => req.socket.destroy(), 20));
    } else if ('stallAt' in b) {
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, b.stallAt)); // and never more
    } else if ('chunked' in b) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      // chunks of 1 MiB: their boundaries fall anywhere in the client's reads
      for (let at = 0; at < body.length; at += 1 << 20) res.write(body.subarray(at, at + (1 << 20)));
      res.end();
    } else {
      res.writeHead(200, { 'content-length': body.length, 'content-type': ('contentType' in b && b.contentType) || 'application/octet-stream' });
      res.end(body);
    }
  };
  const limits = opts.headersTimeoutMs
    ? { headersTimeout: opts.headersTimeoutMs, requestTimeout: opts.headersTimeoutMs, connectionsCheckingInterval: Math.min(1000, opts.headersTimeoutMs) }
    : {};
  const server = opts.tls ? https.createServer({ key: opts.tls.key, cert: opts.tls.cert, ...limits }, handler) : http.createServer(limits, handler);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const origin = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  return {
    origin,
    url: (path) => `${origin}${path}`,
    route(path, b) {
      routes.set(path, b);
      return `${origin}${path}`;
    },
    hits: (path) => counts.get(path) ?? 0,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// A self-signed certificate for 127.0.0.1 made by openssl; the child that
// trusts it gets NODE_EXTRA_CA_CERTS=certPath.
export function selfSignedCert(): { key: string; cert: string; certPath: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'sealkit-tls-'));
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ed25519', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return {
    key: readFileSync(join(dir, 'key.pem'), 'utf8'),
    cert: readFileSync(join(dir, 'cert.pem'), 'utf8'),
    certPath: join(dir, 'cert.pem'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
