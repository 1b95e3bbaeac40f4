import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot } from '../iso/build.ts';
import { ensureIso, ensureTestCaseIso } from './helpers/qemu.ts';

// Test steps stay out of the node image: the production initrd carries no
// file of a test case (test/cases, test/pkg), nothing named *selftest*, and
// its rcS no hook that a kernel command line could switch on. The same
// listing finds the test case's files in the test case's own image.

interface Entry {
  path: string;
  mode: number;
  sha256?: string; // regular files
}

interface Initrd {
  entries: Entry[];
  text(path: string): string;
  data(path: string): Buffer;
}

// The initrd as iso/archive.ts writes it: an lz4-compressed (legacy frame) newc cpio. In
// newc, the data of hard-linked files travels with the last link only.
function readInitrd(initrd: string): Initrd {
  const raw = execFileSync('lz4', ['-dc', initrd], { maxBuffer: 2 * 1024 * 1024 * 1024 });
  const entries: Array<Entry & { ino: number }> = [];
  const byIno = new Map<number, string>();
  const dataOf = new Map<number, Buffer>();
  let off = 0;
  const align = (n: number) => (n + 3) & ~3;
  for (;;) {
    const magic = raw.toString('latin1', off, off + 6);
    if (magic !== '070701') throw new Error(`${initrd}: no newc header at byte ${off} (found "${magic}")`);
    const field = (i: number) => parseInt(raw.toString('latin1', off + 6 + i * 8, off + 14 + i * 8), 16);
    const [ino, mode, size, nameSize] = [field(0), field(1), field(6), field(11)];
    const name = raw.toString('utf8', off + 110, off + 110 + nameSize - 1);
    const dataAt = align(off + 110 + nameSize);
    if (name === 'TRAILER!!!') break;
    const data = raw.subarray(dataAt, dataAt + size);
    const isFile = (mode & 0o170000) === 0o100000;
    if (isFile && size > 0) {
      byIno.set(ino, createHash('sha256').update(data).digest('hex'));
      dataOf.set(ino, data);
    }
    entries.push({ path: name.replace(/^\.?\/?/, '/'), mode, ino, sha256: isFile ? '' : undefined });
    off = align(dataAt + size);
  }
  const empty = createHash('sha256').digest('hex');
  return {
    entries: entries.map(({ ino, ...e }) => (e.sha256 === undefined ? e : { ...e, sha256: byIno.get(ino) ?? empty })),
    data: (path) => {
      const e = entries.find((x) => x.path === path);
      if (!e) throw new Error(`${initrd} has no ${path}`);
      return dataOf.get(e.ino) ?? Buffer.alloc(0);
    },
    text(path) {
      return this.data(path).toString('utf8');
    },
  };
}

// sha256 of every non-empty file under the test-only folders
function testOnlyFiles(): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && statSync(p).size > 0) files.set(createHash('sha256').update(readFileSync(p)).digest('hex'), relative(repoRoot, p));
    }
  };
  for (const d of ['test/cases', 'test/pkg']) walk(join(repoRoot, d));
  return files;
}

interface Findings {
  testFiles: string[]; // "initrd path = repo file"
  selftestNames: string[];
  testBundles: string[];
}

function findTestSteps(entries: Entry[]): Findings {
  const hashes = testOnlyFiles();
  const cases = readdirSync(join(repoRoot, 'test', 'cases'));
  return {
    testFiles: entries.filter((e) => e.sha256 && hashes.has(e.sha256)).map((e) => `${e.path} = ${hashes.get(e.sha256!)}`),
    selftestNames: entries.filter((e) => /selftest/i.test(e.path)).map((e) => e.path),
    testBundles: entries
      .filter((e) => /^\/containers\/(onboot\/\d+-|services\/)[^/]+$/.test(e.path))
      .filter((e) => cases.some((c) => e.path.endsWith(`/${c}`) || e.path.endsWith(`-${c}`)))
      .map((e) => e.path),
  };
}

test('the production initrd carries no test-case file, no selftest and no selftest hook in rcS', async (t) => {
  t.timeout(20 * 60_000);
  const iso = await ensureIso((l) => t.log(l));
  const initrd = readInitrd(iso.initrd);
  const { entries } = initrd;
  t.log(`${entries.length} entries in ${iso.initrd}`);
  t.true(entries.some((e) => e.path === '/etc/init.d/rcS'), 'the listing reads the archive');
  t.true(entries.filter((e) => e.sha256 !== undefined).length > 1000, 'the listing finds the regular files');

  const found = findTestSteps(entries);
  t.deepEqual(found.testFiles, [], 'no file of test/cases or test/pkg');
  t.deepEqual(found.selftestNames, []);
  t.deepEqual(found.testBundles, [], 'no onboot or service bundle of a test case');

  const rcS = initrd.text('/etc/init.d/rcS');
  t.regex(rcS, /crun --root \/run\/crun run --bundle/, 'this is the real rcS');
  t.notRegex(rcS, /selftest|sealkit\.test/i, 'rcS has no switch that starts a test step');

  const manifest = JSON.parse(initrd.text('/etc/sealkit/build-manifest.json')) as { testCase?: string; inputs: Array<{ path: string }> };
  t.is(manifest.testCase, undefined);
  t.deepEqual(manifest.inputs.filter((i) => i.path.startsWith('test/')), [], 'no input of the node image comes from test/');
});

