// make run: build what is missing, then boot the node in QEMU with its bus
// on 127.0.0.1:4222 and the host folder <state>/images served to the node as
// http://10.0.2.100/ (QEMU guestfwd to a small file server here). The console
// scrolls by; Ctrl-C powers the node off.
//
//   node --import tsx iso/run.ts        SEALKIT_BUS_PORT=14222 to move the bus
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, createServer as createTcpServer } from 'node:net';
import { join, normalize, relative, resolve } from 'node:path';
import { stateDir } from '../services/lib/config.ts';
import { build, isStale, repoRoot } from './build.ts';
import { ensureNodeKeys } from './keys.ts';
import { bootVm } from './vm.ts';

// Files under `root`, read-only: GET and HEAD, no listings, nothing outside.
export function fileServer(root: string, log: (line: string) => void): Server {
  return createServer(async (req, res) => {
    const path = decodeURIComponent((req.url ?? '/').split('?')[0]);
    const file = resolve(root, normalize(path).replace(/^\/+/, ''));
    const inside = relative(root, file);
    const s = inside && !inside.startsWith('..') ? await stat(file).catch(() => undefined) : undefined;
    if ((req.method !== 'GET' && req.method !== 'HEAD') || !s?.isFile()) {
      res.writeHead(req.method === 'GET' || req.method === 'HEAD' ? 404 : 405).end();
      log(`http: ${req.method} ${path} -> ${res.statusCode}`);
      return;
    }
    res.writeHead(200, { 'content-length': s.size, 'content-type': 'application/octet-stream' });
    log(`http: ${req.method} ${path} -> 200 (${s.size} bytes)`);
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const s = createTcpServer();
    s.once('error', () => done(false));
    s.listen(port, '127.0.0.1', () => s.close(() => done(true)));
  });
}

async function main(): Promise<void> {
  const state = stateDir();
  const out = join(repoRoot, 'build', 'iso');
  const keys = await ensureNodeKeys(state);
  for (const f of keys.created) console.log(`run: created ${f}`);
  if (isStale(out, repoRoot, state)) await build({ out, state });
  else console.log(`run: ${join(out, 'sealkit.iso')} is up to date`);

  const busPort = Number(process.env.SEALKIT_BUS_PORT ?? 4222);
  if (!(await portFree(busPort))) {
    throw new Error(`127.0.0.1:${busPort} is in use (a "make dev" bus?); stop it or set SEALKIT_BUS_PORT`);
  }
  const images = join(state, 'images');
  await mkdir(images, { recursive: true });
  const http = fileServer(images, (l) => console.log(l));
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const httpPort = (http.address() as AddressInfo).port;

  const dir = join(repoRoot, 'build', 'run');
  await mkdir(dir, { recursive: true });
  const vm = await bootVm({ iso: join(out, 'sealkit.iso'), busPort, httpPort, dir, stdio: true });
  const bin = relative(process.cwd(), join(repoRoot, 'bin', 'sealkit')) || 'bin/sealkit';
  const env = process.env.SEALKIT_STATE ? `SEALKIT_STATE=${state} ` : '';
  console.log(`
run: the node is booting in QEMU (pid ${vm.pid}); console below, Ctrl-C powers it off
  bus        nats://127.0.0.1:${busPort}   (anonymous clients get the read-only monitor user)
  images     ${images}/NAME  ->  http://10.0.2.100/NAME inside the node
  watch      ${env}${bin} watch 'audit.*'          or: nats sub -s nats://127.0.0.1:${busPort} 'audit.*'
  status     ${env}${bin} status
  push       ${env}${bin} policy sign policy.yaml --key ${join(state, 'keys', 'admin.key')}
             ${env}${bin} policy push policy.yaml
  logs       the node keeps each service's log in /var/log/<service>.log
`);

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\nrun: ${why}; powering the node off`);
    const how = await vm.powerOff(30_000);
    http.close();
    console.log(`run: QEMU stopped (${how})`);
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('interrupted'));
  process.on('SIGTERM', () => void stop('terminated'));

  const ms = await vm.waitForBus(15 * 60_000).catch((err: Error) => {
    console.error(`run: ${err.message.split('\n')[0]}`);
    return undefined;
  });
  if (ms !== undefined) console.log(`\nrun: bus answering on 127.0.0.1:${busPort} ${(ms / 1000).toFixed(1)} s after QEMU started\n`);
  await vm.exited;
  if (!stopping) {
    http.close();
    console.log('run: the node powered off');
    process.exit(0);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (!existsSync('/usr/bin/qemu-system-x86_64')) console.error('run: qemu-system-x86_64 is missing (apt-get install qemu-system-x86)');
  main().catch((err: Error) => {
    console.error(`run: ${err.message}`);
    process.exit(1);
  });
}
