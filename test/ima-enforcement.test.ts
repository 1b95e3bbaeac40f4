import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseEnforcement, probeKernel } from '../services/ima/enforcement/select.ts';
import { composeHostPolicy, readRecord } from '../services/ima/hostpolicy.ts';
import { isSealkitError } from '../services/lib/errors.ts';
import { repoRoot } from '../services/lib/config.ts';

// Which enforcement the kernel offers, and the boot step that writes the
// one host policy of a boot. Kernel interfaces are read from a securityfs
// tree and a command line given as paths; the real host (no securityfs IMA)
// is checked too.

const dir = mkdtempSync(join(tmpdir(), 'sealkit-ima-enf-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function kernelTree(name: string, o: { ima?: boolean; namespaces?: boolean; policy?: boolean; cmdline?: string }) {
  const sfs = join(dir, name, 'securityfs');
  mkdirSync(sfs, { recursive: true });
  if (o.ima) mkdirSync(join(sfs, 'ima'));
  if (o.namespaces) writeFileSync(join(sfs, 'ima', 'namespaces'), '');
  if (o.policy) writeFileSync(join(sfs, 'ima', 'policy'), '');
  const cmdline = join(dir, name, 'cmdline');
  writeFileSync(cmdline, o.cmdline ?? 'console=ttyS0 root=/dev/vda\n');
  return { securityfs: sfs, cmdline };
}

test('the best mechanism the kernel offers is chosen, and why is said', async (t) => {
  const none = await probeKernel(kernelTree('none', {}));
  t.deepEqual(none, { ima: false, appraise: null, namespaces: false, policyWritable: false, ipe: false, ipeEnforce: null, ipePolicy: null });
  t.is(chooseEnforcement(none, 'enforce', null).mode, 'userspace');
  t.is(chooseEnforcement(none, 'off', null).mode, 'off');

  const ns = await probeKernel(kernelTree('ns', { ima: true, namespaces: true, policy: true, cmdline: 'ima_appraise=enforce_ns' }));
  t.is(chooseEnforcement(ns, 'enforce', null).mode, 'namespace');

  const noAppraise = await probeKernel(kernelTree('log', { ima: true, policy: true, cmdline: 'quiet ima_appraise=log' }));
  t.is(noAppraise.appraise, 'log');
  t.is(chooseEnforcement(noAppraise, 'enforce', null).mode, 'userspace');

  const enforce = await probeKernel(kernelTree('enf', { ima: true, policy: true, cmdline: 'quiet ima_appraise=enforce console=ttyS0' }));
  t.like(enforce, { ima: true, appraise: 'enforce', policyWritable: true });
  const notYet = chooseEnforcement(enforce, 'enforce', null);
  t.is(notYet.mode, 'userspace');
  t.regex(notYet.why, /boot\.ts/);
  const host = chooseEnforcement(enforce, 'enforce', { lines: ['appraise fsuuid=x'] });
  t.is(host.mode, 'host-policy');
  t.regex(host.why, /appraise fsuuid=x/);
});

test('each choice says why in the words ima.enforcing has always used', async (t) => {
  const why = async (name: string, o: Parameters<typeof kernelTree>[1], written: { lines: string[] } | null = null, mode: 'enforce' | 'off' = 'enforce') =>
    chooseEnforcement(await probeKernel(kernelTree(`why-${name}`, o)), mode, written).why;
  t.is(await why('off', {}, null, 'off'), 'the node policy sets ima.mode: off');
  t.is(await why('ns', { ima: true, namespaces: true }), 'securityfs exposes ima/namespaces (no kernel in the tests has them): sealkit does not write per-container IMA policies yet, so labels are appraised in userspace as well');
  t.is(await why('none', {}), 'the kernel exposes no IMA in securityfs; files are re-hashed against the label manifests');
  t.is(await why('log', { ima: true, cmdline: 'ima_appraise=log' }), 'the kernel was booted with ima_appraise=log; files are re-hashed against the label manifests (boot with ima_appraise=enforce for kernel enforcement)');
  t.is(await why('unset', { ima: true }), 'the kernel was booted with no ima_appraise=enforce; files are re-hashed against the label manifests (boot with ima_appraise=enforce for kernel enforcement)');
  t.is(await why('host', { ima: true, policy: true, cmdline: 'ima_appraise=enforce' }, { lines: ['a', 'b'] }), 'the kernel appraises the container store under ima_appraise=enforce with the policy written at boot: a; b');
  t.is(await why('notyet', { ima: true, policy: true, cmdline: 'ima_appraise=enforce' }), 'ima_appraise=enforce is on but no host policy was written this boot; run services/ima/boot.ts before containers start');
  t.is(await why('used', { ima: true, cmdline: 'ima_appraise=enforce' }), 'ima_appraise=enforce is on but the one policy write of this boot was used by something other than sealkit; files are re-hashed against the label manifests');
});

test('the host policy appraises only the store filesystem, by UUID', (t) => {
  const fs = { uuid: '5ea1c0de-0000-4000-8000-000000000001', magic: 0xef53, dev: '254:1' };
  t.deepEqual(composeHostPolicy(fs, { signatures: false }), [
    'dont_appraise fsmagic=0x9fa0',
    'dont_appraise fsmagic=0x62656572',
    'dont_appraise fsmagic=0x73636673',
    'appraise fsuuid=5ea1c0de-0000-4000-8000-000000000001',
  ]);
  t.is(composeHostPolicy(fs, { signatures: true }).at(-1), 'appraise fsuuid=5ea1c0de-0000-4000-8000-000000000001 appraise_type=imasig');
  const noUuid = { ...fs, uuid: null };
  const err = t.throws(() => composeHostPolicy(noUuid, { signatures: false }));
  t.true(isSealkitError(err, 'SEALKIT_IMA_UNAVAILABLE'));
  t.is(composeHostPolicy(noUuid, { signatures: false, fsmagic: true }).at(-1), 'appraise fsmagic=0xef53');
});

function boot(state: string, args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(repoRoot, 'services/ima/boot.ts'), ...args], {
    cwd: repoRoot,
    env: { ...process.env, SEALKIT_STATE: state },
    encoding: 'utf8',
  });
  return { status: r.status, out: JSON.parse(r.stdout.trim().split('\n').at(-1) || '{}') as Record<string, any>, stderr: r.stderr };
}