// The section names of a 64-bit little-endian ELF file (its section
// header table and the section of names it points to)
function elfSections(elf: Buffer): string[] {
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const [size, count, names] = [elf.readUInt16LE(0x3a), elf.readUInt16LE(0x3c), elf.readUInt16LE(0x3e)];
  const strtab = Number(elf.readBigUInt64LE(shoff + names * size + 0x18));
  return Array.from({ length: count }, (_, i) => {
    const at = strtab + elf.readUInt32LE(shoff + i * size);
    return elf.toString('latin1', at, elf.indexOf(0, at));
  });
}

// What the node holds in RAM and reads from the ISO at each boot: Node.js
// without its symbol tables, and of the production packages only what
// Node.js loads (iso/build.ts runtimeFile), every package still there.
test('the initrd carries a stripped Node.js and the production packages without types, maps, docs, tests or foreign prebuilds', async (t) => {
  t.timeout(20 * 60_000);
  const iso = await ensureIso((l) => t.log(l));
  const initrd = readInitrd(iso.initrd);
  const nodes = initrd.entries.filter((e) => e.path.endsWith('/usr/local/bin/node'));
  t.true(nodes.length > 0, 'the node base is in the image');
  t.is(new Set(nodes.map((e) => e.sha256)).size, 1, 'one Node.js, hard-linked into each rootfs');
  const elf = initrd.data(nodes[0].path);
  t.is(elf.subarray(0, 4).toString('latin1'), '\x7fELF');
  const sections = elfSections(elf);
  t.true(sections.includes('.text'), 'the section headers are read');
  t.false(sections.includes('.symtab'), 'no symbol table');
  t.deepEqual(sections.filter((s) => s.startsWith('.debug')), [], 'no debug sections');
  const host = readFileSync(execFileSync('sh', ['-c', 'readlink -f "$(command -v node)"'], { encoding: 'utf8' }).trim());
  t.log(`node: ${(elf.length / 1e6).toFixed(1)} MB in the image, ${(host.length / 1e6).toFixed(1)} MB on the build host`);

  const app = '/containers/services/policy/rootfs/opt/sealkit/node_modules/';
  const files = initrd.entries.filter((e) => e.path.startsWith(app) && e.sha256 !== undefined).map((e) => e.path.slice(app.length));
  const notRuntime = files.filter((f) => /\.([cm]?ts|map|md|c|cc|h|bare)$|(^|\/)(test|tests|docs|examples?|\.github)\/|(^|\/)prebuilds\/(?!linux-x64\/)|\/obj\.target\//.test(f));
  t.deepEqual(notRuntime, [], 'nothing Node.js does not load');
  const lock = JSON.parse(readFileSync(join(repoRoot, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean; optional?: boolean }> };
  const production = Object.entries(lock.packages).filter(([p, v]) => p.startsWith('node_modules/') && !v.dev && existsSync(join(repoRoot, p, 'package.json'))).map(([p]) => p.slice('node_modules/'.length));
  const missing = production.filter((p) => !files.includes(`${p}/package.json`));
  t.deepEqual(missing, [], 'every production package is there');
  t.true(files.includes('fs-xattr/build/Release/xattr.node'), 'a native addon keeps its .node');
  t.log(`${files.length} files of ${production.length} production packages`);
});

test('the same listing finds the test case in the test case image', async (t) => {
  t.timeout(20 * 60_000);
  const iso = await ensureTestCaseIso('ima-kernel', (l) => t.log(l));
  const initrd = readInitrd(iso.initrd);
  const found = findTestSteps(initrd.entries);
  t.deepEqual(found.testFiles, ['/check.sh = test/cases/ima-kernel/check.sh']);
  t.deepEqual(found.testBundles, ['/containers/onboot/000-ima-kernel'], 'merged in front of linuxkit.yml: the first onboot step');
  const manifest = JSON.parse(initrd.text('/etc/sealkit/build-manifest.json')) as { testCase?: string };
  t.is(manifest.testCase, 'ima-kernel');
});
