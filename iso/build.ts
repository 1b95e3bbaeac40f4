// Offline ISO build: reads linuxkit.yml and assembles, with no Docker engine
// and no registry, a kernel + initrd + hybrid ISO (BIOS and UEFI) in
// LinuxKit's rootfs layout from the build host's Debian parts (see iso/README.md).
//
//   node --import tsx iso/build.ts [--out DIR] [--no-compile] [--level N] [--test-case NAME]
//                                  [--node NAME [--hub URLS] [--bundle DIR]]
//
// With --node (make iso NODE=… HUB=…) the image is that fleet member's:
// see iso/fleet.ts. Into build/iso-NAME unless --out says otherwise.
//
// A test case (test/cases/NAME/test.yml, a LinuxKit fragment) is merged in
// front of linuxkit.yml, as `linuxkit build test.yml linuxkit.yml` would: a
// separate image for a test, never the node's.
//
// Same inputs and SOURCE_DATE_EPOCH, same ISO bytes.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readlink, rm, writeFile, copyFile, chmod } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import AjvDraft04 from 'ajv-draft-04';
import { stateDir } from '../services/lib/config.ts';
import { SealkitError } from '../services/lib/errors.ts';
import { ociSpec, mergeConfig, supportedKeys, type ImageConfig } from '../services/lib/rootfs/spec.ts';
import { resolveImage, type Recipe } from './parts.ts';
import { moduleClosure } from './modules.ts';
import { at, dedupe, ensureDir, linkTree, normalize, putBinary, putBusybox, putFile, putStripped, putSymlink, putText, sha256File, walkTree } from './rootfs.ts';
import { bootConfigs, initrd, isoHybrid, isoInputs } from './archive.ts';
import { efiInputs } from './efi.ts';
import { bundleDir, fleetInputs, guestFiles, manifestEntry, nodeServerConfig, parseHub, readBundle, withHub, type FleetBundle } from './fleet.ts';
import { guestNats } from './keys.ts';
import { busUsers, readCreds, type BusCreds } from '../services/lib/natsconf.ts';

// a CommonJS module: under NodeNext its class is the default export's .default
const Ajv = AjvDraft04.default;

export const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));

export interface BuildOptions {
  repo?: string;
  out?: string;
  state?: string;
  compile?: boolean;
  level?: number; // lz4 level of the initrd (1–12)
  epoch?: number;
  testCase?: string; // test/cases/<name>/test.yml in front of linuxkit.yml
  fleet?: FleetOptions; // a fleet member's image; without it, the node's own
  kernel?: string; // a version or series (6.1); default: the newest installed (kernelVersion)
  log?: (line: string) => void;
}

// A fleet member: its enrolment bundle (sealkit fleet enroll), and the hub's
// leaf URLs as this node reaches them when they are not the bundle's.
export interface FleetOptions {
  node: string;
  bundle: string;
  hub?: string[];
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

export const JITLESS = '--jitless';

// Whether a kernel has IPE built in (its config beside it in /boot, as
// Debian installs it; 6.12 and later when there is none).
export function kernelHasIpe(version: string, boot = '/boot'): boolean {
  const config = join(boot, `config-${version}`);
  if (existsSync(config)) return /^CONFIG_SECURITY_IPE=y$/m.test(readFileSync(config, 'utf8'));
  const [major, minor] = version.split('.').map(Number);
  return major > 6 || (major === 6 && minor >= 12);
}

// The node kernel: the newest installed /boot/vmlinuz-* with its modules
// (bookworm-backports' 6.12 once make deps has installed it), or the one
// `choice` names: an exact version (6.1.0-57-amd64) or a series (6.1, 6.12).
// make iso KERNEL=… / SEALKIT_KERNEL=…; SEALKIT_KERNEL_VERSION is the older name.
export function kernelVersion(choice = process.env.SEALKIT_KERNEL || process.env.SEALKIT_KERNEL_VERSION || undefined, boot = '/boot', modules = '/lib/modules'): string {
  const versions = (existsSync(boot) ? readdirSync(boot) : [])
    .filter((f) => f.startsWith('vmlinuz-'))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => existsSync(`${modules}/${v}/modules.dep`))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  if (versions.length === 0) throw new SealkitError('SEALKIT_CONFIG', `no ${boot}/vmlinuz-* with its modules in ${modules}; run make deps (it installs linux-image-amd64 and, on Debian 12, the 6.12 kernel from bookworm-backports)`);
  if (!choice) return versions[versions.length - 1];
  if (versions.includes(choice)) return choice;
  const series = new RegExp(`^${choice.replace(/[.+]/g, (c) => `\\${c}`)}[.-]`);
  const match = versions.filter((v) => series.test(v));
  if (match.length === 0) {
    throw new SealkitError('SEALKIT_CONFIG', `kernel "${choice}" (KERNEL= / SEALKIT_KERNEL): no ${boot}/vmlinuz-${choice}* with its modules; installed: ${versions.join(', ')}. Name one of those or a series such as 6.1, or run make deps`);
  }
  return match[match.length - 1];
}

