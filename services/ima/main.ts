import { decode, serve } from '../lib/bus.ts';
import { runService } from '../lib/service.ts';
import { PolicyFollower } from '../lib/policy-follow.ts';
import { readTrust } from '../lib/sign.ts';
import { trustPath } from '../lib/config.ts';
import { defaultLimits } from '../lib/policy.ts';
import { subjects } from '../lib/subjects.ts';
import { SealkitError, asSealkitError } from '../lib/errors.ts';
import { Ima, type ImportedImage } from './ima.ts';
import { HashPool } from './hashpool.ts';
import { loadOrCreateManifestKey } from './keys.ts';
import { loadOrCreateSigningKey, type SigningKey } from './digsig.ts';
import { probeKernel, select, type Selected } from './enforcement/select.ts';
import { readRecord } from './hostpolicy.ts';
import { storeLayout } from '../lib/rootfs/store.ts';
import { consumeImported, ensureConsumer } from './consume.ts';

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
  const announce = async () => {
    selected = await selectNow();
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
  await announce();
  follower.onChange(async (p, prev) => {
    ima.rearm();
    if (p.ima.mode !== prev?.ima.mode) await announce();
  });

  serve(nc, subjects.ima.verify, async (msg) => {
    const req = decode<{ container?: unknown }>(msg.data, 'ima.verify request');
    if (typeof req?.container !== 'string') throw new SealkitError('SEALKIT_BAD_REQUEST', 'ima.verify needs {container: "<name>"}; ask ima.status for the labelled containers');
    return ima.verify(req.container);
  }, { log });
  serve(nc, subjects.ima.status, () => ({
    enforcement: selected.report,
    policyMode: follower.policy?.ima.mode ?? null,
    store,
    containers: ima.list().map((m) => ({ container: m.container, image: m.image, rootfs: m.rootfs, files: Object.keys(m.files).length, policySerial: m.policySerial })),
  }), { log });

  await ensureConsumer(nc).catch((err) => log.warn('cannot create the image.imported consumer yet; retrying in the loop', { err: err as Error }));
  const loop = consumeImported(nc, log, async (msg) => {
    let ev: ImportedImage;
    let id: string | undefined;
    try {
      const cloud = decode<{ id?: unknown; data: ImportedImage }>(msg.data, 'image.imported event');
      ev = cloud.data;
      id = typeof cloud.id === 'string' ? cloud.id : undefined;
      if (!ev || typeof ev.name !== 'string' || typeof ev.tag !== 'string' || !ev.archive || typeof ev.archive.path !== 'string') throw new Error('missing name, tag or archive.path');
    } catch (err) {
      log.error('image.imported event is malformed; dropping it', { err: err as Error });
      return true;
    }
    const policy = follower.policy;
    try {
      await ima.label(ev, policy?.limits ?? defaultLimits, id);
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
      const failed = { image: { name: ev.name, tag: ev.tag, digest: ev.sha256 }, code: e.code, reason: e.message, policySerial: ev.policySerial };
      await events.publish(subjects.ima.labelFailed, failed, { id: id ? `${id}.label_failed` : undefined, headers: { 'Sealkit-Image': `${ev.name}:${ev.tag}` } });
    }
    return true;
  });

  return {
    async stop() {
      await loop.stop();
      await ima.stop();
      await pool.close();
    },
  };
});
