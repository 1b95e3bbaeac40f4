import { spawn } from 'node:child_process';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from '../services/lib/config.ts';
import { dockerfileDefaults } from '../iso/parts.ts';
import { startContainerd } from '../test/helpers/containerd.ts';
import { EventLog } from '../test/helpers/events.ts';
import { startNats } from '../test/helpers/nats.ts';
import { makeAdmin, policyYaml, pushPolicy } from '../test/helpers/policy.ts';
import { startService, type RunningService } from '../test/helpers/service.ts';
import { imageArchive, serveFiles } from './fixtures.ts';
import { fmt, GiB, median, MiB, rss, rssPeak, row, sleep, verdict, type BenchContext, type Row } from './measure.ts';

// Resident memory (VmRSS) of every service as its own process, started the
// way the tests and make dev start them (node --import tsx services/<name>/main.ts)
// against a real nats-server, containerd and a pushed policy: idle, then
// while one large image goes through fetch → import → label. The compiled
// services run as their pkg/<name>/Dockerfile runs them on the ISO (its node
// flags and ENV), beside a peer with the same flags: bare node importing
// nats.js and connected to the same server.

const G = 'memory';
const SERVICES = ['policy', 'fetcher', 'importer', 'ima', 'auditor', 'nodeinfo', 'runner'] as const;
const PEER_RATIO = 1.15;