// tsc emits even when it reports errors; the build does not go on with code
// that does not typecheck, wherever the error is (services, iso, tests).
// tsc truncates and rewrites every output, so it writes into a directory of
// its own and only changed files move into dist/, each by rename: a CLI or
// service running from dist/ meanwhile never reads a half-written module.
export function compile(repo: string, log: (line: string) => void): void {
  const tsc = join(repo, 'node_modules', '.bin', 'tsc');
  mkdirSync(join(repo, 'build'), { recursive: true });
  const fresh = mkdtempSync(join(repo, 'build', '.tsc-'));
  try {
    try {
      execFileSync(tsc, ['-p', 'tsconfig.json', '--outDir', fresh], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      const text = String(e.stdout ?? '') + String(e.stderr ?? '') || e.message;
      const files = [...new Set([...text.matchAll(/^(\S+?)\(\d+,\d+\): error/gm)].map((m) => m[1]))];
      log(`iso: tsc failed${files.length ? ` in ${files.join(', ')}` : ''}`);
      throw new SealkitError('SEALKIT_CONFIG', `tsc -p tsconfig.json failed in ${repo}; fix the type errors and build again:\n${text}`, { files });
    }
    buildHelpers(repo, fresh, log);
    syncChanged(fresh, join(repo, 'dist'));
    // unchanged outputs keep their times: this says when dist/ was last
    // made from the sources (tests compare it with them)
    writeFileSync(compiledStamp(repo), `${new Date().toISOString()}\n`);
  } finally {
    rmSync(fresh, { recursive: true, force: true });
  }
}

export const compiledStamp = (repo: string) => join(repo, 'dist', '.compiled');

// The C helpers the services run, built beside their modules in dist/ (so
// the ISO carries them with dist/services): sealkit-verity-enable, fs-verity
// on many files in one process (Node has no ioctl).
const HELPERS = [{ src: 'services/ima/verity-enable.c', out: 'services/ima/sealkit-verity-enable' }];
function buildHelpers(repo: string, outDir: string, log: (line: string) => void): void {
  for (const h of HELPERS) {
    mkdirSync(dirname(join(outDir, h.out)), { recursive: true });
    try {
      execFileSync('cc', ['-O2', '-Wall', '-Werror', '-o', join(outDir, h.out), join(repo, h.src)], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      log(`iso: cc failed on ${h.src}`);
      const what = e.code === 'ENOENT' ? 'there is no cc: install gcc and libc6-dev (make deps does)' : `${String(e.stderr ?? '').trim() || e.message}; fix it (or install gcc and libc6-dev, which make deps does)`;
      throw new SealkitError('SEALKIT_CONFIG', `cc could not build ${h.src}: ${what}, and build again`, { file: h.src });
    }
  }
}

function syncChanged(from: string, to: string): void {
  for (const e of readdirSync(from, { withFileTypes: true })) {
    const src = join(from, e.name);
    const dst = join(to, e.name);
    if (e.isDirectory()) {
      mkdirSync(dst, { recursive: true });
      syncChanged(src, dst);
      continue;
    }
    const next = readFileSync(src);
    const mode = statSync(src).mode & 0o777; // a helper stays executable
    if (existsSync(dst) && readFileSync(dst).equals(next) && (statSync(dst).mode & 0o777) === mode) continue;
    const tmp = `${dst}.${process.pid}.tmp`;
    writeFileSync(tmp, next, { mode });
    chmodSync(tmp, mode);
    renameSync(tmp, dst);
  }
}

// Whether the image in `out` is older than anything it is built from.
export function isStale(out: string, repo = repoRoot, state = stateDir(), testCase?: string): boolean {
  const iso = join(out, 'sealkit.iso');
  if (!existsSync(iso)) return true;
  const built = statSync(iso).mtimeMs;
  const newer = (p: string): boolean => {
    if (!existsSync(p)) return false;
    const s = statSync(p);
    if (s.isDirectory()) return readdirSync(p).some((e) => e !== 'node_modules' && newer(join(p, e)));
    return s.mtimeMs > built;
  };
  const sources = ['linuxkit.yml', 'package.json', 'package-lock.json', 'tsconfig.json', 'iso', 'pkg', 'services'];
  if (testCase) sources.push(join('test', 'cases', testCase), join('test', 'pkg'));
  return sources.some((p) => newer(join(repo, p))) || newer(join(state, 'iso')) || newer(join(state, 'trust.yaml')) || newer(join(state, 'bus', 'creds'));
}

async function treeDigest(dir: string): Promise<string> {
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

// What of an installed package Node.js can load at run time. Left out of
// the image: type declarations and TypeScript sources, source maps, docs, C
// and C++ sources and headers with their build files (a native addon keeps
// only its .node), tests, examples and benchmarks, CI settings, and
// prebuilt addons for other platforms or for the Bare runtime (tar-fs's
// bare-* packages; Node.js never loads a .bare). 30 MB of production
// packages become about 15.
const thisPlatform = `${process.platform}-${process.arch}`;
const notRuntimeDir = /(^|\/)(test|tests|__tests__|example|examples|docs|bench|benchmark|benchmarks|coverage|\.github)(\/|$)/;
const notRuntimeFile = /\.([cm]?ts|map|md|markdown|c|cc|cpp|h|hh|hpp|inl|gyp|gypi|mk|o|a|bare|tsbuildinfo)$|(^|\/)(CMakeLists\.txt|Makefile|\.npmignore|\.travis\.yml|\.eslintrc[^/]*|\.prettierrc[^/]*|\.editorconfig|tsconfig[^/]*\.json)$/i;
export function runtimeFile(rel: string): boolean {
  if (notRuntimeDir.test(rel) || notRuntimeFile.test(rel)) return false;
  // node-gyp's intermediate objects beside the addon it built
  if (/(^|\/)build\/(Release|Debug)\/(obj\.target|\.deps|obj)(\/|$)/.test(rel)) return false;
  const prebuilt = /(^|\/)prebuilds\/([^/]+)(\/|$)/.exec(rel);
  return !prebuilt || prebuilt[2] === thisPlatform;
}

async function copyTree(from: string, to: string, skip: (rel: string) => boolean): Promise<void> {
  await walkTree(from, async (p, kind) => {
    const rel = relative(from, p);
    if (skip(rel)) return;
    const d = join(to, rel);
    if (kind === 'dir') await mkdir(d, { recursive: true });
    else if (kind === 'link') {
      await putSymlink(to, rel, await readlink(p));
    } else await putFile(to, p, rel);
  });
}

// NODE, HUB and the bundle as make iso passes them: HUB alone is a mistake
// (whose credentials would the node use?), not a silent production build.
export function fleetOptions(node?: string, hub?: string, bundle?: string, state = stateDir()): FleetOptions | undefined {
  if (!node) {
    if (hub || bundle) throw new SealkitError('SEALKIT_CONFIG', `HUB="${hub ?? ''}" without NODE: a fleet node's image is one enrolled node's; give NODE=<name> as enrolled with "sealkit fleet enroll"`, { hub });
    return undefined;
  }
  return { node, bundle: bundle ?? bundleDir(node, process.env.SEALKIT_HUB ?? join(state, 'hub')), hub: hub ? parseHub(hub) : undefined };
}

export function fleetIsoDir(repo: string, node: string): string {
  return join(repo, 'build', `iso-${node}`);
}

// What every step of the build shares: where things come from and go, how
// to log, and the inputs recorded so far for the manifest.
interface Ctx {
  repo: string;
  out: string;
  state: string;
  epoch: number;
  level: number;
  stage: string; // the node's root filesystem, archived into the initrd
  templates: string; // trees hard-linked into each container rootfs
  manifestPath: string;
  testCase?: string;
  fleet?: FleetBundle;
  kernel: string; // the version, resolved before anything is built
  ipe: boolean; // whether that kernel has IPE built in (kernelHasIpe)
  pkgRoots: string[]; // where sealkit/* images are looked up (pkg/*/build.yml)
  inputs: Map<string, Input>;
  skipped: string[];
  log: (line: string) => void;
  step: (what: string) => void;
  record: (path: string, role: string) => Promise<void>;
}

interface Bases {
  busybox: string;
  node: string;
  npm: NpmPackage[];
}

interface NpmPackage {
  path: string;
  version?: string;
  integrity?: string;
  tree: string;
}

interface Kernel {
  version: string;
  vmlinuz: string;
}

// linuxkit.yml in, kernel + initrd + ISO out, one named step after another.
export async function build(o: BuildOptions = {}): Promise<BuildResult> {
  const t0 = Date.now();
  const ctx = context(o, t0);
  const yml = await readSystem(ctx);
  if (o.fleet) ctx.fleet = withHub(await readBundle(o.fleet.bundle, o.fleet.node), o.fleet.hub);
  if (o.compile ?? process.env.SEALKIT_ISO_NO_COMPILE !== '1') compileCode(ctx);
  await resetOut(ctx);
  const bases = await prepareBases(ctx);
  const kernel = await addKernel(ctx, yml);
  await addInit(ctx, yml, bases);
  const services = await addBundles(ctx, yml, bases);
  await writeInittab(ctx, services);
  await recordFiles(ctx, yml);
  await writeManifest(ctx, yml, kernel, services, bases.npm);
  await addFiles(ctx, yml);
  if (ctx.fleet) await addFleet(ctx, ctx.fleet);
  const art = await archive(ctx, kernel, yml.kernel.cmdline ?? '');
  const seconds = (Date.now() - t0) / 1000;
  ctx.log(`iso: ${art.iso} ${(art.bytes / 1e6).toFixed(1)} MB sha256 ${art.sha256} in ${seconds.toFixed(1)}s`);
  return { ...art, manifest: ctx.manifestPath, seconds, skipped: ctx.skipped };
}

function context(o: BuildOptions, t0: number): Ctx {
  const repo = o.repo ?? repoRoot;
  const out = resolve(o.out ?? process.env.SEALKIT_ISO_OUT ?? join(repo, 'build', 'iso'));
  const state = resolve(o.state ?? stateDir());
  const logLine = o.log ?? ((l: string) => console.log(l));
  const inputs = new Map<string, Input>();
  // input paths as the manifest shows them: stable across machines and out dirs
  const display = (p: string) =>
    p.startsWith(state + '/') ? `state/${relative(state, p)}` : p.startsWith(repo + '/') ? relative(repo, p) : p;
  const kernel = kernelVersion(o.kernel);
  return {
    repo,
    out,
    state,
    epoch: o.epoch ?? sourceDateEpoch(repo),
    level: o.level ?? Number(process.env.SEALKIT_ISO_LZ4_LEVEL ?? 9),
    stage: join(out, 'rootfs'),
    templates: join(out, 'templates'),
    manifestPath: join(out, 'build-manifest.json'),
    testCase: o.testCase,
    kernel,
    ipe: kernelHasIpe(kernel),
    // a test case's images come from test/pkg, which the node's never do
    pkgRoots: o.testCase ? ['pkg', join('test', 'pkg')] : ['pkg'],
    inputs,
    skipped: [],
    log: logLine,
    step: (what) => logLine(`iso: ${what} (${((Date.now() - t0) / 1000).toFixed(1)}s)`),
    record: async (p, role) => {
      const key = display(p);
      if (!inputs.has(key)) inputs.set(key, { path: key, sha256: await sha256File(p), role });
    },
  };
}

// linuxkit.yml (and the test case in front of it), validated as LinuxKit
// would, refusing what this build cannot do
async function readSystem(ctx: Ctx): Promise<LinuxkitYml> {
  const schema = JSON.parse(await readFile(join(ctx.repo, 'iso', 'linuxkit', 'schema.json'), 'utf8'));
  const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);
  const read = async (path: string, name: string) => {
    const doc = YAML.parse(await readFile(path, 'utf8')) as LinuxkitYml;
    if (!validate(doc)) throw new Error(`${name} does not validate: ${JSON.stringify(validate.errors)}`);
    return doc;
  };
  const ymlPath = join(ctx.repo, 'linuxkit.yml');
  let yml = await read(ymlPath, 'linuxkit.yml');
  await ctx.record(ymlPath, 'linuxkit.yml');
  if (ctx.testCase) {
    const path = testCasePath(ctx.repo, ctx.testCase);
    const name = relative(ctx.repo, path);
    yml = appendConfig(withSources(await read(path, name), relative(ctx.repo, dirname(path))), yml);
    await ctx.record(path, 'test-case');
  }
  for (const k of ['onshutdown', 'volumes'] as const) {
    if (yml[k]?.length) throw new Error(`linuxkit.yml: "${k}" is not supported by the offline build`);
  }
  // a command line the boot loaders cannot both pass is refused before anything is built
  bootConfigs(yml.kernel.cmdline ?? '');
  return yml;
}

export function testCases(repo = repoRoot): string[] {
  const dir = join(repo, 'test', 'cases');
  return existsSync(dir) ? readdirSync(dir).filter((d) => existsSync(join(dir, d, 'test.yml'))).sort() : [];
}

function testCasePath(repo: string, name: string): string {
  const path = join(repo, 'test', 'cases', name, 'test.yml');
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name) || !existsSync(path)) {
    throw new SealkitError('SEALKIT_CONFIG', `test case "${name}": ${relative(repo, path)} does not exist; the test cases are: ${testCases(repo).join(', ') || 'none'}`, { testCase: name });
  }
  return path;
}

