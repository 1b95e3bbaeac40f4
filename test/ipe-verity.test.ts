import test from 'ava';
import { execFileSync } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verityDigestOfFile } from '../services/ima/verity.ts';
import { composeIpePolicy, ipeVersion, parseIpePolicy, policyWriteError } from '../services/ima/ipe.ts';
import { makeIpeVerity, ipePolicyFile } from '../services/ima/enforcement/ipe-verity.ts';
import { ipeTamper, rootWritable, setupModeOf, SETUP_MODE_VAR } from '../services/ima/enforcement/ipe-tamper.ts';
import { MECHANISMS, probeKernel, select } from '../services/ima/enforcement/select.ts';
import { NO_KERNEL_IMA, type BootContext } from '../services/ima/enforcement/enforcement.ts';
import { HashPool } from '../services/ima/hashpool.ts';
import { isSealkitError } from '../services/lib/errors.ts';
import { runc12 } from './helpers/runc.ts';
import type { LabelManifest } from '../services/lib/manifest.ts';

// The pieces of the IPE + fs-verity tier that run without the 6.12 kernel:
// the fs-verity digest against fsverity-utils, the policy text, the errors
// the kernel's refusals become, and the choice of mechanism from a
// securityfs tree. test/ipe-kernel-vm.test.ts shows the kernel enforcing.

