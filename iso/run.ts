// make run: build what is missing, then boot the node in QEMU with its bus
// on 127.0.0.1:4222 and the host folder <state>/images served to the node as
// http://10.0.2.100/ (QEMU guestfwd to a small file server here). The console
// scrolls by; Ctrl-C powers the node off.
//
//   node --import tsx iso/run.ts        SEALKIT_BUS_PORT=14222 moves the bus,
//                                       SEALKIT_STATE=DIR the state
//   ... iso/run.ts --firmware uefi      (make run FIRMWARE=uefi): boot the same
//                                       ISO under OVMF instead of SeaBIOS
//   ... iso/run.ts --media cdrom        (make run MEDIA=cdrom): the ISO attached
//                                       as a CD-ROM, not as a disk (a USB stick)
//   ... iso/run.ts --kernel 6.1         (make run KERNEL=6.1): built with that
//                                       kernel (default: the newest installed)
//   ... iso/run.ts --node n1 [--hub 127.0.0.1:7422] [--bundle DIR]
//                                       (make run NODE=n1 HUB=…): fleet node n1,
//                                       joining the hub on this host (make hub)
//                                       through a guestfwd to 10.0.2.100:7422
//
// The ISO bakes in the admin key and bus credentials of its state, so each
// state has its own: build/iso for ./state (what make iso builds), <state>/build
// for any other. Builds take a lock shared with make iso and the tests' ISO:
// they all compile into dist/.
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, createServer as createTcpServer } from 'node:net';
import { join, normalize, relative, resolve } from 'node:path';
import { stateDir } from '../services/lib/config.ts';
import { sha256File } from '../services/lib/digest.ts';
import { asSealkitError } from '../services/lib/errors.ts';
import { nodeHowto } from '../services/cli/howto.ts';
import { isHeld, lockFile, lockState, type HeldLock } from '../services/cli/lock.ts';
import { build, fleetIsoDir, fleetOptions, isStale, kernelVersion, repoRoot, type FleetOptions } from './build.ts';
import { fleetInputs, guestHub, readBundle, withHub } from './fleet.ts';
import { ensureNodeKeys } from './keys.ts';
import { bootVm, parseFirmware, parseMedia } from './vm.ts';

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

export const isoBuildLock = join(repoRoot, 'build', 'iso-build.lock');

export async function withIsoBuildLock<T>(fn: () => Promise<T>): Promise<T> {
  const lock = await lockFile(isoBuildLock, { wait: true });
  if (!isHeld(lock)) throw new Error(`${isoBuildLock}: not locked`);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}

export function isoDirFor(state: string, node?: string): string {
  if (process.env.SEALKIT_ISO_OUT) return resolve(process.env.SEALKIT_ISO_OUT);
  if (node) return state === join(repoRoot, 'state') ? fleetIsoDir(repoRoot, node) : join(state, `build-${node}`);
  return state === join(repoRoot, 'state') ? join(repoRoot, 'build', 'iso') : join(state, 'build');
}

// make run NODE=…: the node runs here, so the hub it dials is this host's
// (HUB, else the enrolment's first URL), which the guest reaches only as
// 10.0.2.100:7422; the image is built with that address.
export async function hubForRun(fleet: FleetOptions): Promise<{ options: FleetOptions; host: { host: string; port: number } }> {
  const url = new URL(fleet.hub?.[0] ?? (await readBundle(fleet.bundle, fleet.node)).config.hub[0]);
  const host = { host: url.hostname, port: Number(url.port || 7422) };
  return { options: { ...fleet, hub: [`nats-leaf://${guestHub.host}:${guestHub.port}`] }, host };
}

// Whether the ISO in `out` carries exactly this state's files (make iso with
// another SEALKIT_STATE writes build/iso too): the build manifest has the
// SHA-256 of each input it took from the state.
export async function builtFor(out: string, state: string, fleet?: FleetOptions, kernel = kernelVersion()): Promise<boolean> {
  let inputs: Array<{ path: string; sha256: string }>;
  let built: { node?: string } | undefined;
  let builtKernel: { version?: string } | undefined;
  try {
    ({ inputs, fleet: built, kernel: builtKernel } = JSON.parse(readFileSync(join(out, 'build-manifest.json'), 'utf8')) as { inputs: typeof inputs; fleet?: typeof built; kernel?: typeof builtKernel });
  } catch {
    return false;
  }
  if (builtKernel?.version !== kernel) return false;
  // a fleet node's image is that node's, enrolled as it is now, for that hub
  if (fleet?.node !== built?.node) return false;
  if (fleet && (await bundleChanged(inputs, fleet))) return false;
  const own = inputs.filter((i) => i.path.startsWith('state/'));
  for (const i of own) {
    const file = join(state, i.path.slice('state/'.length));
    if (!existsSync(file) || (await sha256File(file)).sha256 !== i.sha256) return false;
  }
  return own.length > 0;
}

