import test from 'ava';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage } from './helpers/images.ts';
import { assertBuilt, sealkit, sealkitBin } from './helpers/cli.ts';
import { runReadme } from './helpers/readme.ts';

// sealkit ipe policy, run as the owner runs it (from another directory, on
// image archives): the digests are those fsverity-utils computes for the
// image's final files, and the signature is PKCS#7 that openssl verifies
// against the owner's certificate with the policy text inside.

const dir = mkdtempSync(join(tmpdir(), 'sealkit-cli-ipe-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function ownerCert(): { cert: string; key: string } {
  const c = { cert: join(dir, 'owner.pem'), key: join(dir, 'owner.key') };
  if (!existsSync(c.cert)) {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', c.key, '-out', c.cert, '-days', '2', '-subj', '/CN=sealkit owner', '-addext', 'extendedKeyUsage=codeSigning'], { stdio: 'ignore' });
  }
  return c;
}

test('the policy lists the fs-verity digest of every file of the images and is signed by the owner', async (t) => {
  if (!existsSync('/usr/bin/fsverity')) return t.fail('/usr/bin/fsverity is missing: run make deps');
  const big = randomBytes(300_000);
  // the second layer removes one file and replaces another: only the final files count
  const img = await buildImage({ layers: [{ 'bin/app': big, 'bin/gone': 'gone\n', 'etc/conf': 'v1\n' }, { 'bin/gone': null, 'etc/conf': 'v2\n' }] });
  const other = await buildImage({ name: 'sealkit/other', format: 'docker', layers: [{ 'usr/bin/tool': 'tool\n' }] });
  writeFileSync(join(dir, 'app.tar'), img.archive);
  writeFileSync(join(dir, 'other.tar'), other.archive);
  const { cert, key } = ownerCert();
  const out = join(dir, 'out');
  const r = await sealkit(['ipe', 'policy', 'app.tar', 'other.tar', '--serial', '70000', '--cert', cert, '--key', key, '--out', out], {}, { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`app.tar: sha256 ${img.sha256}, 2 files`));

  const expected = new Set<string>();
  for (const [name, content] of Object.entries({ ...img.files, ...other.files })) {
    const f = join(dir, `content-${name.replaceAll('/', '_')}`);
    writeFileSync(f, content);
    expected.add(execFileSync('fsverity', ['digest', '--compact', f]).toString().trim());
  }
  t.is(expected.size, 3);
  const text = readFileSync(join(out, 'ipe-policy.txt'), 'utf8');
  t.true(text.startsWith('policy_name=sealkit policy_version=0.1.4464\n'), text); // 70000 = 1·65536 + 4464
  t.deepEqual([...text.matchAll(/fsverity_digest=sha256:(\w+)/g)].map((m) => m[1]), [...expected].sort());

  // the kernel's own check is ipe-kernel-vm; here openssl verifies against the certificate
  const inner = execFileSync('openssl', ['smime', '-verify', '-inform', 'der', '-in', join(out, 'policy.p7b'), '-binary', '-CAfile', cert, '-purpose', 'any'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  t.is(inner, text);
});

test('missing serial, keys or archives are refused with what to give', async (t) => {
  const { cert, key } = ownerCert();
  const noSerial = await sealkit(['ipe', 'policy', 'x.tar', '--cert', cert, '--key', key], {}, { cwd: dir });
  t.not(noSerial.code, 0);
  t.regex(noSerial.stderr, /--serial N.*\[SEALKIT_BAD_REQUEST\]/);
  const noKey = await sealkit(['ipe', 'policy', 'x.tar', '--serial', '1'], {}, { cwd: dir });
  t.regex(noKey.stderr, /--cert CERT and --key KEY.*\[SEALKIT_BAD_REQUEST\]/);
  const missing = await sealkit(['ipe', 'policy', 'nothere.tar', '--serial', '1', '--cert', cert, '--key', key], {}, { cwd: dir });
  t.regex(missing.stderr, /nothere\.tar.*\[SEALKIT_BAD_REQUEST\]/);
});

test("the README's owner-key and policy commands, as written, enrol the owner in OVMF's db and sign a policy with it", async (t) => {
  assertBuilt();
  // an admin's directory: the image archive, and bin/sealkit as in a checkout
  const admin = join(dir, 'admin');
  mkdirSync(join(admin, 'bin'), { recursive: true });
  symlinkSync(sealkitBin, join(admin, 'bin', 'sealkit'));
  const img = await buildImage();
  writeFileSync(join(admin, 'app.tar'), img.archive);
  // each named literally: test/readme-commands finds the commands tests run by their literal text
  const ran = async (p: Promise<{ code: number | null; stderr: string }>) => {
    const r = await p;
    t.is(r.code, 0, r.stderr);
  };
  await ran(runReadme('openssl req -x509 -newkey rsa:2048 -nodes -keyout owner.key -out owner.pem -days 3650 -subj "/CN=sealkit owner" -addext extendedKeyUsage=codeSigning', { cwd: admin }));
  await ran(runReadme('virt-fw-vars --input /usr/share/OVMF/OVMF_VARS_4M.fd --output owner-vars.fd --add-db 5ea1c0de-0000-4000-8000-000000000014 owner.pem', { cwd: admin }));
  await ran(runReadme('bin/sealkit ipe policy app.tar --serial 2 --cert owner.pem --key owner.key --out ipe', { cwd: admin }));
  const db = execFileSync('virt-fw-vars', ['--input', join(admin, 'owner-vars.fd'), '--print', '--verbose'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  t.regex(db, /name=db [\s\S]*subject CN=sealkit owner/);
  const text = readFileSync(join(admin, 'ipe', 'ipe-policy.txt'), 'utf8');
  t.regex(text, /^policy_name=sealkit policy_version=0\.0\.2\n/);
  const inner = execFileSync('openssl', ['smime', '-verify', '-inform', 'der', '-in', join(admin, 'ipe', 'policy.p7b'), '-binary', '-CAfile', join(admin, 'owner.pem'), '-purpose', 'any'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  t.is(inner, text);
});
