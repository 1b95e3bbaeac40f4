import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stateDir } from '../lib/config.ts';
import { nodeName } from '../lib/envelope.ts';
import { asSealkitError } from '../lib/errors.ts';
import { storeLayout } from '../lib/rootfs/store.ts';
import { prepareAtBoot, probeKernel } from './enforcement/select.ts';
import { readRecord } from './hostpolicy.ts';

// Onboot step: prepare the enforcement the kernel offers before any
// container starts — on ima_appraise=enforce, compose and write the host IMA
// policy once. Prints one JSON line saying what it did; exits 0 when there is
// nothing to do (no IMA, no ima_appraise=enforce, already written), 1 when
// the policy could not be written.
//
//   node --import tsx services/ima/boot.ts [--store DIR] [--fsuuid UUID] [--overlay] [--signatures] [--fsmagic] [--dry-run]
//     [--securityfs /sys/kernel/security] [--cmdline /proc/cmdline]

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
  const store = args.store ?? storeLayout().store;
  await mkdir(store, { recursive: true });
  await mkdir(imaDir, { recursive: true });
  const { exitCode, line } = await prepareAtBoot({
    kernel: await probeKernel({ securityfs: args.securityfs, cmdline: args.cmdline }),
    hostPolicy: await readRecord(imaDir),
    imaDir,
    store,
    node: nodeName(),
    securityfs: args.securityfs,
    signatures: args.signatures,
    fsmagic: args.fsmagic,
    fsuuid: args.fsuuid,
    overlay: args.overlay,
    dryRun: args['dry-run'],
  });
  say(line);
  process.exit(exitCode);
} catch (err) {
  const e = asSealkitError(err);
  say({ written: false, error: e.toWire() });
  process.exit(1);
}