export async function memory(ctx: BenchContext): Promise<Row[]> {
  const nats = await startNats();
  ctx.defer(() => nats.cleanup());
  const admin = await makeAdmin(nats.stateDir);
  const kmsg = join(ctx.tmp, 'kmsg');
  await writeFile(kmsg, '');
  const env: Record<string, string> = { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: admin.trustPath, SEALKIT_LOG_LEVEL: 'info', SEALKIT_KMSG: kmsg };
  const notes: Record<string, string> = {};
  try {
    const containerd = await startContainerd();
    ctx.defer(() => containerd.cleanup());
    env.SEALKIT_CONTAINERD_SOCK = containerd.sock;
  } catch (err) {
    notes.importer = `skipped: containerd did not start (${(err as Error).message.split('\n')[0]})`;
  }

  const nc = await nats.connectAs('admin', 'bench-admin');
  ctx.defer(() => nc.close());
  let serial = 0;
  const rows: Row[] = [];
  const onIso = await isoLaunch();

  // Each set in turn: the source through tsx (make dev, the tests), then the
  // compiled dist/ with plain node, as the ISO runs it.
  const compiled = await distState();
  const kinds: Kind[] = compiled.missing ? ['tsx'] : ['tsx', 'dist'];
  let running = new Map<string, Proc>();
  let peer: Proc | undefined;
  for (const kind of kinds) {
    running = new Map();
    if (kind === 'dist') {
      try {
        peer = await startCompiled('peer', join(repoRoot, 'bench', 'nats-peer.mjs'), onIso, { ...env, PEER_USER: nats.creds.nodeinfo.user, PEER_PASS: nats.creds.nodeinfo.password });
        ctx.defer(() => peer!.stop());
      } catch (err) {
        notes.peer = `did not start: ${(err as Error).message.split('\n')[0].slice(0, 160)}`;
      }
    }
    for (const name of SERVICES) {
      if (notes[name]) continue;
      ctx.log(`memory: starting ${name} (${kind === 'tsx' ? 'node --import tsx services/' : 'node dist/services/'}${name}/main.*)`);
      try {
        const p = kind === 'tsx' ? fromService(await startService(name, env)) : await startCompiled(name, join(repoRoot, 'dist', 'services', name, 'main.js'), onIso, env);
        running.set(name, p);
        ctx.defer(() => p.stop());
      } catch (err) {
        notes[name] = `did not start: ${(err as Error).message.split('\n')[0].slice(0, 160)}`;
      }
    }
    await pushPolicy(nc, policyYaml({ serial: ++serial, images: [] }), admin.key);
    ctx.log('memory: services idle for 5 s, then 5 samples each, interleaved with the peer');
    await sleep(5000);
    const sample = async (pids: number[]) => {
      const xs = pids.map(() => [] as number[]);
      for (let i = 0; i < 5; i++) {
        pids.forEach((pid, j) => xs[j].push(rss(pid)));
        await sleep(200);
      }
      return xs.map(median);
    };
    const procs = [...running];
    const measured = await sample([...procs.map(([, p]) => p.pid), ...(kind === 'dist' && peer ? [peer.pid] : [])]);
    const peerRss = kind === 'dist' && peer ? measured[procs.length] : undefined;
    const flags = onIso.flags.length ? onIso.flags.join(' ') : 'no flags';
    const mb = (v: number) => `${(v / 1e6).toFixed(1)} MB`;
    if (kind === 'dist') {
      rows.push(row(G, { row: `RSS peer idle: bare node importing nats.js, connected to the same server (node ${flags})`, sealkit: '—', peer: peerRss === undefined ? '—' : mb(peerRss), ratio: '—', target: '—', status: peerRss === undefined ? 'n/a' : 'info', note: notes.peer }));
    }
    for (const name of SERVICES) {
      const at = procs.findIndex(([n]) => n === name);
      const label = kind === 'tsx' ? `RSS ${name} idle, source via tsx (make dev, tests)` : `RSS ${name} idle, compiled dist/ as on the ISO (node ${flags}) vs the peer`;
      // the target is for the deployed form, against the peer of the same run
      const target = kind === 'dist' ? `≤ ${PEER_RATIO}×` : '—';
      if (at < 0) {
        rows.push(row(G, { row: label, sealkit: '—', peer: '—', ratio: '—', target, status: 'n/a', note: notes[name] }));
        continue;
      }
      const v = measured[at];
      const stale = compiled.stale.filter((d) => d === name || d === 'lib');
      const note = kind === 'dist' && stale.length ? `dist/ older than services/${stale.join(' and services/')} (make build)` : undefined;
      if (kind === 'tsx' || peerRss === undefined) {
        rows.push(row(G, { row: label, sealkit: mb(v), peer: '—', ratio: '—', target, status: kind === 'tsx' ? 'info' : 'n/a', note: note ?? notes.peer }));
        continue;
      }
      const ratio = v / peerRss;
      rows.push(row(G, { row: label, sealkit: mb(v), peer: mb(peerRss), ratio: `${ratio.toFixed(2)}×`, target, status: verdict(ratio <= PEER_RATIO), note }));
    }
    if (kind !== kinds[kinds.length - 1]) for (const p of running.values()) await p.stop();
  }
  await peer?.stop();
  if (compiled.missing) rows.push(row(G, { row: 'RSS idle, compiled dist/ (as on the ISO)', sealkit: '—', peer: '—', ratio: '—', target: `≤ ${PEER_RATIO}×`, status: 'n/a', note: `${compiled.missing}; run make build first` }));

  // under load: one image through fetcher → importer → ima
  const size = ctx.quick ? 256 * MiB : 1 * GiB;
  ctx.log(`memory: ${fmt.mib(size)} image through fetch → import → label, sampling RSS`);
  // an OCI archive, so that the importer's manifest check has a digest to compare
  const { path, img } = await imageArchive(ctx, 'load.tar', { layers: 1, layerBytes: size - 16 * 1024, name: 'bench/load', format: 'oci' });
  const web = await serveFiles({ '/load.tar': path });
  ctx.defer(() => web.stop());
  const anon = await nats.connectAs(null);
  ctx.defer(() => anon.close());
  const log = new EventLog(anon, 'image.*');
  const ima = new EventLog(anon, 'ima.*');
  await anon.flush();
  const peaks = new Map([...running].map(([name, p]) => [name, rssPeak(p.pid)]));
  await pushPolicy(nc, policyYaml({ serial: ++serial, images: [{ name: img.name, tag: img.tag, source: `${web.origin}/load.tar`, sha256: img.sha256, allowHttp: true }] }), admin.key);
  const stage: string[] = [];
  try {
    await log.wait((e) => e.type === 'image.verified' && e.data.name === img.name, 300_000);
    stage.push('verified');
    if (running.has('importer')) {
      const out = await log.wait((e) => (e.type === 'image.imported' || e.type === 'image.import_failed') && e.data.name === img.name, 300_000);
      stage.push(out.type === 'image.imported' ? 'imported' : `import failed (${out.data.code}: ${String(out.data.reason).slice(0, 160)})`);
      if (out.type === 'image.imported') {
        const l = await ima.wait((e) => e.type === 'ima.labeled', 300_000).catch(() => undefined);
        stage.push(l ? 'labelled' : 'not labelled within 300 s');
      }
    }
  } catch (err) {
    stage.push(`stopped waiting: ${(err as Error).message.split('\n')[0].slice(0, 120)}`);
  }
  const peak = new Map([...peaks].map(([name, p]) => [name, p.stop()]));
  log.close();
  ima.close();
  for (const name of ['fetcher', 'importer', 'ima'] as const) {
    const v = peak.get(name);
    if (v === undefined) continue;
    rows.push(row(G, { row: `RSS ${name} (${kinds[kinds.length - 1]}) peak while a ${ctx.quick ? '256 MiB' : '1 GiB'} image goes fetch → import → label`, sealkit: `${(v / 1e6).toFixed(1)} MB`, peer: '—', ratio: '—', target: '—', status: 'info', note: name === 'fetcher' ? `pipeline: ${stage.join(', ')}` : undefined }));
  }
  return rows;
}

