// Offline ISO build: reads linuxkit.yml and assembles, with no Docker engine
// and no registry, a kernel + initrd + iso-bios image in LinuxKit's rootfs
// layout from the build host's Debian parts (see iso/README.md).
//
//   node --import tsx iso/build.ts [--out DIR] [--no-compile] [--level N]
//
// Same inputs and SOURCE_DATE_EPOCH, same ISO bytes.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile, copyFile, chmod } from 'node:fs/promises';
import { basename, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import AjvDraft04 from 'ajv-draft-04';
import { stateDir } from '../services/lib/config.ts';
import { ociSpec, mergeConfig, supportedKeys, type ImageConfig } from './oci.ts';
import { resolveImage, type Recipe } from './parts.ts';
import { moduleClosure } from './modules.ts';
import { at, dedupe, ensureDir, linkTree, normalize, putBinary, putBusybox, putFile, putSymlink, putText, sha256File, walkTree } from './rootfs.ts';
import { initrd, isoBios, isoInputs } from './archive.ts';

// a CommonJS module: under NodeNext its class is the default export's .default
const Ajv = AjvDraft04.default;

export const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));

export interface BuildOptions {
  repo?: string;
  out?: string;
  state?: string;
  compile?: boolean;
  level?: number; // zstd level of the initrd
  epoch?: number;
  log?: (line: string) => void;
}

export interface BuildResult {
  iso: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  manifest: string;
  sha256: string;
  bytes: number;
  seconds: number;
  skipped: string[];
}

interface Input {
  path: string; // repo-relative, "state/…", or an absolute host path
  sha256: string;
  role: string;
}

interface LinuxkitFile {
  path: string;
  directory?: boolean;
  symlink?: string;
  contents?: string;
  source?: string;
  metadata?: string;
  optional?: boolean;
  mode?: string;
  uid?: number | string;
  gid?: number | string;
}

interface LinuxkitYml {
  kernel: { image: string; cmdline?: string };
  init?: string[];
  onboot?: ImageConfig[];
  onshutdown?: ImageConfig[];
  services?: ImageConfig[];
  files?: LinuxkitFile[];
  volumes?: unknown[];
  trust?: unknown;
}

