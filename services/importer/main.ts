import { join } from 'node:path';
import { runService, type ServiceContext } from '../lib/service.ts';
import { parseEvent } from '../lib/envelope.ts';
import { asSealkitError } from '../lib/errors.ts';
import { streams, subjects } from '../lib/subjects.ts';
import { checkData, contract, type VerifiedImage } from '../lib/contract.ts';
import { PolicyFollower } from '../lib/policy-follow.ts';
import { readTrust } from '../lib/sign.ts';
import { envInt, trustPath } from '../lib/config.ts';
import type { Policy } from '../lib/policy.ts';
import { consumeDurable, type Consuming, type DurableSpec } from '../lib/consumer.ts';
import { Backoff } from '../lib/backoff.ts';
import { Containerd } from './ctr.ts';
import { DockerTarget } from './docker.ts';
import { Importer, type Outcome } from './importer.ts';
import { Journal } from './journal.ts';
import { DockerTags } from './dockertags.ts';
import { collectContainerd, collectDocker, type Removed } from './collect.ts';
import { CollectSchedule, collectGraceMs, takingTurns } from '../lib/collect.ts';
import { createHash } from 'node:crypto';

// Environment:
//   SEALKIT_CONTAINERD_SOCK  containerd's socket (default /run/containerd/containerd.sock)
//   SEALKIT_DOCKER_SOCK      Docker's socket; unset means images are not imported into Docker
//   SEALKIT_FETCHER_CACHE    the fetcher's cache (default <state>/fetcher/cache)
//   SEALKIT_IMPORTER_ACK_WAIT_MS  JetStream ack wait (default 60000); a long import keeps its message alive
//   SEALKIT_COLLECT_GRACE_MS  delay before images the policy no longer names are removed (default 60000)
const DEFAULT_NAMESPACE = 'services.linuxkit';

// image.verified through the durable "importer". More than one message may be
// outstanding, so one held by a killed instance (redelivered after ack_wait,
// recognised from the journal) blocks nothing.
const verified: DurableSpec = {
  stream: streams.events.name,
  durable: 'importer',
  filterSubject: subjects.image.verified,
  ackWaitMs: envInt('SEALKIT_IMPORTER_ACK_WAIT_MS', 60_000),
  maxAckPending: 64,
};