const dir = mkdtempSync(join(tmpdir(), 'sealkit-ipe-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

test('the fs-verity digest computed in TypeScript is the one fsverity-utils computes, byte for byte', async (t) => {
  if (!existsSync('/usr/bin/fsverity')) return t.fail('/usr/bin/fsverity is missing: run make deps');
  // empty, one partial block, exact blocks, one hash block full and one past
  // it (128 hashes fill a 4 KiB block), and three tree levels
  for (const size of [0, 1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 128 * 128 * 4096 + 4096 + 3]) {
    const f = join(dir, `data-${size}`);
    writeFileSync(f, randomBytes(size));
    const theirs = execFileSync('fsverity', ['digest', '--compact', '--hash-alg=sha256', '--block-size=4096', f]).toString().trim();
    t.is(await verityDigestOfFile(f), theirs, `size ${size}`);
  }
});

test('the policy allows execution only from the initramfs and of the listed digests, in the kernel grammar', (t) => {
  const a = 'a'.repeat(64);
  const b = 'b'.repeat(64);
  const text = composeIpePolicy({ serial: 7, digests: [b, a, b] });
  t.is(text, [
    'policy_name=sealkit policy_version=0.0.7',
    'DEFAULT action=ALLOW',
    'DEFAULT op=EXECUTE action=DENY',
    'op=EXECUTE boot_verified=TRUE action=ALLOW',
    `op=EXECUTE fsverity_digest=sha256:${a} action=ALLOW`,
    `op=EXECUTE fsverity_digest=sha256:${b} action=ALLOW`,
    '',
  ].join('\n'));
  t.deepEqual(parseIpePolicy(text), { name: 'sealkit', version: '0.0.7', digests: new Set([a, b]), signatureRule: false });
  t.true(parseIpePolicy(`${text}op=EXECUTE fsverity_signature=TRUE action=ALLOW\n`).signatureRule);
  const e = t.throws(() => composeIpePolicy({ serial: 1, digests: ['sha256:' + a] }));
  t.true(isSealkitError(e, 'SEALKIT_BAD_REQUEST'));
});

test('a higher serial is a higher policy_version, so the kernel rollback check is the serial check', (t) => {
  const tuple = (s: number) => ipeVersion(s).split('.').map(Number);
  const less = (x: number[], y: number[]) => x[0] < y[0] || (x[0] === y[0] && (x[1] < y[1] || (x[1] === y[1] && x[2] < y[2])));
  const serials = [0, 1, 65535, 65536, 65537, 2 ** 32 - 1, 2 ** 32, 2 ** 48 - 1];
  for (let i = 1; i < serials.length; i++) t.true(less(tuple(serials[i - 1]), tuple(serials[i])), `${serials[i - 1]} < ${serials[i]}`);
  t.is(ipeVersion(2 ** 48 - 1), '65535.65535.65535');
  for (const bad of [-1, 1.5, 2 ** 48]) t.true(isSealkitError(t.throws(() => ipeVersion(bad)), 'SEALKIT_BAD_REQUEST'));
});

test("the kernel's refusals of a policy write become coded errors", (t) => {
  const code = (errno: number) => policyWriteError(errno, '/sys/kernel/security/ipe/new_policy', 'the policy').code;
  t.is(code(constants.errno.ESTALE), 'SEALKIT_POLICY_ROLLBACK');
  t.is(code(126), 'SEALKIT_KEY_UNTRUSTED'); // ENOKEY
  t.is(code(constants.errno.EBADMSG), 'SEALKIT_SIGNATURE_INVALID');
  t.is(code(constants.errno.EINVAL), 'SEALKIT_IPE_POLICY_REFUSED');
});

function ipeTree(name: string, o: { enforce?: '0' | '1'; active?: boolean; text?: string; setupMode?: number; rootRw?: boolean }) {
  const base = join(dir, name);
  const securityfs = join(base, 'securityfs');
  const ipe = join(securityfs, 'ipe');
  mkdirSync(join(ipe, 'policies', 'sealkit'), { recursive: true });
  writeFileSync(join(ipe, 'enforce'), `${o.enforce ?? '1'}\n`);
  writeFileSync(join(ipe, 'new_policy'), '');
  const p = join(ipe, 'policies', 'sealkit');
  writeFileSync(join(p, 'active'), o.active === false ? '0\n' : '1\n');
  writeFileSync(join(p, 'version'), '0.0.7\n');
  writeFileSync(join(p, 'policy'), o.text ?? composeIpePolicy({ serial: 7, digests: [] }));
  writeFileSync(join(p, 'update'), '');
  const efivars = join(base, 'efivars');
  mkdirSync(efivars, { recursive: true });
  if (o.setupMode !== undefined) writeFileSync(join(efivars, SETUP_MODE_VAR), Buffer.from([6, 0, 0, 0, o.setupMode]));
  const mountinfo = join(base, 'mountinfo');
  writeFileSync(mountinfo, `22 1 0:2 / / ${o.rootRw ? 'rw' : 'ro'},relatime - rootfs rootfs rw\n30 22 0:25 / /sys rw,nosuid - sysfs sysfs rw\n`);
  return { securityfs, efivars, mountinfo };
}

test('IPE with the sealkit policy active is chosen first; permissive IPE or no policy says why and falls back', async (t) => {
  const facts = async (name: string, o: Parameters<typeof ipeTree>[1]) => ({ kernel: await probeKernel({ securityfs: ipeTree(name, o).securityfs, cmdline: '/nonexistent' }), hostPolicy: null });
  const on = await facts('on', {});
  t.like(on.kernel, { ipe: true, ipeEnforce: true, ipePolicy: '0.0.7' });
  const chosen = select(on, 'enforce');
  t.is(chosen.report.mode, 'ipe-verity');
  t.regex(chosen.report.why, /owner-signed policy "sealkit" version 0\.0\.7/);
  t.is(MECHANISMS[0], chosen.enforcement);

  const off = select(await facts('off', { enforce: '0' }), 'enforce').report;
  t.is(off.mode, 'userspace');
  t.regex(off.why, /permissive/);
  const none = select(await facts('none', { active: false }), 'enforce').report;
  t.is(none.mode, 'userspace');
  t.regex(none.why, /no sealkit policy is active/);
  t.is(select({ kernel: { ...NO_KERNEL_IMA }, hostPolicy: null }, 'enforce').report.why, 'the kernel exposes no IMA in securityfs; files are re-hashed against the label manifests');
});

test('IPE switched off, another policy active, a signature rule, Setup Mode firmware and a writable initramfs root are each tamper', async (t) => {
  const kinds = async (name: string, o: Parameters<typeof ipeTree>[1]) => (await ipeTamper(ipeTree(name, o))).map((x) => x.kind);
  t.deepEqual(await kinds('clean', { setupMode: 0 }), []);
  t.deepEqual(await kinds('enforce0', { enforce: '0' }), ['ipe-enforce-off']);
  t.deepEqual(await kinds('inactive', { active: false }), ['ipe-policy-inactive']);
  t.deepEqual(await kinds('sigrule', { text: `${composeIpePolicy({ serial: 7, digests: [] })}op=EXECUTE fsverity_signature=TRUE action=ALLOW\n` }), ['ipe-signature-rule']);
  t.deepEqual(await kinds('setup', { setupMode: 1 }), ['firmware-setup-mode']);
  t.deepEqual(await kinds('rootrw', { rootRw: true }), ['initramfs-root-writable']);
  const [one] = await ipeTamper(ipeTree('shape', { enforce: '0' }));
  t.like(one, { scope: 'node', mechanism: 'ipe-verity', action: 'reported' });
  // the bytes OVMF with only db enrolled gave under the 6.12 kernel (ipe-kernel-vm)
  t.true(setupModeOf(Buffer.from('0600000001', 'hex')));
  t.false(setupModeOf(Buffer.from('0600000000', 'hex')));
  t.is(rootWritable('1 0 0:1 / /sys rw - sysfs sysfs rw\n'), null);
});

test.serial('the boot step activates nothing with a runtime IPE refuses (runc 1.1, crun not on a read-only mount, one it cannot ask) or on a store without fs-verity, and says why with a code', async (t) => {
  const ipe = makeIpeVerity();
  const tree = ipeTree('boot', {});
  const imaDir = join(dir, 'boot-ima');
  const store = join(dir, 'boot-store');
  mkdirSync(store, { recursive: true });
  const ctx: BootContext = { kernel: await probeKernel({ securityfs: tree.securityfs, cmdline: '/nonexistent' }), hostPolicy: null, imaDir, store, node: 'n1', securityfs: tree.securityfs, signatures: false, fsmagic: false, overlay: false, dryRun: false };
  t.deepEqual(await ipe.prepareBoot({ ...ctx, kernel: { ...NO_KERNEL_IMA } }), { declined: 'securityfs has no ipe/' });
  const noPolicy = await ipe.prepareBoot(ctx);
  t.true('declined' in noPolicy && noPolicy.declined.includes(ipePolicyFile(imaDir)));
  mkdirSync(join(imaDir, 'ipe'), { recursive: true });
  writeFileSync(ipePolicyFile(imaDir), 'signed policy bytes');
  // this machine's runc is Debian's 1.1.5: it would be refused by IPE
  const refused = await ipe.prepareBoot(ctx);
  t.like(refused, { exitCode: 1, line: { written: false, error: { code: 'SEALKIT_IPE_RUNTIME', data: { version: '1.1.5' } } } });
  // a runc that cannot be asked is not known to be safe
  process.env.SEALKIT_RUNC = join(dir, 'no-runc-here');
  t.teardown(() => delete process.env.SEALKIT_RUNC);
  t.like(await ipe.prepareBoot(ctx), { exitCode: 1, line: { written: false, error: { code: 'SEALKIT_IPE_RUNTIME', data: { version: null } } } });
  // a runc 1.2 (none is packaged for Debian 12: a script answering as one)
  // passes; this machine's store (tmpfs or ext4 without verity) takes no fs-verity
  process.env.SEALKIT_RUNC = runc12(dir);
  const step = await ipe.prepareBoot(ctx);
  t.false('declined' in step);
  if ('declined' in step) return;
  t.is(step.exitCode, 1);
  t.like(step.line, { written: false, mode: 'ipe-verity', error: { code: 'SEALKIT_VERITY_FAILED' } });
  t.is(readFileSync(join(tree.securityfs, 'ipe/policies/sealkit/update'), 'utf8'), '', 'the policy was not written');

  // on the node, rcS says which runtime it set up (/run/sealkit/runtime.env)
  delete process.env.SEALKIT_RUNC;
  const runtimeEnv = join(dir, 'runtime.env');
  process.env.SEALKIT_RUNTIME_ENV = runtimeEnv;
  t.teardown(() => delete process.env.SEALKIT_RUNTIME_ENV);
  const missing = await ipe.prepareBoot(ctx);
  t.like(missing, { exitCode: 1, line: { written: false, error: { code: 'SEALKIT_IPE_RUNTIME', data: { version: null } } } });
  t.regex(JSON.stringify(missing), /runtime\.env.*cannot be read/);
  // what rcS writes where crun's binary did not end up on a read-only mount
  writeFileSync(runtimeEnv, 'SEALKIT_RUNTIME=/usr/bin/crun\nSEALKIT_RUNTIME_VERSION=1.8.1\nSEALKIT_RUNTIME_CLONE=memfd\n');
  t.like(await ipe.prepareBoot(ctx), { exitCode: 1, line: { written: false, error: { code: 'SEALKIT_IPE_RUNTIME', data: { runtime: '/usr/bin/crun', version: '1.8.1' } } } });
  // and where it did: the runtime passes; this machine's store still takes no fs-verity
  writeFileSync(runtimeEnv, 'SEALKIT_RUNTIME=/usr/bin/crun\nSEALKIT_RUNTIME_VERSION=1.8.1\nSEALKIT_RUNTIME_CLONE=none\n');
  t.like(await ipe.prepareBoot(ctx), { exitCode: 1, line: { written: false, error: { code: 'SEALKIT_VERITY_FAILED' } } });
  t.is(readFileSync(join(tree.securityfs, 'ipe/policies/sealkit/update'), 'utf8'), '', 'the policy was not written');
});

test('appraisal reports a rootfs file without fs-verity, after the content check', async (t) => {
  const root = join(dir, 'rootfs');
  mkdirSync(join(root, 'bin'), { recursive: true });
  writeFileSync(join(root, 'bin/app'), 'app\n');
  writeFileSync(join(root, 'bin/changed'), 'changed\n');
  const sha = (s: string) => createHash('sha256').update(s).digest('hex');
  const m = { rootfs: root, files: { 'bin/app': `sha256:${sha('app\n')}`, 'bin/changed': `sha256:${sha('original\n')}` } } as unknown as LabelManifest;
  const pool = new HashPool(1);
  t.teardown(() => pool.close());
  const ipe = makeIpeVerity(ipeTree('appraise', {}).securityfs);
  // the label is written; fs-verity is refused by this machine's filesystem
  const e = await t.throwsAsync(ipe.label(root, { 'bin/app': sha('app\n') }));
  t.true(isSealkitError(e, 'SEALKIT_VERITY_FAILED'));
  const findings = await ipe.appraise(m, pool);
  t.deepEqual(findings.map((f) => [f.file, f.kind]), [['bin/changed', 'modified'], ['bin/app', 'verity-missing']]);
});
