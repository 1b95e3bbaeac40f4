import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stateDir } from '../lib/config.ts';
import { nodeName } from '../lib/envelope.ts';
import { asSealkitError } from '../lib/errors.ts';
import { probeKernel } from './detect.ts';
import { bootId, composeHostPolicy, readRecord, storeFilesystem, writeHostPolicy, writeRecord } from './hostpolicy.ts';
import { loadOrCreateSigningKey } from './digsig.ts';

// Onboot step: compose and write the host IMA policy once, before any
// container starts. Prints one JSON line saying what it did; exits 0 when
// there is nothing to do (no IMA, no ima_appraise=enforce, already written),
// 1 when the policy could not be written.
//
//   node --import tsx services/ima/boot.ts [--store DIR] [--fsuuid UUID] [--overlay] [--signatures] [--fsmagic] [--dry-run]
//     [--securityfs /sys/kernel/security] [--cmdline /proc/cmdline]

const run = promisify(execFile);
const { values: args } = parseArgs({
  options: {
    store: { type: 'string' },
    signatures: { type: 'boolean', default: process.env.SEALKIT_IMA_SIGNATURES === '1' },
    fsmagic: { type: 'boolean', default: false },
    fsuuid: { type: 'string' }, // the store's UUID when this namespace cannot see its block device
    overlay: { type: 'boolean', default: false },
    'dry-run': { type: 'boolean', default: false },
    securityfs: { type: 'string', default: '/sys/kernel/security' },
    cmdline: { type: 'string', default: '/proc/cmdline' },
  },
});

const say = (rec: Record<string, unknown>) => process.stdout.write(JSON.stringify({ service: 'ima-boot', ...rec }) + '\n');

try {
  const imaDir = join(stateDir(), 'ima');
  const store = args.store ?? process.env.SEALKIT_CONTAINER_STORE ?? join(stateDir(), 'containers');
  await mkdir(store, { recursive: true });
  await mkdir(imaDir, { recursive: true });
  const kernel = await probeKernel({ securityfs: args.securityfs, cmdline: args.cmdline });
  const done = await readRecord(imaDir);
  if (done) {
    say({ written: false, mode: 'host-policy', why: 'the host policy was already written this boot', policy: done.lines, kernel });
    process.exit(0);
  }
  if (kernel.namespaces) {
    say({ written: false, mode: 'namespace', why: 'IMA namespaces are available: policies are written per container', kernel });
    process.exit(0);
  }
  if (!kernel.ima || kernel.appraise !== 'enforce') {
    say({ written: false, mode: 'userspace', why: kernel.ima ? `ima_appraise is ${kernel.appraise ?? 'not set'}, not enforce` : 'no IMA in securityfs', kernel });
    process.exit(0);
  }
  const fs = await storeFilesystem(store);
  if (args.fsuuid) fs.uuid = args.fsuuid.toLowerCase();
  const lines = composeHostPolicy(fs, { signatures: args.signatures, fsmagic: args.fsmagic, overlay: args.overlay });
  if (args['dry-run']) {
    say({ written: false, mode: 'host-policy', why: 'dry run', policy: lines, store, fs, kernel });
    process.exit(0);
  }
  if (!kernel.policyWritable) {
    say({ written: false, mode: 'userspace', why: 'the policy of this boot was already written by something else; reboot to apply the sealkit policy', kernel });
    process.exit(1);
  }
  if (args.signatures) {
    // the kernel (no CONFIG_INTEGRITY_TRUSTED_KEYRING) finds _ima by name
    const key = await loadOrCreateSigningKey(imaDir, nodeName());
    const ring = await run('keyctl', ['search', '@u', 'keyring', '_ima']).then((r) => r.stdout.trim(), async () => (await run('keyctl', ['newring', '_ima', '@u'])).stdout.trim());
    await run('sh', ['-c', `keyctl padd asymmetric '' ${ring} < '${key.certDer}'`]);
  }
  await writeHostPolicy(join(args.securityfs, 'ima', 'policy'), lines);
  await writeRecord(imaDir, { bootId: await bootId(), lines, writtenAt: new Date().toISOString(), store });
  say({ written: true, mode: 'host-policy', policy: lines, store, fs, kernel });
} catch (err) {
  const e = asSealkitError(err);
  say({ written: false, error: e.toWire() });
  process.exit(1);
}
