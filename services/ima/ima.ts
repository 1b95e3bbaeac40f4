import { chmod, lstat, mkdir, readdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createPublicKey } from 'node:crypto';
import { SealkitError, diskFull, isDiskFull } from '../lib/errors.ts';
import { sha256File, parseSha256 } from '../lib/digest.ts';
import { subjects } from '../lib/subjects.ts';
import type { Collected, ImportedImage, Labeled, Tamper } from '../lib/contract.ts';
import type { CollectRun } from '../lib/collect.ts';
import { imageProcess, readManifest, writeManifest, manifestFiles, type LabelManifest, MANIFEST_VERSION } from '../lib/manifest.ts';
import type { Logger } from '../lib/log.ts';
import type { Policy, Limits } from '../lib/policy.ts';
import type { PublicKey, SecretKeyFile } from '../lib/sign.ts';
import type { PublishOptions } from '../lib/outbox.ts';
import { commit, discardUnfinished, removeRootfs, stagingPath, unpackInto } from '../lib/rootfs/unpack.ts';
import { containerName, CONTAINER_NAME } from '../lib/rootfs/names.ts';
import { containerPaths, type StoreLayout } from '../lib/rootfs/store.ts';
import { HashPool } from './hashpool.ts';
import type { SigningKey } from './digsig.ts';
import type { Enforcement, Finding } from './enforcement/enforcement.ts';
import { userspace } from './enforcement/userspace.ts';
import { watchTree, type TreeWatch } from './watch.ts';

// The ima core: label a rootfs from each imported image, keep a signed label
// manifest for it, and appraise it in userspace — on request, on the policy's
// schedule and within moments of a change on disk.

// What labelling reads of image.imported: the verified archive (its format
// is read from its bytes), not where the runtimes hold the image.
export type LabelInput = Pick<ImportedImage, 'name' | 'tag' | 'sha256' | 'policySerial'> &
  Partial<Pick<ImportedImage, 'source' | 'manifestDigest'>> & { archive: Pick<ImportedImage['archive'], 'path' | 'sha256'> & Partial<ImportedImage['archive']> };

export interface ImaOptions {
  imaDir: string; // <state>/ima
  store: string; // container store: <store>/<container>/rootfs
  log: Logger;
  publish: (subject: string, data: unknown, opts?: PublishOptions) => Promise<unknown>;
  manifestKey: SecretKeyFile;
  pool: HashPool;
  policy: () => Policy | null;
  signingKey: () => Promise<SigningKey>;
  // the mechanism in force, which labels and appraises (userspace when not given)
  enforcement?: () => Enforcement;
  debounceMs?: number;
}

// Which images containers run from now (name:tag), or why that is unknown.
export type InUse = { known: true; images: Set<string> } | { known: false; why: string };

interface Watched {
  manifest: LabelManifest;
  watcher?: TreeWatch;
  pending: Set<string>;
  timer?: NodeJS.Timeout;
  running?: Promise<unknown>;
}

export class Ima {
  readonly manifests: string;
  private readonly layout: Pick<StoreLayout, 'store' | 'manifests'>;
  private readonly pub: PublicKey;
  private readonly containers = new Map<string, Watched>();
  private readonly reported = new Set<string>();
  private schedule?: NodeJS.Timeout;
  private scheduleMs = 0;

  constructor(private readonly o: ImaOptions) {
    this.manifests = join(o.imaDir, 'manifests');
    this.layout = { store: o.store, manifests: this.manifests };
    this.pub = { id: o.manifestKey.id, ed25519: o.manifestKey.ed25519 };
  }

  private get mode() {
    return this.o.policy()?.ima.mode ?? 'enforce';
  }

  private get enforcement(): Enforcement {
    return this.o.enforcement?.() ?? userspace;
  }

  // Pick up every container labelled before this start, and watch it.
  async start(): Promise<void> {
    await mkdir(this.manifests, { recursive: true });
    // unpacks and removals a killed run left unfinished
    for (const c of await readdir(this.o.store).catch(() => [] as string[])) {
      if (CONTAINER_NAME.test(c)) await discardUnfinished(containerPaths(this.layout, c).rootfs);
    }
    for (const f of (await readdir(this.manifests)).filter((n) => n.endsWith('.json') && !n.startsWith('.'))) {
      try {
        await this.track(await readManifest(join(this.manifests, f), this.pub));
      } catch (err) {
        this.o.log.error('label manifest refused; that container is not appraised until it is relabelled', { file: f, err: err as Error });
      }
    }
    this.rearm();
  }

