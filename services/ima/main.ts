import { decode, request, serve } from '../lib/bus.ts';
import { CollectSchedule, collectGraceMs, takingTurns } from '../lib/collect.ts';
import { runService } from '../lib/service.ts';
import { PolicyFollower } from '../lib/policy-follow.ts';
import { readTrust } from '../lib/sign.ts';
import { envInt, trustPath } from '../lib/config.ts';
import { defaultLimits } from '../lib/policy.ts';
import { streams, subjects } from '../lib/subjects.ts';
import { consumeDurable, type DurableSpec } from '../lib/consumer.ts';
import { SealkitError, asSealkitError } from '../lib/errors.ts';
import { checkEvent, checkReply, contract, type ImportedImage, type LabelFailed } from '../lib/contract.ts';
import { parseEvent } from '../lib/envelope.ts';
import { Ima, type InUse } from './ima.ts';
import { HashPool } from './hashpool.ts';
import { loadOrCreateManifestKey } from './keys.ts';
import { loadOrCreateSigningKey, type SigningKey } from './digsig.ts';
import { probeKernel, select, type Selected } from './enforcement/select.ts';
import { readRecord } from './hostpolicy.ts';
import { ipeTamper } from './enforcement/ipe-tamper.ts';
import { applyIpePolicy, ipePolicyFile } from './enforcement/ipe-verity.ts';
import { exists, securityfsOf } from './enforcement/enforcement.ts';
import { writeFileAtomic } from '../lib/atomic.ts';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { storeLayout } from '../lib/rootfs/store.ts';

// image.imported through the durable "ima": what is imported while this
// service is down waits in the stream. One image at a time.
const imported: DurableSpec = {
  stream: streams.events.name,
  durable: 'ima',
  filterSubject: subjects.image.imported,
  ackWaitMs: envInt('SEALKIT_IMA_ACK_WAIT_MS', 60_000),
  maxAckPending: 1,
};

// How long the runner has to say what runs before a rootfs is kept for the next collection.
const RUNNER_PS_TIMEOUT_MS = 3000;
const RUNNING = new Set(['starting', 'running', 'restarting']);