// "./x" in a test case is the case's own file (LinuxKit runs a case's build
// in its directory); the rest of the build reads sources from the repo root
function withSources(doc: LinuxkitYml, dir: string): LinuxkitYml {
  const files = doc.files?.map((f) => (f.source?.startsWith('./') ? { ...f, source: join(dir, f.source) } : f));
  return files ? { ...doc, files } : doc;
}

// LinuxKit's AppendConfig: the later file's kernel wins where it sets one,
// the lists are concatenated in order
function appendConfig(a: LinuxkitYml, b: LinuxkitYml): LinuxkitYml {
  const list = <T>(x?: T[], y?: T[]) => (x || y ? [...(x ?? []), ...(y ?? [])] : undefined);
  return {
    ...a,
    ...b,
    kernel: { ...a.kernel, ...b.kernel },
    init: list(a.init, b.init),
    onboot: list(a.onboot, b.onboot),
    onshutdown: list(a.onshutdown, b.onshutdown),
    services: list(a.services, b.services),
    files: list(a.files, b.files),
    volumes: list(a.volumes, b.volumes),
  };
}

function compileCode(ctx: Ctx): void {
  ctx.step('compiling with tsc');
  compile(ctx.repo, ctx.log);
}

async function resetOut(ctx: Ctx): Promise<void> {
  const dist = join(ctx.repo, 'dist', 'services');
  if (!existsSync(dist)) throw new Error(`${dist} is missing; run "npx tsc -p tsconfig.json"`);
  await rm(ctx.out, { recursive: true, force: true });
  await mkdir(ctx.out, { recursive: true });
}