// The epoch everything is stamped with: SOURCE_DATE_EPOCH, else the last
// commit's time, else a fixed date (never the clock).
export function sourceDateEpoch(repo: string): number {
  if (process.env.SOURCE_DATE_EPOCH) return Number(process.env.SOURCE_DATE_EPOCH);
  try {
    const ct = execFileSync('git', ['-C', repo, 'log', '-1', '--format=%ct'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (/^\d+$/.test(ct)) return Number(ct);
  } catch {
    /* no commits yet */
  }
  return 1700000000;
}

export function kernelVersion(): string {
  if (process.env.SEALKIT_KERNEL_VERSION) return process.env.SEALKIT_KERNEL_VERSION;
  const versions = readdirSync('/boot')
    .filter((f) => f.startsWith('vmlinuz-'))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => existsSync(`/lib/modules/${v}/modules.dep`))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  if (versions.length === 0) throw new Error('no /boot/vmlinuz-* with modules in /lib/modules; install linux-image-amd64');
  return versions[versions.length - 1];
}

// tsc emits even when it reports errors. Errors in services/ stop the build;
// errors only in tests (someone else's work in progress) do not.
function compile(repo: string, log: (line: string) => void): void {
  try {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const text = String((err as { stdout?: string }).stdout ?? '');
    const files = [...text.matchAll(/^(\S+?)\(\d+,\d+\): error/gm)].map((m) => m[1]);
    if (files.length === 0 || files.some((f) => f.startsWith('services/'))) {
      throw new Error(`tsc failed:\n${text}`);
    }
    log(`iso: tsc reported errors outside services/ (ignored for the image): ${[...new Set(files)].join(', ')}`);
  }
}

// Whether the image in `out` is older than anything it is built from.
export function isStale(out: string, repo = repoRoot, state = stateDir()): boolean {
  const iso = join(out, 'sealkit.iso');
  if (!existsSync(iso)) return true;
  const built = statSync(iso).mtimeMs;
  const newer = (p: string): boolean => {
    if (!existsSync(p)) return false;
    const s = statSync(p);
    if (s.isDirectory()) return readdirSync(p).some((e) => e !== 'node_modules' && newer(join(p, e)));
    return s.mtimeMs > built;
  };
  return [
    'linuxkit.yml', 'package.json', 'package-lock.json', 'tsconfig.json', 'iso', 'pkg', 'services',
  ].some((p) => newer(join(repo, p))) || newer(join(state, 'iso')) || newer(join(state, 'trust.yaml')) || newer(join(state, 'bus', 'creds'));
}

async function treeDigest(dir: string): Promise<string> {
  const { createHash } = await import('node:crypto');
  const h = createHash('sha256');
  await walkTree(dir, async (p, kind) => {
    const rel = relative(dir, p);
    if (kind === 'file') h.update(`f ${rel} ${await sha256File(p)}\n`);
    else if (kind === 'link') h.update(`l ${rel}\n`);
  });
  return h.digest('hex');
}

// Production dependencies, as installed in node_modules (npm's own view, so
// nested and deduplicated packages land where node resolves them).
function productionPackages(repo: string): string[] {
  let out = '';
  try {
    out = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch (err) {
    out = (err as { stdout?: string }).stdout ?? '';
  }
  const paths = out.split('\n').filter((p) => p.startsWith(join(repo, 'node_modules') + '/'));
  if (paths.length === 0) throw new Error('npm ls found no production packages in node_modules; run npm ci first');
  return [...new Set(paths)].sort();
}

async function copyTree(from: string, to: string, skip: (rel: string) => boolean): Promise<void> {
  await walkTree(from, async (p, kind) => {
    const rel = relative(from, p);
    if (skip(rel)) return;
    const d = join(to, rel);
    if (kind === 'dir') await mkdir(d, { recursive: true });
    else if (kind === 'link') {
      const { readlink } = await import('node:fs/promises');
      await putSymlink(to, rel, await readlink(p));
    } else await putFile(to, p, rel);
  });
}

export async function build(o: BuildOptions = {}): Promise<BuildResult> {
  const t0 = Date.now();
  const repo = o.repo ?? repoRoot;
  const out = resolve(o.out ?? process.env.SEALKIT_ISO_OUT ?? join(repo, 'build', 'iso'));
  const state = resolve(o.state ?? stateDir());
  const epoch = o.epoch ?? sourceDateEpoch(repo);
  const level = o.level ?? Number(process.env.SEALKIT_ISO_ZSTD_LEVEL ?? 9);
  const log = o.log ?? ((l: string) => console.log(l));
  const step = (what: string) => log(`iso: ${what} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  const inputs = new Map<string, Input>();
  const skipped: string[] = [];

  // input paths as the manifest shows them: stable across machines and out dirs
  const display = (p: string) =>
    p.startsWith(state + '/') ? `state/${relative(state, p)}` : p.startsWith(repo + '/') ? relative(repo, p) : p;
  const record = async (p: string, role: string) => {
    const key = display(p);
    if (!inputs.has(key)) inputs.set(key, { path: key, sha256: await sha256File(p), role });
  };

  // 1. the YAML, validated as LinuxKit would
  const ymlPath = join(repo, 'linuxkit.yml');
  const yml = YAML.parse(await readFile(ymlPath, 'utf8')) as LinuxkitYml;
  const schema = JSON.parse(await readFile(join(repo, 'iso', 'linuxkit', 'schema.json'), 'utf8'));
  const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);
  if (!validate(yml)) throw new Error(`linuxkit.yml does not validate: ${JSON.stringify(validate.errors)}`);
  for (const k of ['onshutdown', 'volumes'] as const) {
    if (yml[k]?.length) throw new Error(`linuxkit.yml: "${k}" is not supported by the offline build`);
  }
  await record(ymlPath, 'linuxkit.yml');

  // 2. the code
  if (o.compile ?? process.env.SEALKIT_ISO_NO_COMPILE !== '1') {
    step('compiling with tsc');
    compile(repo, log);
  }
  const dist = join(repo, 'dist', 'services');
  if (!existsSync(dist)) throw new Error(`${dist} is missing; run "npx tsc -p tsconfig.json"`);

  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  const stage = join(out, 'rootfs');
  const cache = join(out, 'templates');

  // 3. templates shared by the container rootfs (hard-linked into each)
  step('preparing the busybox and node bases');
  const skeleton = async (root: string) => {
    for (const d of ['/proc', '/sys', '/dev', '/etc', '/run', '/var', '/root']) await ensureDir(root, d);
    await ensureDir(root, '/tmp', 0o1777);
    await putText(root, '/etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
    await putText(root, '/etc/group', 'root:x:0:\nnogroup:x:65534:\n');
  };
  const busyboxBase = join(cache, 'busybox');
  await skeleton(busyboxBase);
  for (const f of await putBusybox(busyboxBase)) await record(f, 'binary');

  const nodeBase = join(cache, 'node');
  await skeleton(nodeBase);
  await putBusybox(nodeBase);
  const nodeBin = execFileSync('sh', ['-c', 'command -v node'], { encoding: 'utf8' }).trim();
  for (const f of await putBinary(nodeBase, nodeBin, '/usr/local/bin/node')) await record(f, 'binary');
  const app = at(nodeBase, '/opt/sealkit');
  await copyTree(dist, join(app, 'dist', 'services'), (rel) => rel.endsWith('.map') || rel.endsWith('.d.ts'));
  await putFile(app, join(repo, 'package.json'), 'package.json', 0o644);
  await record(join(repo, 'package.json'), 'package.json');
  await record(join(repo, 'package-lock.json'), 'package-lock.json');
  await walkTree(dist, async (p, kind) => {
    if (kind === 'file' && !p.endsWith('.map')) await record(p, 'dist');
  });
  const lock = JSON.parse(await readFile(join(repo, 'package-lock.json'), 'utf8')) as { packages?: Record<string, { version?: string; integrity?: string }> };
  const npm: Array<{ path: string; version?: string; integrity?: string; tree: string }> = [];
  for (const pkgDir of productionPackages(repo)) {
    const rel = relative(repo, pkgDir);
    await copyTree(pkgDir, join(app, rel), (r) => r === 'node_modules' || r.startsWith('node_modules/'));
    npm.push({ path: rel, version: lock.packages?.[rel]?.version, integrity: lock.packages?.[rel]?.integrity, tree: await treeDigest(join(app, rel)) });
  }
  await putText(nodeBase, '/usr/local/bin/sealkit', '#!/bin/sh\nexec node /opt/sealkit/dist/services/cli/main.js "$@"\n', 0o755);

  const makeRootfs = async (root: string, r: Recipe) => {
    if (r.base === 'node') await linkTree(nodeBase, root);
    else if (r.base === 'busybox') await linkTree(busyboxBase, root);
    else await skeleton(root);
    for (const b of r.binaries) {
      const [src, dst] = b.split(':');
      for (const f of await putBinary(root, src, dst ?? src)) await record(f, 'binary');
    }
    for (const f of r.files) {
      const src = join(r.dir, f.source);
      await putFile(root, src, f.path, f.mode ? parseInt(f.mode, 8) : undefined);
      await record(src, 'part');
    }
  };

  // 4. kernel and modules
  step('kernel and modules');
  const kver = kernelVersion();
  const kernelRecipe = await resolveImage(repo, yml.kernel.image);
  const vmlinuz = `/boot/vmlinuz-${kver}`;
  await record(vmlinuz, 'kernel');
  const moduleDir = `/lib/modules/${kver}`;
  const modules = await moduleClosure(moduleDir, kernelRecipe.modules);
  for (const m of modules) {
    await putFile(stage, join(moduleDir, m), join(moduleDir, m), 0o644);
    await record(join(moduleDir, m), 'module');
  }
  await putText(stage, '/etc/sealkit/modules.load', modules.join('\n') + '\n');

  // 5. init images: straight into the host root
  step('init');
  for (const ref of yml.init ?? []) {
    const r = await resolveImage(repo, ref);
    await makeRootfs(stage, r);
    await record(join(r.dir, 'offline.yml'), 'part');
  }
  await skeleton(stage);
  for (const d of ['/var/lib', '/var/log', '/mnt', '/newroot', '/containers/onboot', '/containers/services']) await ensureDir(stage, d);
  await putText(stage, '/etc/resolv.conf', '');
  await putText(stage, '/etc/hostname', 'sealkit\n');

  // 6. onboot and services: one OCI bundle each
  const bundle = async (kind: 'onboot' | 'service', entry: ImageConfig, dir: string) => {
    for (const k of Object.keys(entry)) {
      if (!supportedKeys.has(k)) throw new Error(`linuxkit.yml ${kind} ${entry.name}: key "${k}" is not supported by the offline build`);
    }
    const r = await resolveImage(repo, entry.image);
    const c = mergeConfig(r.defaults.config, entry);
    const spec = ociSpec(c, r.defaults, kind);
    const args = (spec.process as { args: string[] }).args;
    const main = args.find((a) => a.startsWith('/opt/sealkit/dist/services/'));
    if (kind === 'service' && main && !existsSync(join(repo, main.replace('/opt/sealkit/', '')))) {
      skipped.push(`${entry.name}: ${main} is not built`);
      log(`iso: service ${entry.name} left out: ${relative(repo, join(repo, main.replace('/opt/sealkit/', '')))} does not exist yet`);
      return;
    }
    await makeRootfs(join(dir, 'rootfs'), r);
    await record(join(r.dir, 'offline.yml'), 'part');
    if (existsSync(join(r.dir, 'Dockerfile'))) await record(join(r.dir, 'Dockerfile'), 'part');
    await putText(dir, 'config.json', JSON.stringify(spec, null, 2) + '\n');
    // host paths a bundle needs before it can start (LinuxKit: runtime.mkdir;
    // bind sources under /run appear at boot, the service waits for them)
    const mkdirs = c.runtime?.mkdir ?? [];
    for (const m of mkdirs) await ensureDir(stage, m);
    const waits = (c.binds ?? []).map((b) => b.split(':')[0]).filter((s) => s.startsWith('/run/'));
    if (waits.length) await putText(dir, 'wait', waits.join('\n') + '\n');
  };
  step('onboot and service bundles');
  for (const [i, entry] of (yml.onboot ?? []).entries()) {
    await bundle('onboot', entry, at(stage, `/containers/onboot/${String(i).padStart(3, '0')}-${entry.name}`));
  }
  const services: string[] = [];
  for (const entry of yml.services ?? []) {
    const dir = at(stage, `/containers/services/${entry.name}`);
    await bundle('service', entry, dir);
    if (existsSync(dir)) services.push(entry.name);
  }
  await putText(
    stage,
    '/etc/inittab',
    [
      '# generated by iso/build.ts from linuxkit.yml',
      '::sysinit:/etc/init.d/rcS',
      '::respawn:/usr/libexec/sealkit/service containerd',
      ...services.map((s) => `::respawn:/usr/libexec/sealkit/service ${s}`),
      '::once:/usr/libexec/sealkit/report',
      'ttyS0::respawn:/usr/libexec/sealkit/console',
      '::shutdown:/etc/init.d/rcK',
      '::ctrlaltdel:/sbin/reboot',
      '',
    ].join('\n'),
  );

  // 7. files:, after recording every input so the manifest can be one of them
  step('files');
  const sourcePath = (s: string) => {
    if (s.startsWith('state/')) return join(state, s.slice('state/'.length));
    if (s.startsWith('build/iso/')) return join(out, s.slice('build/iso/'.length));
    if (s.startsWith('~/')) return join(process.env.HOME ?? '/root', s.slice(2));
    return resolve(repo, s);
  };
  const manifestPath = join(out, 'build-manifest.json');
  for (const f of yml.files ?? []) {
    if (f.source && sourcePath(f.source) !== manifestPath) {
      const src = sourcePath(f.source);
      if (existsSync(src)) await record(src, 'file');
      else if (!f.optional) {
        throw new Error(`linuxkit.yml file ${f.path}: ${src} is missing${f.source.startsWith('state/') ? '; run "make keys" (node --import tsx iso/keys.ts) first' : ''}`);
      }
    } else if (f.contents !== undefined) {
      const { createHash } = await import('node:crypto');
      inputs.set(`linuxkit.yml:${f.path}`, { path: `linuxkit.yml:${f.path}`, sha256: createHash('sha256').update(f.contents).digest('hex'), role: 'file' });
    }
  }
  for (const f of isoInputs) await record(f, 'bootloader');
  const cmdline = yml.kernel.cmdline ?? '';
  const manifest = {
    schema: 'sealkit/build-manifest/v1',
    builder: 'iso/build.ts (offline, Debian parts)',
    sourceDateEpoch: epoch,
    kernel: { image: yml.kernel.image, version: kver, cmdline },
    initrd: { compression: `zstd -${level}`, format: 'newc' },
    images: {
      init: yml.init ?? [],
      onboot: (yml.onboot ?? []).map((e) => ({ name: e.name, image: e.image })),
      services: (yml.services ?? []).filter((e) => services.includes(e.name)).map((e) => ({ name: e.name, image: e.image })),
    },
    skipped,
    npm,
    inputs: [...inputs.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
  };
  await writeFile(manifestPath, JSON.stringify(manifest, null, 2) + '\n');

  for (const f of yml.files ?? []) {
    if (f.metadata) throw new Error(`linuxkit.yml file ${f.path}: "metadata" is not supported by the offline build`);
    if ((f.uid !== undefined && Number(f.uid) !== 0) || (f.gid !== undefined && Number(f.gid) !== 0)) {
      throw new Error(`linuxkit.yml file ${f.path}: only uid/gid 0 are supported by the offline build`);
    }
    const mode = f.mode ? parseInt(f.mode, 8) : undefined;
    if (f.directory) await ensureDir(stage, f.path, mode ?? 0o755);
    else if (f.symlink) await putSymlink(stage, f.path, f.symlink);
    else if (f.contents !== undefined) await putText(stage, f.path, f.contents, mode ?? 0o600);
    else if (f.source) {
      const src = sourcePath(f.source);
      if (existsSync(src)) await putFile(stage, src, f.path, mode ?? 0o600);
    }
  }

  // 8. archive: links for identical files, fixed times, sorted cpio, ISO
  step('deduplicating');
  const d = await dedupe(stage);
  log(`iso: ${d.linked} identical files hard-linked (${(d.savedBytes / 1e6).toFixed(1)} MB saved)`);
  await rm(cache, { recursive: true, force: true });
  await normalize(stage, epoch);
  step(`initrd (zstd -${level})`);
  const initrdPath = join(out, 'initrd.img');
  await initrd(stage, initrdPath, level);
  const kernelPath = join(out, 'kernel');
  await copyFile(vmlinuz, kernelPath);
  await chmod(kernelPath, 0o644);
  await writeFile(join(out, 'cmdline'), cmdline + '\n');
  step('iso');
  const iso = join(out, 'sealkit.iso');
  await isoBios({ kernel: kernelPath, initrd: initrdPath, cmdline, out: iso, work: out, epoch });
  await rm(join(out, 'iso-root'), { recursive: true, force: true });
  const sha256 = await sha256File(iso);
  await writeFile(`${iso}.sha256`, `${sha256}  ${basename(iso)}\n`);
  const bytes = statSync(iso).size;
  const seconds = (Date.now() - t0) / 1000;
  log(`iso: ${iso} ${(bytes / 1e6).toFixed(1)} MB sha256 ${sha256} in ${seconds.toFixed(1)}s`);
  return { iso, kernel: kernelPath, initrd: initrdPath, cmdline, manifest: manifestPath, sha256, bytes, seconds, skipped };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const opt = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  try {
    await build({
      out: opt('--out'),
      compile: args.includes('--no-compile') ? false : undefined,
      level: opt('--level') ? Number(opt('--level')) : undefined,
    });
  } catch (err) {
    console.error(`iso: ${(err as Error).message}`);
    process.exit(1);
  }
}