// The ima service: labels rootfs trees from imported images, reports the
// enforcement in use, appraises in userspace, answers ima.verify/ima.status.
await runService('ima', async ({ nc, events, log, state, root, node }) => {
  const { store } = storeLayout(root);
  const manifestKey = await loadOrCreateManifestKey(state, node);
  const follower = new PolicyFollower(nc, await readTrust(trustPath()), log.child({ concern: 'policy' }));
  await follower.start();
  let signing: Promise<SigningKey> | undefined;
  const signingKey = () => (signing ??= loadOrCreateSigningKey(state, node));
  const pool = new HashPool();

  const selectNow = async () => select({ kernel: await probeKernel(), hostPolicy: await readRecord(state) }, follower.policy?.ima.mode ?? 'enforce');
  let selected: Selected = await selectNow();
  // at start the kernel was just probed; after a mode change, probe again
  const announce = async (fresh = false) => {
    if (!fresh) selected = await selectNow();
    log.info('enforcement', { ...selected.report });
    await events.publish(subjects.ima.enforcing, selected.report);
  };

  const ima = new Ima({
    imaDir: state,
    store,
    log,
    publish: (s, d, o) => events.publish(s, d, o),
    manifestKey,
    pool,
    policy: () => follower.policy,
    signingKey,
    enforcement: () => selected.enforcement,
  });
  await ima.start();
  await announce(true);
  follower.onChange(async (p, prev) => {
    ima.rearm();
    if (p.ima.mode !== prev?.ima.mode) await announce();
  });

  // Turning IPE off or weakening it changes no file of a rootfs, so only a
  // look at the kernel's and firmware's state finds it: each kind once, and
  // ima.enforcing again, as the mechanism in force may have changed. Only
  // on a node the owner gave an IPE policy: elsewhere IPE is not the tier.
  const nodeReported = new Set<string>();
  const checkNode = async () => {
    if (!selected.report.kernel.ipe || !(await exists(ipePolicyFile(state)))) return;
    const found = await ipeTamper({ efivars: process.env.SEALKIT_EFIVARS, mountinfo: process.env.SEALKIT_HOST_MOUNTINFO });
    const fresh = found.filter((t) => !nodeReported.has(t.kind));
    for (const t of fresh) {
      nodeReported.add(t.kind);
      log.warn('tamper', { ...t });
      await events.publish(subjects.audit.tamper, t, { headers: { 'Sealkit-Mechanism': t.mechanism } });
    }
    if (fresh.length) await announce();
  };
  const nodeTimer = setInterval(() => void checkNode().catch((err) => log.error('IPE state check failed', { err: err as Error })), envInt('SEALKIT_IPE_CHECK_MS', 2000));
  await checkNode();

  serve(nc, subjects.ima.verify, async (msg) => {
    const req = decode<{ container?: unknown }>(msg.data, 'ima.verify request');
    if (typeof req?.container !== 'string') throw new SealkitError('SEALKIT_BAD_REQUEST', 'ima.verify needs {container: "<name>"}; ask ima.status for the labelled containers');
    return ima.verify(req.container);
  }, { log });
  // A policy update from the owner: applied now if the kernel takes it, and
  // kept (only then) for the boot step of the next boots.
  serve(nc, subjects.ima.ipe, async (msg) => {
    const req = decode<{ p7b?: unknown }>(msg.data, 'ima.ipe request');
    if (typeof req?.p7b !== 'string' || req.p7b === '') throw new SealkitError('SEALKIT_BAD_REQUEST', 'ima.ipe needs {p7b: "<base64 of the signed policy>"}; make it with sealkit ipe policy');
    if (!selected.report.kernel.ipe) throw new SealkitError('SEALKIT_IMA_UNAVAILABLE', `node ${node} runs a kernel without IPE (securityfs has no ipe/); boot Linux 6.12 or later for this tier`);
    const p7b = Buffer.from(req.p7b, 'base64');
    const applied = await applyIpePolicy(securityfsOf({}), store, p7b);
    const file = ipePolicyFile(state);
    await mkdir(dirname(file), { recursive: true });
    await writeFileAtomic(file, p7b, 0o600);
    await announce();
    return { ...applied, policy: file, enforcement: selected.report };
  }, { log });
  serve(nc, subjects.ima.status, () => ({
    enforcement: selected.report,
    policyMode: follower.policy?.ima.mode ?? null,
    store,
    containers: ima.list().map((m) => ({ container: m.container, image: m.image, rootfs: m.rootfs, files: Object.keys(m.files).length, policySerial: m.policySerial })),
  }), { log });

  // No runner answering means no runner, so nothing runs; a runner that does
  // not answer in time may be running anything.
  const inUse = async (): Promise<InUse> => {
    try {
      const ps = checkReply(contract.runner.ps, await request(nc, subjects.runner.ps, {}, { timeout: RUNNER_PS_TIMEOUT_MS }));
      return { known: true, images: new Set(ps.containers.filter((c) => RUNNING.has(c.state)).map((c) => `${c.image.name}:${c.image.tag}`)) };
    } catch (err) {
      const e = asSealkitError(err);
      if (e.code === 'SEALKIT_NO_RESPONDER') return { known: true, images: new Set() };
      return { known: false, why: `runner.ps: ${e.message}` };
    }
  };
  const alone = takingTurns();
  const collection = new CollectSchedule({ graceMs: collectGraceMs(), policy: () => follower.policy, collect: (p) => ima.collect(p, inUse), turn: alone, log });
  follower.onChange(() => collection.soon());
  collection.soon();

  const loop = consumeDurable(nc, imported, log, async (msg) => {
    let ev: ImportedImage;
    let id: string | undefined;
    try {
      const cloud = checkEvent(contract.image.imported, parseEvent(msg.data));
      ev = cloud.data;
      id = cloud.id;
    } catch (err) {
      log.error('image.imported event is malformed; dropping it', { err: err as Error });
      return true;
    }
    const policy = follower.policy;
    try {
      await alone(() => ima.label(ev, policy?.limits ?? defaultLimits, id));
    } catch (err) {
      const e = asSealkitError(err);
      if (e.code === 'SEALKIT_DISK_FULL') {
        // not the image's fault: redelivered (after a pause) until space is back
        log.error('labelling failed; retrying once space is back', { image: `${ev.name}:${ev.tag}`, code: e.code, err: e });
        return false;
      }
      // a definite refusal is reported and acked: redelivery would fail the
      // same way. The id follows image.imported's, so a redelivery before the
      // ack is stored once.
      log.error('labelling failed', { image: `${ev.name}:${ev.tag}`, err: e });
      const failed: LabelFailed = { image: { name: ev.name, tag: ev.tag, digest: ev.sha256 }, code: e.code, reason: e.message, policySerial: ev.policySerial };
      await events.publish(subjects.ima.labelFailed, failed, { id: id ? `${id}.label_failed` : undefined, headers: { 'Sealkit-Image': `${ev.name}:${ev.tag}` } });
    }
    return true;
  });

  return {
    async stop() {
      clearInterval(nodeTimer);
      await collection.stop();
      await loop.stop();
      await ima.stop();
      await pool.close();
    },
  };
});