async function skeleton(root: string): Promise<void> {
  for (const d of ['/proc', '/sys', '/dev', '/etc', '/run', '/var', '/root']) await ensureDir(root, d);
  await ensureDir(root, '/tmp', 0o1777);
  await putText(root, '/etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  await putText(root, '/etc/group', 'root:x:0:\nnogroup:x:65534:\n');
}

// the busybox and node trees shared by the container rootfs (hard-linked into each)
async function prepareBases(ctx: Ctx): Promise<Bases> {
  ctx.step('preparing the busybox and node bases');
  const { repo } = ctx;
  const busybox = join(ctx.templates, 'busybox');
  await skeleton(busybox);
  for (const f of await putBusybox(busybox)) await ctx.record(f, 'binary');

  const node = join(ctx.templates, 'node');
  await skeleton(node);
  await putBusybox(node);
  const nodeBin = execFileSync('sh', ['-c', 'command -v node'], { encoding: 'utf8' }).trim();
  for (const f of await putStripped(node, nodeBin, '/usr/local/bin/node')) await ctx.record(f, 'binary');
  const app = at(node, '/opt/sealkit');
  const dist = join(repo, 'dist', 'services');
  await copyTree(dist, join(app, 'dist', 'services'), (rel) => rel.endsWith('.map') || rel.endsWith('.d.ts'));
  await putFile(app, join(repo, 'package.json'), 'package.json', 0o644);
  await ctx.record(join(repo, 'package.json'), 'package.json');
  await ctx.record(join(repo, 'package-lock.json'), 'package-lock.json');
  await walkTree(dist, async (p, kind) => {
    if (kind === 'file' && !p.endsWith('.map')) await ctx.record(p, 'dist');
  });
  const lock = JSON.parse(await readFile(join(repo, 'package-lock.json'), 'utf8')) as { packages?: Record<string, { version?: string; integrity?: string }> };
  const npm: NpmPackage[] = [];
  for (const pkgDir of productionPackages(repo)) {
    const rel = relative(repo, pkgDir);
    await copyTree(pkgDir, join(app, rel), (r) => r === 'node_modules' || r.startsWith('node_modules/') || !runtimeFile(r));
    npm.push({ path: rel, version: lock.packages?.[rel]?.version, integrity: lock.packages?.[rel]?.integrity, tree: await treeDigest(join(app, rel)) });
  }
  await putText(node, '/usr/local/bin/sealkit', '#!/bin/sh\nexec node /opt/sealkit/dist/services/cli/main.js "$@"\n', 0o755);
  return { busybox, node, npm };
}

// one image's rootfs: its base, then the host binaries and files its offline.yml names
async function makeRootfs(ctx: Ctx, bases: Bases, root: string, r: Recipe): Promise<void> {
  if (r.base === 'node') await linkTree(bases.node, root);
  else if (r.base === 'busybox') await linkTree(bases.busybox, root);
  else await skeleton(root);
  for (const b of r.binaries) {
    const [src, dst] = b.split(':');
    for (const f of await putBinary(root, src, dst ?? src)) await ctx.record(f, 'binary');
  }
  for (const f of r.files) {
    const src = join(r.dir, f.source);
    await putFile(root, src, f.path, f.mode ? parseInt(f.mode, 8) : undefined);
    await ctx.record(src, 'part');
  }
}

async function addKernel(ctx: Ctx, yml: LinuxkitYml): Promise<Kernel> {
  ctx.step('kernel and modules');
  const version = ctx.kernel;
  const recipe = await resolveImage(ctx.repo, yml.kernel.image, ctx.pkgRoots);
  const vmlinuz = `/boot/vmlinuz-${version}`;
  await ctx.record(vmlinuz, 'kernel');
  const moduleDir = `/lib/modules/${version}`;
  const modules = await moduleClosure(moduleDir, recipe.modules);
  for (const m of modules) {
    await putFile(ctx.stage, join(moduleDir, m), join(moduleDir, m), 0o644);
    await ctx.record(join(moduleDir, m), 'module');
  }
  await putText(ctx.stage, '/etc/sealkit/modules.load', modules.join('\n') + '\n');
  return { version, vmlinuz };
}

// init images: straight into the host root
async function addInit(ctx: Ctx, yml: LinuxkitYml, bases: Bases): Promise<void> {
  ctx.step('init');
  const { stage } = ctx;
  for (const ref of yml.init ?? []) {
    const r = await resolveImage(ctx.repo, ref, ctx.pkgRoots);
    await makeRootfs(ctx, bases, stage, r);
    await ctx.record(join(r.dir, 'offline.yml'), 'part');
  }
  await skeleton(stage);
  for (const d of ['/var/lib', '/var/log', '/mnt', '/newroot', '/containers/onboot', '/containers/services']) await ensureDir(stage, d);
  await putText(stage, '/etc/resolv.conf', '');
  await putText(stage, '/etc/hostname', 'sealkit\n');
}

// onboot and services: one OCI bundle each; returns the services built
async function addBundles(ctx: Ctx, yml: LinuxkitYml, bases: Bases): Promise<string[]> {
  ctx.step('onboot and service bundles');
  for (const [i, entry] of (yml.onboot ?? []).entries()) {
    await addBundle(ctx, bases, 'onboot', entry, at(ctx.stage, `/containers/onboot/${String(i).padStart(3, '0')}-${entry.name}`));
  }
  const services: string[] = [];
  for (const entry of yml.services ?? []) {
    const dir = at(ctx.stage, `/containers/services/${entry.name}`);
    await addBundle(ctx, bases, 'service', entry, dir);
    if (existsSync(dir)) services.push(entry.name);
  }
  return services;
}

async function addBundle(ctx: Ctx, bases: Bases, kind: 'onboot' | 'service', entry: ImageConfig, dir: string): Promise<void> {
  const { repo } = ctx;
  for (const k of Object.keys(entry)) {
    if (!supportedKeys.has(k)) throw new Error(`linuxkit.yml ${kind} ${entry.name}: key "${k}" is not supported by the offline build`);
  }
  const r = await resolveImage(repo, entry.image, ctx.pkgRoots);
  const c = mergeConfig(r.defaults.config, entry);
  const spec = ociSpec(c, r.defaults, kind);
  // IPE refuses executable memory that no file backs (its policy allows
  // files by fs-verity digest and the initramfs): V8's JIT would be denied
  // its next code page once the owner's policy is active, so on a kernel
  // with IPE every Node.js process of the node runs interpreted only
  if (r.base === 'node' && ctx.ipe) {
    const p = spec.process as { env?: string[]; args: string[] };
    p.env = [...(p.env ?? []).filter((e) => !e.startsWith('NODE_OPTIONS=')), `NODE_OPTIONS=${JITLESS}`];
    // jitless turns WebAssembly off, with a warning unless it is off already
    if (p.args[0] === 'node' && !p.args.includes('--no-expose-wasm')) p.args.splice(1, 0, '--no-expose-wasm');
  }
  const args = (spec.process as { args: string[] }).args;
  const main = args.find((a) => a.startsWith('/opt/sealkit/dist/services/'));
  if (kind === 'service' && main && !existsSync(join(repo, main.replace('/opt/sealkit/', '')))) {
    ctx.skipped.push(`${entry.name}: ${main} is not built`);
    ctx.log(`iso: service ${entry.name} left out: ${relative(repo, join(repo, main.replace('/opt/sealkit/', '')))} does not exist yet`);
    return;
  }
  await makeRootfs(ctx, bases, join(dir, 'rootfs'), r);
  await ctx.record(join(r.dir, 'offline.yml'), 'part');
  if (existsSync(join(r.dir, 'Dockerfile'))) await ctx.record(join(r.dir, 'Dockerfile'), 'part');
  await putText(dir, 'config.json', JSON.stringify(spec, null, 2) + '\n');
  // host paths a bundle needs before it can start (LinuxKit: runtime.mkdir;
  // bind sources under /run appear at boot, the service waits for them)
  for (const m of c.runtime?.mkdir ?? []) await ensureDir(ctx.stage, m);
  const waits = (c.binds ?? []).map((b) => b.split(':')[0]).filter((s) => s.startsWith('/run/'));
  if (waits.length) await putText(dir, 'wait', waits.join('\n') + '\n');
  // a service of the node's bus starts once the bus answers: on one TCG CPU
  // seven Node services starting with nats-server delay it by their start-up
  const bus = (c.env ?? []).map((e) => /^SEALKIT_NATS_URL=nats:\/\/(127\.0\.0\.1):(\d+)$/.exec(e)).find(Boolean);
  if (kind === 'service' && bus) await putText(dir, 'bus', `${bus[1]} ${bus[2]}\n`);
}

async function writeInittab(ctx: Ctx, services: string[]): Promise<void> {
  await putText(
    ctx.stage,
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
}

// where a files: source is read from on the build host
function sourcePath(ctx: Ctx, s: string): string {
  if (s.startsWith('state/')) return join(ctx.state, s.slice('state/'.length));
  if (s.startsWith('build/iso/')) return join(ctx.out, s.slice('build/iso/'.length));
  if (s.startsWith('~/')) return join(process.env.HOME ?? '/root', s.slice(2));
  return resolve(ctx.repo, s);
}

// files: are inputs too, recorded before the manifest (which is one of them) is written
async function recordFiles(ctx: Ctx, yml: LinuxkitYml): Promise<void> {
  ctx.step('files');
  for (const f of yml.files ?? []) {
    if (f.source && sourcePath(ctx, f.source) !== ctx.manifestPath) {
      const src = sourcePath(ctx, f.source);
      if (existsSync(src)) await ctx.record(src, 'file');
      else if (!f.optional) {
        throw new Error(`linuxkit.yml file ${f.path}: ${src} is missing${f.source.startsWith('state/') ? '; run "make keys" (node --import tsx iso/keys.ts) first' : ''}`);
      }
    } else if (f.contents !== undefined) {
      ctx.inputs.set(`linuxkit.yml:${f.path}`, { path: `linuxkit.yml:${f.path}`, sha256: createHash('sha256').update(f.contents).digest('hex'), role: 'file' });
    }
  }
  for (const f of [...isoInputs, ...efiInputs()]) await ctx.record(f, 'bootloader');
  if (ctx.fleet) {
    for (const i of fleetInputs(ctx.fleet)) ctx.inputs.set(i.path, i);
  }
}

async function writeManifest(ctx: Ctx, yml: LinuxkitYml, kernel: Kernel, services: string[], npm: NpmPackage[]): Promise<void> {
  const manifest = {
    schema: 'sealkit/build-manifest/v1',
    builder: 'iso/build.ts (offline, Debian parts)',
    ...(ctx.testCase ? { testCase: ctx.testCase } : {}),
    ...(ctx.fleet ? { fleet: manifestEntry(ctx.fleet) } : {}),
    sourceDateEpoch: ctx.epoch,
    kernel: { image: yml.kernel.image, version: kernel.version, cmdline: yml.kernel.cmdline ?? '', ipe: ctx.ipe },
    initrd: { compression: `lz4 -l -${ctx.level}`, format: 'newc' },
    boot: { bios: 'isolinux', uefi: 'GRUB x86_64-efi (grub-mkimage)' },
    images: {
      init: yml.init ?? [],
      onboot: (yml.onboot ?? []).map((e) => ({ name: e.name, image: e.image })),
      services: (yml.services ?? []).filter((e) => services.includes(e.name)).map((e) => ({ name: e.name, image: e.image })),
    },
    skipped: ctx.skipped,
    npm,
    inputs: [...ctx.inputs.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
  };
  await writeFile(ctx.manifestPath, JSON.stringify(manifest, null, 2) + '\n');
}

async function addFiles(ctx: Ctx, yml: LinuxkitYml): Promise<void> {
  const { stage } = ctx;
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
      const src = sourcePath(ctx, f.source);
      if (existsSync(src)) await putFile(stage, src, f.path, mode ?? 0o600);
    }
  }
}

// The enrolment into the node's state, readable by root only (it is the
// node's identity on the hub), and the node's nats-server config, which
// carries the leaf password, replaced by the fleet member's.
async function addFleet(ctx: Ctx, fleet: FleetBundle): Promise<void> {
  ctx.step(`fleet node ${fleet.config.node} (groups ${fleet.config.groups.join(', ') || 'none'}; hub ${fleet.config.hub.map((u) => new URL(u).host).join(', ')})`);
  for (const f of guestFiles(fleet)) {
    await ensureDir(ctx.stage, dirname(f.path), 0o700);
    await putText(ctx.stage, f.path, f.text, 0o600);
  }
  const creds: Record<string, BusCreds> = {};
  for (const u of busUsers) creds[u] = await readCreds(join(ctx.state, 'bus', 'creds', `${u}.json`));
  await putText(ctx.stage, '/etc/nats/nats-server.conf', nodeServerConfig(fleet, creds, guestNats), 0o600);
  await putText(ctx.stage, '/etc/nats/bus-init.conf', nodeServerConfig(fleet, creds, guestNats, { leaf: false }), 0o600);
  // its host name (init's rcS): what every service names as the events' node
  await putText(ctx.stage, '/etc/sealkit/fleet-node', `${fleet.config.node}\n`, 0o644);
}

// links for identical files, fixed times, sorted cpio, then the ISO
async function archive(ctx: Ctx, kernel: Kernel, cmdline: string): Promise<Omit<BuildResult, 'manifest' | 'seconds' | 'skipped'>> {
  const { out, stage } = ctx;
  ctx.step('deduplicating');
  const d = await dedupe(stage);
  ctx.log(`iso: ${d.linked} identical files hard-linked (${(d.savedBytes / 1e6).toFixed(1)} MB saved)`);
  await rm(ctx.templates, { recursive: true, force: true });
  await normalize(stage, ctx.epoch);
  ctx.step(`initrd (lz4 -l -${ctx.level})`);
  const initrdPath = join(out, 'initrd.img');
  await initrd(stage, initrdPath, ctx.level);
  const kernelPath = join(out, 'kernel');
  await copyFile(kernel.vmlinuz, kernelPath);
  await chmod(kernelPath, 0o644);
  await writeFile(join(out, 'cmdline'), cmdline + '\n');
  ctx.step('iso');
  const iso = join(out, 'sealkit.iso');
  await isoHybrid({ kernel: kernelPath, initrd: initrdPath, cmdline, out: iso, work: out, epoch: ctx.epoch });
  await rm(join(out, 'iso-root'), { recursive: true, force: true });
  const sha256 = await sha256File(iso);
  await writeFile(`${iso}.sha256`, `${sha256}  ${basename(iso)}\n`);
  return { iso, kernel: kernelPath, initrd: initrdPath, cmdline, sha256, bytes: statSync(iso).size };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const opt = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  try {
    // make build: dist/ and the C helpers, as an ISO build makes them
    if (args.includes('--compile-only')) {
      compile(repoRoot, (l) => console.log(l));
      process.exit(0);
    }
    const fleet = fleetOptions(opt('--node'), opt('--hub'), opt('--bundle'));
    await build({
      out: opt('--out') ?? (fleet ? fleetIsoDir(repoRoot, fleet.node) : undefined),
      compile: args.includes('--no-compile') ? false : undefined,
      level: opt('--level') ? Number(opt('--level')) : undefined,
      testCase: opt('--test-case'),
      kernel: opt('--kernel'),
      fleet,
    });
  } catch (err) {
    console.error(`iso: ${(err as Error).message}`);
    process.exit(1);
  }
}