type Kind = 'tsx' | 'dist';

interface Proc {
  pid: number;
  stop(): Promise<void>;
}

function fromService(svc: RunningService): Proc {
  return { pid: svc.proc.pid!, stop: async () => void (await svc.stop()) };
}

// dist/ needs every service's main.js; a .js older than its .ts is reported
async function distState(): Promise<{ missing?: string; stale: string[] }> {
  const stale = new Set<string>();
  for (const dir of ['lib', ...SERVICES]) {
    const src = join(repoRoot, 'services', dir);
    for (const f of (await readdir(src)).filter((n) => n.endsWith('.ts'))) {
      const rel = `dist/services/${dir}/${f.replace(/\.ts$/, '.js')}`;
      const [a, b] = await Promise.all([stat(join(src, f)), stat(join(repoRoot, rel)).catch(() => undefined)]);
      if (!b && f === 'main.ts') return { missing: `${rel} is missing`, stale: [] };
      if (!b || b.mtimeMs < a.mtimeMs) stale.add(dir);
    }
  }
  return { stale: [...stale] };
}

interface Launch {
  flags: string[]; // node's own flags, before the script
  env: Record<string, string>; // the image's ENV, but its state dir
}

// How the ISO starts every service: `node <flags> <main.js>` and the ENV of
// each pkg/<service>/Dockerfile. One launch for all, so the peer gets it too.
async function isoLaunch(): Promise<Launch> {
  let first: { name: string; key: string; launch: Launch } | undefined;
  for (const name of SERVICES) {
    const file = join(repoRoot, 'pkg', name, 'Dockerfile');
    const d = dockerfileDefaults(await readFile(file, 'utf8'), file);
    const [cmd, ...args] = d.entrypoint ?? [];
    if (cmd !== 'node' || !args.at(-1)?.endsWith(`/dist/services/${name}/main.js`)) throw new Error(`${file}: ENTRYPOINT is not ["node", …flags, ".../dist/services/${name}/main.js"]`);
    const env = Object.fromEntries((d.env ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]).filter(([k]) => !k.startsWith('SEALKIT_')));
    const launch = { flags: args.slice(0, -1), env };
    const key = JSON.stringify(launch);
    if (!first) first = { name, key, launch };
    else if (key !== first.key) throw new Error(`${file}: node flags or ENV differ from pkg/${first.name}/Dockerfile; the peer can only get one set`);
  }
  return first!.launch;
}

// A compiled script with plain node, as the ISO's bundles run it; ready at its "started" line.
async function startCompiled(name: string, script: string, launch: Launch, env: Record<string, string>): Promise<Proc> {
  const child = spawn(process.execPath, [...launch.flags, script], { cwd: repoRoot, env: { ...process.env, ...launch.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d).slice(-4000)));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${name} (dist) did not log "started" in 20 s: ${err}`)), 20_000);
    child.stdout!.on('data', (d: Buffer) => {
      out = (out + d).slice(-100_000);
      if (out.includes('"msg":"started"')) {
        clearTimeout(t);
        out = '';
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${name} (dist) exited ${code}: ${err}`));
    });
  });
  child.stdout!.resume();
  return {
    pid: child.pid!,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}
