import { runService, type ServiceContext } from '../lib/service.ts';
import { serve, pingAll } from '../lib/bus.ts';
import { envInt } from '../lib/config.ts';
import { subjects } from '../lib/subjects.ts';
import { snapshot, stopProbes } from './snapshot.ts';
import { serviceViews, pingRepliesIn } from './pids.ts';

const SNAPSHOT_MAX_AGE_MS = 30_000;

async function start(ctx: ServiceContext) {
  const { nc, events, node, log } = ctx;
  const buildManifest = process.env.SEALKIT_BUILD_MANIFEST ?? '/etc/sealkit/build-manifest.json';
  const take = async () => ({ node, ...(await snapshot({ buildManifest })) });

  // systeminformation spawns several programs per snapshot, which on a
  // starved node (QEMU TCG) takes longer than a requester waits: answer from
  // the latest snapshot, taken at start and again in the background once it
  // is older than SNAPSHOT_MAX_AGE_MS when asked.
  let latest = { takenAt: new Date().toISOString(), ...(await take()) };
  let refreshing: Promise<void> | null = null;
  const refresh = () => {
    if (refreshing || Date.now() - Date.parse(latest.takenAt) < SNAPSHOT_MAX_AGE_MS) return;
    const takenAt = new Date().toISOString();
    refreshing = take()
      .then((s) => void (latest = { takenAt, ...s }), (err) => log.warn('node snapshot failed; answering with the previous one', { err: err as Error }))
      .finally(() => (refreshing = null));
  };

  // A request also lists the services with host pids: those it names
  // ({services: [ping replies]}, as "sealkit status" sends what answered it),
  // else those answering a ping now.
  serve(nc, subjects.node.infoGet, async (msg) => {
    refresh();
    const asked = pingRepliesIn(msg.data);
    return { ...latest, services: await serviceViews(asked ?? (await pingAll(nc, 1000))) };
  }, { log });
  await events.publish(subjects.node.info, latest);

  // The heartbeat lists the services that answered a ping just now.
  const everyMs = envInt('SEALKIT_HEARTBEAT_SEC', 10) * 1000;
  const beat = async () => {
    try {
      const alive = await pingAll(nc, 1000); // a busy service on a slow node is late, not dead
      events.emit(subjects.node.heartbeat, { node, services: await serviceViews(alive) });
    } catch (err) {
      log.warn('heartbeat failed', { err: err as Error });
    }
  };
  void beat();
  const timer = setInterval(() => void beat(), everyMs);
  return {
    stop: async () => {
      clearInterval(timer);
      stopProbes();
      await refreshing?.catch(() => {});
    },
  };
}

await runService('nodeinfo', start);