test('boot.ts writes the policy once per boot and recognises it was written', async (t) => {
  const k = kernelTree('boot', { ima: true, policy: true, cmdline: 'ima_appraise=enforce' });
  const state = join(dir, 'boot', 'state');
  const store = join(dir, 'boot', 'containers');
  const args = ['--securityfs', k.securityfs, '--cmdline', k.cmdline, '--store', store, '--fsmagic'];
  const first = boot(state, args);
  t.is(first.status, 0, first.stderr);
  t.true(first.out.written);
  t.is(first.out.mode, 'host-policy');
  const written = readFileSync(join(k.securityfs, 'ima', 'policy'), 'utf8');
  t.is(written, first.out.policy.join('\n') + '\n');
  t.regex(written, /^appraise fsmagic=0x[0-9a-f]+$/m);
  t.truthy(await readRecord(join(state, 'ima')));

  // the kernel removes the file after the one write; the record says why
  rmSync(join(k.securityfs, 'ima', 'policy'));
  const second = boot(state, args);
  t.is(second.status, 0);
  t.false(second.out.written);
  t.regex(second.out.why, /already written this boot/);
  t.false(existsSync(join(k.securityfs, 'ima', 'policy')));
});

test('boot.ts on this host (no IMA appraisal) writes nothing and says userspace', (t) => {
  const r = boot(join(dir, 'host-state'), ['--store', join(dir, 'host-store')]);
  t.is(r.status, 0, r.stderr);
  t.false(r.out.written);
  t.is(r.out.mode, 'userspace');
});