  // Follow the policy's reverify interval.
  rearm(): void {
    const ms = this.o.policy()?.ima.reverifyMs ?? 10 * 60_000;
    if (this.schedule && ms === this.scheduleMs) return;
    clearInterval(this.schedule);
    this.scheduleMs = ms;
    this.schedule = setInterval(() => void this.verifyAll(), ms);
    this.schedule.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.schedule);
    for (const w of this.containers.values()) {
      w.watcher?.close();
      clearTimeout(w.timer);
      await w.running?.catch(() => {});
    }
  }

  list(): LabelManifest[] {
    return [...this.containers.values()].map((w) => w.manifest);
  }

  // image.imported → a labelled rootfs, a signed manifest, ima.labeled.
  // `eventId` (of the image.imported event) makes ima.labeled's id, so a
  // redelivered image.imported relabels but is stored as ima.labeled once.
  async label(ev: LabelInput, limits: Limits, eventId?: string): Promise<Labeled | null> {
    try {
      return await this.labelOnce(ev, limits, eventId);
    } catch (err) {
      throw isDiskFull(err) ? diskFull(this.o.store, `labelling ${ev.name}:${ev.tag} (the half-unpacked rootfs was removed; the previous one, if any, is untouched)`, err) : err;
    }
  }

  private async labelOnce(ev: LabelInput, limits: Limits, eventId?: string): Promise<Labeled | null> {
    if (this.mode === 'off') {
      this.o.log.info('ima.mode is off: not labelling', { image: `${ev.name}:${ev.tag}` });
      return null;
    }
    const t0 = Date.now();
    const digest = parseSha256(ev.sha256, `image.imported sha256 of ${ev.name}:${ev.tag}`);
    const what = `${ev.name}:${ev.tag} (sha256 ${digest.slice(0, 12)})`;
    // re-verify: the cache may have changed since the fetcher checked it
    const { sha256: actual } = await sha256File(ev.archive.path).catch((err: Error) => {
      throw new SealkitError('SEALKIT_CACHE_CORRUPT', `cannot read the archive of ${what} at ${ev.archive.path}: ${err.message}; fetch the image again`);
    });
    if (actual !== digest || parseSha256(ev.archive.sha256, 'archive.sha256') !== digest) {
      throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `archive of ${what} at ${ev.archive.path} hashes to ${actual}, expected ${digest}; nothing was unpacked — fetch the image again`, { expected: digest, actual });
    }
    const container = containerName(ev.name, ev.tag);
    const { dir, rootfs: dest } = containerPaths(this.layout, container);
    const again = await this.alreadyLabelled(ev, digest, container, dest, eventId, t0);
    if (again) return again;
    await mkdir(dir, { recursive: true });
    const previous = this.containers.get(container);
    previous?.watcher?.close();
    await discardUnfinished(dest);
    const staging = stagingPath(dest);
    let unpacked;
    try {
      unpacked = await unpackInto(ev.archive.path, staging, {
        limits: limits,
        what,
        manifestDigest: ev.manifestDigest ?? undefined,
        ref: { name: ev.name, tag: ev.tag },
      });
      const policy = this.o.policy();
      const signer = policy?.ima.signatures ? await this.o.signingKey() : undefined;
      await this.enforcement.label(staging, unpacked.files, { signer });
      await commit(staging, dest);
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      if (previous) void this.track(previous.manifest);
      throw err;
    }
    const manifest: LabelManifest = {
      version: MANIFEST_VERSION,
      image: { name: ev.name, tag: ev.tag, digest },
      container,
      rootfs: dest,
      policySerial: ev.policySerial,
      createdAt: new Date().toISOString(),
      files: manifestFiles(unpacked.files),
      process: imageProcess(unpacked.config),
    };
    await writeManifest(this.manifests, manifest, this.o.manifestKey);
    for (const k of [...this.reported]) if (k.startsWith(`${container}|`)) this.reported.delete(k);
    // ima.labeled promises a watched rootfs: a write right after it is seen
    await this.track(manifest);
    const labeled: Labeled = { image: manifest.image, container, rootfs: dest, files: Object.keys(unpacked.files).length, bytes: unpacked.bytes, ms: Date.now() - t0, policySerial: ev.policySerial };
    await this.o.publish(subjects.ima.labeled, labeled, { id: eventId ? `${eventId}.labeled` : undefined, headers: { 'Sealkit-Container': container, 'Sealkit-Image': `${ev.name}:${ev.tag}` } });
    this.o.log.info('labelled', { ...labeled });
    return labeled;
  }

  // The same image.imported again (a redelivery after a crash between
  // publish and ack): a rootfs labelled from it that still appraises clean
  // stays in place, under whatever runs from it; ima.labeled is published
  // again with the same id, which the stream stores once.
  private async alreadyLabelled(ev: LabelInput, digest: string, container: string, dest: string, eventId: string | undefined, t0: number): Promise<Labeled | null> {
    const m = this.containers.get(container)?.manifest;
    if (!m || m.image.digest !== digest || m.policySerial !== ev.policySerial || m.rootfs !== dest) return null;
    const signer = this.o.policy()?.ima.signatures ? createPublicKey((await this.o.signingKey()).key) : undefined;
    if ((await this.enforcement.appraise(m, this.o.pool, { signer })).length) return null; // relabelled from the archive
    let bytes = 0;
    for (const f of Object.keys(m.files)) bytes += (await lstat(join(dest, f))).size;
    const labeled: Labeled = { image: m.image, container, rootfs: dest, files: Object.keys(m.files).length, bytes, ms: Date.now() - t0, policySerial: ev.policySerial };
    await this.o.publish(subjects.ima.labeled, labeled, { id: eventId ? `${eventId}.labeled` : undefined, headers: { 'Sealkit-Container': container, 'Sealkit-Image': `${ev.name}:${ev.tag}` } });
    this.o.log.info('already labelled from this image and intact; not unpacking again', { ...labeled });
    return labeled;
  }

  // Labelled rootfs trees of images the policy in force no longer names
  // (by name and tag: a new digest of a named image replaces its tree when
  // it is labelled, never before), unless a container still runs from one.
  // Each goes in an order a crash cannot spoil: no longer watched, the tree
  // renamed out of the way and removed, then its manifest (the record that
  // brings a half-removed tree back to the next run), then its directory;
  // the event says so once all of it is gone.
  async collect(policy: Policy, inUse: () => Promise<InUse>): Promise<CollectRun> {
    const named = new Set(policy.images.map((i) => `${i.name}:${i.tag}`));
    const gone = [...this.containers.values()].filter((w) => !named.has(`${w.manifest.image.name}:${w.manifest.image.tag}`));
    if (gone.length === 0) return { kept: 0 };
    const using = await inUse();
    let kept = 0;
    for (const w of gone) {
      const m = w.manifest;
      const image = `${m.image.name}:${m.image.tag}`;
      if (!using.known || using.images.has(image)) {
        kept++;
        this.o.log.info('not collected yet: the rootfs of an image the policy no longer names', { container: m.container, image, why: using.known ? 'a container still runs from it' : using.why, serial: policy.serial });
        continue;
      }
      await this.collectOne(w, policy.serial);
    }
    return { kept };
  }

  private async collectOne(w: Watched, serial: number): Promise<void> {
    const m = w.manifest;
    w.watcher?.close();
    clearTimeout(w.timer);
    await w.running?.catch(() => {});
    this.containers.delete(m.container);
    const paths = containerPaths(this.layout, m.container);
    const where = [paths.manifest];
    let bytes = 0;
    try {
      // a manifest signed here names its tree; a tree outside the store (moved since) is left alone
      if (m.rootfs === paths.rootfs) {
        for (const f of Object.keys(m.files)) bytes += await lstat(join(m.rootfs, f)).then((s) => s.size, () => 0);
        await removeRootfs(m.rootfs);
        where.unshift(m.rootfs);
      }
      await rm(paths.manifest, { force: true });
    } catch (err) {
      await this.track(m); // still there: the next run tries again
      throw err;
    }
    await rmdir(paths.dir).catch(() => {}); // kept when something else lives there
    for (const k of [...this.reported]) if (k.startsWith(`${m.container}|`)) this.reported.delete(k);
    const data: Collected = { image: m.image, kind: 'rootfs', where, bytes, policySerial: serial };
    this.o.log.info('collected: the rootfs of an image the policy no longer names', { container: m.container, image: `${m.image.name}:${m.image.tag}`, where, bytes, serial });
    await this.o.publish(subjects.image.collected, data, {
      id: `collected-rootfs-${m.container}-${m.image.digest.slice(0, 16)}-${serial}`,
      headers: { 'Sealkit-Container': m.container, 'Sealkit-Image': `${m.image.name}:${m.image.tag}` },
    });
  }

  // Re-read the manifest from disk (it must still carry the node's
  // signature), re-hash the rootfs, report what differs.
  async verify(container: string, paths?: string[]): Promise<{ container: string; files: number; findings: Tamper[]; ms: number }> {
    if (!CONTAINER_NAME.test(container)) throw new SealkitError('SEALKIT_BAD_REQUEST', `"${container}" is not a container name; ask ima.status for the list`);
    const t0 = Date.now();
    const m = await readManifest(containerPaths(this.layout, container).manifest, this.pub).catch((err: SealkitError) => {
      if (!this.containers.has(container)) throw new SealkitError('SEALKIT_BAD_REQUEST', `no label manifest for container "${container}"; ask ima.status for the labelled containers`);
      throw err;
    });
    const signer = this.o.policy()?.ima.signatures ? createPublicKey((await this.o.signingKey()).key) : undefined;
    const findings = await this.enforcement.appraise(m, this.o.pool, { paths, signer });
    const out: Tamper[] = [];
    for (const f of findings) out.push(await this.report(m, f));
    return { container, files: Object.keys(m.files).length, findings: out, ms: Date.now() - t0 };
  }

  async verifyAll(): Promise<void> {
    if (this.mode === 'off') return;
    for (const c of [...this.containers.keys()]) {
      await this.verify(c).catch((err) => this.o.log.error('scheduled appraisal failed', { container: c, err: err as Error }));
    }
  }

  private async report(m: LabelManifest, f: Finding): Promise<Tamper> {
    const enforce = this.mode === 'enforce';
    let action: Tamper['action'] = 'reported';
    if (enforce && (f.kind === 'modified' || f.kind === 'added')) action = 'blocked';
    // labelling again writes the label and enables fs-verity again
    if (enforce && (f.kind === 'label-mismatch' || f.kind === 'verity-missing')) action = 'relabeled';
    const t: Tamper = { container: m.container, image: m.image, ...f, policySerial: this.o.policy()?.serial ?? m.policySerial, action };
    const key = `${m.container}|${f.file}|${f.kind}|${f.actualSha256}`;
    if (this.reported.has(key)) return t;
    this.reported.add(key);
    if (action === 'blocked') await chmod(join(m.rootfs, f.file), 0).catch(() => {});
    if (action === 'relabeled') {
      const signer = this.o.policy()?.ima.signatures ? await this.o.signingKey() : undefined;
      await this.enforcement.label(m.rootfs, { [f.file]: f.expectedSha256! }, { signer, concurrency: 1 }).catch(() => {});
    }
    this.o.log.warn('tamper', { ...t });
    await this.o.publish(subjects.audit.tamper, t, { headers: { 'Sealkit-Container': m.container, 'Sealkit-Image': `${m.image.name}:${m.image.tag}` } });
    return t;
  }

  private track(m: LabelManifest): Promise<void> {
    const prev = this.containers.get(m.container);
    prev?.watcher?.close();
    const w: Watched = { manifest: m, pending: new Set() };
    this.containers.set(m.container, w);
    w.watcher = watchTree(
      m.rootfs,
      (rel) => {
        if (this.mode === 'off') return;
        w.pending.add(rel);
        // a fixed window from the first change, so a stream of writes cannot postpone appraisal
        w.timer ??= setTimeout(() => this.flush(w), this.o.debounceMs ?? 150);
      },
      (err) => this.o.log.warn('cannot watch the rootfs; the schedule still appraises it', { container: m.container, err }),
    );
    return w.watcher.ready;
  }

  private flush(w: Watched): void {
    w.timer = undefined;
    if (w.running) {
      w.timer ??= setTimeout(() => this.flush(w), 50);
      return;
    }
    const paths = [...w.pending];
    w.pending.clear();
    // an event without a name means "something changed": appraise it all
    const whole = paths.includes('');
    w.running = this.verify(w.manifest.container, whole ? undefined : paths)
      .catch((err) => this.o.log.error('appraisal after a change failed', { container: w.manifest.container, err: err as Error }))
      .finally(() => {
        w.running = undefined;
      });
  }
}