async function bundleChanged(inputs: Array<{ path: string; sha256: string }>, fleet: FleetOptions): Promise<boolean> {
  const now = fleetInputs(withHub(await readBundle(fleet.bundle, fleet.node), fleet.hub));
  return now.some((f) => inputs.find((i) => i.path === f.path)?.sha256 !== f.sha256);
}

async function main(): Promise<void> {
  const state = stateDir();
  const args = process.argv.slice(2);
  const opt = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
  const firmware = parseFirmware(opt('--firmware'));
  const media = parseMedia(opt('--media'));
  const kernel = kernelVersion(opt('--kernel'));
  const asked = fleetOptions(opt('--node'), opt('--hub'), opt('--bundle'), state);
  const fleet = asked ? await hubForRun(asked) : undefined;
  const lock: HeldLock = await lockState(state);
  const busPort = Number(process.env.SEALKIT_BUS_PORT ?? 4222);
  if (!Number.isInteger(busPort) || busPort <= 0 || busPort > 65535) throw new Error(`SEALKIT_BUS_PORT="${process.env.SEALKIT_BUS_PORT}" is not a port number`);
  if (!(await portFree(busPort))) {
    throw new Error(`127.0.0.1:${busPort} is in use (a "make dev" bus?); stop it or set SEALKIT_BUS_PORT`);
  }
  const out = isoDirFor(state, fleet?.options.node);
  const keys = await ensureNodeKeys(state);
  for (const f of keys.created) console.log(`run: created ${f}`);
  await withIsoBuildLock(async () => {
    if (isStale(out, repoRoot, state) || !(await builtFor(out, state, fleet?.options, kernel))) await build({ out, state, fleet: fleet?.options, kernel });
    else console.log(`run: ${join(out, 'sealkit.iso')} is up to date`);
  });

  const images = join(state, 'images');
  await mkdir(images, { recursive: true });
  const http = fileServer(images, (l) => console.log(l));
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const httpPort = (http.address() as AddressInfo).port;

  const dir = join(state, 'run');
  await mkdir(dir, { recursive: true });
  const vm = await bootVm({ iso: join(out, 'sealkit.iso'), firmware, media, busPort, httpPort, hub: fleet?.host, dir, stdio: true });
  const url = `nats://127.0.0.1:${busPort}`;
  console.log(`
run: the node is booting in QEMU (pid ${vm.pid}) under ${firmware === 'uefi' ? 'UEFI (OVMF)' : 'BIOS (SeaBIOS)'} from the ISO as a ${media === 'disk' ? 'disk' : 'CD-ROM'}; console below, Ctrl-C powers it off
  bus      ${url}   (anonymous clients get the read-only monitor user)
  images   ${images}/NAME  ->  http://10.0.2.100/NAME inside the node${fleet ? `
  hub      ${fleet.host.host}:${fleet.host.port}  ->  nats-leaf://${guestHub.host}:${guestHub.port} inside node ${fleet.options.node}` : ''}
  console  ${vm.consoleLog}
in another terminal, from here:
${nodeHowto({ state, url })}
`);

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\nrun: ${why}; powering the node off`);
    const how = await vm.powerOff(30_000);
    http.close();
    await lock.release();
    console.log(`run: QEMU stopped (${how})`);
    process.exit(0);
  };
  // `make run | tee run.log`: Ctrl-C ends tee too, and every later write
  // here fails with EPIPE; the node must still be powered off, not left to
  // die with this process (what the console says is in its log file)
  for (const out of [process.stdout, process.stderr]) {
    out.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
  }
  process.on('SIGINT', () => void stop('interrupted'));
  process.on('SIGTERM', () => void stop('terminated'));
  process.on('SIGHUP', () => void stop('hung up'));

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
  main().catch((err: unknown) => {
    const e = asSealkitError(err);
    console.error(`run: ${e.message}${e.code !== 'SEALKIT_INTERNAL' ? ` [${e.code}]` : ''}`);
    process.exit(1);
  });
}
