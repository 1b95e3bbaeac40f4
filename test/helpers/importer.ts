import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { startNats, type NatsServer } from './nats.ts';
import { startContainerd, type ContainerdServer } from './containerd.ts';
import { startService, type RunningService } from './service.ts';
import { EventLog } from './events.ts';
import { makeAdmin, policyYaml, putPolicy, type Admin } from './policy.ts';
import type { BuiltImage } from './images.ts';
import { EventPublisher } from '../../services/lib/outbox.ts';
import { silentLogger } from '../../services/lib/log.ts';
import { subjects } from '../../services/lib/subjects.ts';
import type { CloudEvent } from '../../services/lib/envelope.ts';
import type { VerifiedImage } from '../../services/lib/contract.ts';

// Everything an importer test needs, all real: nats-server with the project's
// users and streams, containerd on a temp dir, a signed policy in the KV
// bucket, the fetcher's cache on disk, and image.verified published by the
// fetcher's own bus user through the outbox, as the fetcher would.

export interface PolicyImage {
  img: BuiltImage;
  namespace?: string | false;
  docker?: boolean;
  sha256?: string; // pin something else than the archive
}

export interface ImportRig {
  nats: NatsServer;
  containerd: ContainerdServer;
  admin: Admin;
  adminNc: NatsConnection;
  events: EventLog; // image.* as an operator sees it
  importer?: RunningService;
  env: Record<string, string>;
  cachePath(img: BuiltImage): string;
  cache(img: BuiltImage, bytes?: Buffer): Promise<string>;
  setPolicy(images: PolicyImage[]): Promise<number>;
  verified(img: BuiltImage, over?: Partial<VerifiedImage>): Promise<CloudEvent<VerifiedImage>>;
  startImporter(env?: Record<string, string>): Promise<RunningService>;
  ctrImages(ns?: string): Promise<Array<{ ref: string; digest: string; labels: string }>>;
  cleanup(): Promise<void>;
}

export const NS = 'services.linuxkit';

export async function startImportRig(opts: { containerd?: ContainerdServer; env?: Record<string, string> } = {}): Promise<ImportRig> {
  const nats = await startNats();
  const containerd = opts.containerd ?? (await startContainerd());
  const admin = await makeAdmin(nats.stateDir);
  const adminNc = await nats.connectAs('admin');
  const fetcherNc = await nats.connectAs('fetcher');
  const fetcher = new EventPublisher({ nc: fetcherNc, service: 'fetcher', node: 'test', log: silentLogger });
  const events = new EventLog(adminNc, 'image.*');
  let serial = 0;
  const env = { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_CONTAINERD_SOCK: containerd.sock, ...opts.env };
  const cacheDir = join(nats.stateDir, 'fetcher', 'cache', 'sha256');

  const rig: ImportRig = {
    nats,
    containerd,
    admin,
    adminNc,
    events,
    env,
    cachePath: (img) => join(cacheDir, img.sha256),
    async cache(img, bytes = img.archive) {
      await mkdir(cacheDir, { recursive: true });
      await writeFile(rig.cachePath(img), bytes);
      return rig.cachePath(img);
    },
    async setPolicy(images) {
      serial++;
      const yaml = policyYaml({
        serial,
        images: images.map((p) => ({
          name: p.img.name,
          tag: p.img.tag,
          source: `https://images.example/${p.img.name}-${p.img.tag}.tar`,
          sha256: p.sha256 ?? p.img.sha256,
          import: { containerd: p.namespace === false ? false : { namespace: p.namespace ?? NS }, docker: p.docker ?? false },
        })),
      });
      await putPolicy(adminNc, yaml, admin.key);
      return serial;
    },
    async verified(img, over = {}) {
      const data: VerifiedImage = {
        name: img.name,
        tag: img.tag,
        source: `https://images.example/${img.name}-${img.tag}.tar`,
        sha256: img.sha256,
        size: img.size,
        policySerial: serial,
        manifestDigest: img.manifestDigest,
        format: img.format === 'oci' ? 'oci-archive' : 'docker-archive',
        compression: img.compression,
        archive: { path: rig.cachePath(img), sha256: img.sha256, size: img.size },
        signedBy: [],
        verifiers: [],
        ...over,
      };
      const ev = await fetcher.publish(subjects.image.verified, data, { subject: `${img.name}:${img.tag}` });
      if (!(await fetcher.flush(5000))) throw new Error('image.verified was not acknowledged by JetStream');
      return ev;
    },
    async startImporter(extra = {}) {
      rig.importer = await startService('importer', { ...env, ...extra });
      return rig.importer;
    },
    async ctrImages(ns = NS) {
      const out = await containerd.ctr(['images', 'ls'], ns);
      return out
        .split('\n')
        .slice(1)
        .map((l) => l.trim().split(/\s+/))
        .filter((t) => t.length > 3)
        .map((t) => ({ ref: t[0], digest: t[2], labels: t[t.length - 1] }));
    },
    async cleanup() {
      await rig.importer?.stop();
      events.close();
      fetcher.close();
      await fetcherNc.close();
      await adminNc.close();
      if (!opts.containerd) await containerd.cleanup();
      await nats.cleanup();
    },
  };
  return rig;
}

// The first image.imported / image.import_failed about one image after `since`.
export function outcomeOf(rig: ImportRig, img: BuiltImage, type: string, timeoutMs = 20_000): Promise<CloudEvent<any>> {
  return rig.events.wait((e) => e.type === type && e.data.name === img.name && e.data.sha256 === img.sha256, timeoutMs);
}

// What JetStream kept on a subject: what a durable consumer such as the ima
// service sees (core subscribers also see publishes the stream deduplicated).
export async function stored(nc: NatsConnection, subject: string): Promise<CloudEvent<any>[]> {
  const jsm = await nc.jetstreamManager();
  const info = await jsm.streams.info('SEALKIT_EVENTS');
  const out: CloudEvent<any>[] = [];
  if (info.state.messages === 0) return out;
  const c = await nc.jetstream().consumers.get('SEALKIT_EVENTS', { filterSubjects: subject });
  for (;;) {
    const m = await c.next({ expires: 1000 });
    if (!m) break;
    out.push(JSON.parse(Buffer.from(m.data).toString('utf8')) as CloudEvent<any>);
    if (m.info.pending === 0) break;
  }
  return out;
}