async function start(ctx: ServiceContext) {
  const { log, nc, events, root, state } = ctx;
  const policy = new PolicyFollower(nc, await readTrust(trustPath(root)), log.child({ concern: 'policy' }));
  await policy.start();
  const containerd = new Containerd(process.env.SEALKIT_CONTAINERD_SOCK ?? '/run/containerd/containerd.sock');
  const dockerSock = process.env.SEALKIT_DOCKER_SOCK;
  const docker = dockerSock ? new DockerTarget(dockerSock) : undefined;
  const dockerTags = new DockerTags(join(state, 'docker-tags.json'));
  await dockerTags.load();
  const importer = new Importer({
    containerd,
    docker,
    dockerTags,
    cacheDir: process.env.SEALKIT_FETCHER_CACHE ?? join(root, 'fetcher', 'cache'),
    log,
  });
  const journal = new Journal(join(state, 'journal'));
  await journal.init();
  await journal.prune();

  const namespaces = () => [DEFAULT_NAMESPACE, ...(policy.policy?.images ?? []).flatMap((i) => (i.import.containerd ? [i.import.containerd.namespace] : []))];
  try {
    await importer.cleanStaging(namespaces());
  } catch (err) {
    log.warn('could not clean staging images at start; each import cleans its own', { err: err as Error });
  }

  // The policy to judge an event by: at least as new as the one it was verified under.
  const policyFor = async (serial: number): Promise<Policy | null> => {
    if (!policy.policy || policy.policy.serial < serial) await policy.refresh();
    return policy.policy;
  };

  const publish = async (eventId: string, outcome: Outcome) => {
    if (outcome.imported) {
      const d = outcome.imported;
      await events.publish(subjects.image.imported, d, { id: `${eventId}.imported`, subject: `${d.name}:${d.tag}`, headers: { 'Sealkit-Image': `${d.name}:${d.tag}` } });
    }
    for (const f of outcome.failures) {
      await events.publish(subjects.image.importFailed, f, { id: `${eventId}.import_failed.${f.runtime}`, subject: `${f.name}:${f.tag}`, headers: { 'Sealkit-Image': `${f.name}:${f.tag}` } });
    }
  };

  const alone = takingTurns();

  const collect = async (p: Policy) => {
    // what was imported before the sealkit.image label and the Docker tag record is known by the journal
    const journaled = (await journal.list()).map((e) => e.image).filter((i) => i && typeof i.sha256 === 'string');
    const known = (sha256: string) => journaled.filter((i) => i.sha256 === sha256);
    const report = async (r: Removed) => {
      const ref = `${r.image.name}:${r.image.tag}`;
      log.info('collected: an image the policy no longer names', { kind: r.kind, image: ref, sha256: r.image.digest, where: r.where, serial: p.serial });
      const id = `collected-${r.kind}-${createHash('sha256').update(JSON.stringify([r.where, r.image.digest, p.serial])).digest('hex').slice(0, 32)}`;
      await events.publish(subjects.image.collected, { ...r, policySerial: p.serial }, { id, subject: ref, headers: { 'Sealkit-Image': ref } });
    };
    await collectContainerd(containerd, p, known, report);
    if (docker) {
      try {
        await collectDocker(docker, p, dockerTags.map, known, report);
      } finally {
        await dockerTags.save();
      }
    }
    return { kept: 0 };
  };
  const collection = new CollectSchedule({ graceMs: collectGraceMs(), policy: () => policy.policy, collect, turn: alone, log });
  policy.onChange(() => collection.soon());
  collection.soon();

  // Import one verified image to completion; false when stopped first.
  const handle = async (eventId: string, image: VerifiedImage, stopping: AbortSignal): Promise<boolean> => {
    const seen = await journal.get(eventId);
    if (seen?.state === 'done') {
      log.info('image.verified already handled; acknowledging it again', { eventId, image: `${image?.name}:${image?.tag}` });
      return true;
    }
    if (!seen) await journal.begin(eventId, image);
    const backoff = new Backoff({ firstMs: 500, maxMs: 10_000, signal: stopping });
    let warned = false;
    for (;;) {
      if (stopping.aborted) return false;
      let outcome: Outcome | undefined;
      const current = await policyFor(image?.policySerial ?? 0);
      if (!current) {
        if (!warned) log.warn('no verified policy readable yet; waiting before judging image.verified', { eventId });
        warned = true;
      } else {
        try {
          outcome = await alone(() => importer.importImage(image, current));
        } catch (err) {
          const e = asSealkitError(err);
          if (e.code !== 'SEALKIT_UNAVAILABLE') {
            log.error('import failed unexpectedly', { err: e });
            outcome = { failures: [{ name: image.name, tag: image.tag, sha256: image.sha256, code: e.code, reason: e.message, runtime: 'none' }] };
          } else {
            log.warn('runtime unavailable; retrying the import', { code: e.code, reason: e.message, backoffMs: backoff.delayMs });
          }
        }
      }
      if (outcome) {
        await publish(eventId, outcome);
        await journal.done(eventId);
        return true;
      }
      await backoff.wait();
    }
  };

  const stopping = new AbortController();
  let loop: Consuming | undefined;
  // in the background, so that SIGTERM is handled even while containerd is away
  const work = (async () => {
    // finish what a previous run left in flight before taking new work
    for (const e of await journal.list()) {
      if (stopping.signal.aborted) return;
      if (e.state !== 'importing') continue;
      log.info('resuming an interrupted import', { eventId: e.eventId, image: `${e.image?.name}:${e.image?.tag}` });
      await handle(e.eventId, e.image, stopping.signal);
    }
    if (stopping.signal.aborted) return;
    loop = consumeDurable(nc, verified, log, async (msg, consumerStopping) => {
      let ev;
      try {
        ev = parseEvent(msg.data);
      } catch (err) {
        log.error('dropping a message on image.verified that is not a CloudEvent', { seq: msg.seq, err: err as Error });
        return true;
      }
      let image: VerifiedImage;
      try {
        image = checkData(contract.image.verified, ev.data);
      } catch (err) {
        // refused as any image the importer will not import: on image.import_failed
        const e = asSealkitError(err);
        const d = (ev.data ?? {}) as Record<string, unknown>;
        const str = (v: unknown) => (typeof v === 'string' ? v : '');
        log.error('image.verified is malformed; not importing', { eventId: ev.id, err: e });
        await publish(ev.id, { failures: [{ name: str(d.name), tag: str(d.tag), sha256: str(d.sha256), code: e.code, reason: e.message, runtime: 'none' }] });
        return true;
      }
      return handle(ev.id, image, consumerStopping);
    });
  })().catch((err) => {
    // a local fault (journal on a full disk…): stop cleanly, the supervisor restarts us
    log.error('the importer cannot go on; stopping', { err: err as Error });
    process.kill(process.pid, 'SIGTERM');
  });

  return {
    async stop() {
      stopping.abort();
      await collection.stop();
      await work;
      await loop?.stop();
    },
  };
}

await runService('importer', start);
