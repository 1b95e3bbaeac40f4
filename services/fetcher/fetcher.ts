import { readFile } from 'node:fs/promises';
import { createHash, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic.ts';
import type { NatsConnection } from 'nats';
import { archiveMediaType, detectCompression, LayoutCheck, openImage, type ArchiveOptions, type Compression, type OpenedImage } from '../lib/archive/index.ts';
import { sha256Hex } from '../lib/digest.ts';
import { asSealkitError, diskFull, isDiskFull, isSealkitError, SealkitError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { EventPublisher } from '../lib/outbox.ts';
import type { ImagePolicy, Policy } from '../lib/policy.ts';
import { subjects } from '../lib/subjects.ts';
import type { Collected, RejectedImage, VerifiedImage } from '../lib/contract.ts';
import type { CollectRun } from '../lib/collect.ts';
import { Cache, type HeldImage } from './cache.ts';
import { collectCache } from './collect.ts';
import { hashFileThread } from './hash-thread.ts';
import { planLayout } from './layout.ts';
import { download, memorySink, type Rules } from './download.ts';
import { checkDescriptor, fetchManifest, parseOciSource, pickPlatform, pullLayout, type Descriptor, type OciRef, type VerifiedManifest } from './registry.ts';
import { checkImageSignatures, MAX_SIGNATURE_FILE, parseSignatureFile, signatureUrl, type Statement } from './signatures.ts';
import { askVerifiers } from './verifiers.ts';

// The fetcher's core: for one image of the policy, get the bytes into
// quarantine while hashing, verify digest, signatures and plugins, and only
// then let the archive parser near them (while the file is made durable);
// admit them to the cache once both are done. Every refusal becomes
// image.rejected + audit.rejected; success is image.verified.

export interface FetcherOptions {
  dir: string; // <state>/fetcher
  nc: NatsConnection; // verifier plugins are asked over it
  events: Pick<EventPublisher, 'publish' | 'emit'>;
  log: Logger;
}

export class Fetcher {
  readonly cache: Cache;
  private readonly verified = new Map<string, string>(); // name → fingerprint of what was verified
  private readonly inflight = new Map<string, Promise<VerifiedImage>>();
  private queue: Promise<void> = Promise.resolve();
  private latest?: Policy;
  private retry?: { timer: NodeJS.Timeout; ms: number };
  private readonly fromDisk = new Set<string>(); // verified by a previous run, not yet re-hashed by this one
  private readonly fullReported = new Set<string>(); // images whose disk-full rejection was published
  private collecting: Promise<unknown> = Promise.resolve(); // a fetch waits for a collection under way

  constructor(private readonly o: FetcherOptions) {
    this.cache = new Cache(o.dir);
  }

  // What was verified and published survives a restart, so a restart does
  // not publish image.verified again for images nothing changed about.
  private get verifiedFile(): string {
    return join(this.o.dir, 'verified.json');
  }

  async init(): Promise<void> {
    await this.cache.init();
    try {
      for (const [k, v] of Object.entries(JSON.parse(await readFile(this.verifiedFile, 'utf8')) as Record<string, string>)) {
        this.verified.set(k, v);
        this.fromDisk.add(k);
      }
    } catch {
      // none yet (or unreadable): every image is verified again
    }
  }

  private async saveVerified(): Promise<void> {
    await writeFileAtomic(this.verifiedFile, JSON.stringify(Object.fromEntries(this.verified))).catch((err) =>
      this.o.log.warn('cannot record what was verified; after a restart those images are verified and announced again', { err: err as Error }),
    );
  }

  /** On every policy change: fetch each image not yet verified under the same pin, keys and plugins. Serialized. */
  onPolicy(policy: Policy): Promise<void> {
    this.latest = policy;
    this.queue = this.queue.then(async () => {
      let full = false;
      for (const img of policy.images) {
        if (this.verified.get(img.name) === fingerprint(img, policy) && (await this.stillCached(img))) continue;
        this.fromDisk.delete(img.name);
        await this.fetch(img, policy).catch((err) => {
          full ||= isSealkitError(err, 'SEALKIT_DISK_FULL');
        }); // already reported as events
      }
      this.retryWhenFull(full);
      this.o.log.debug('policy images handled', { serial: policy.serial });
    });
    return this.queue;
  }

  // A full disk is not the image's fault: try again on our own, backing off,
  // until space is back (a policy change or an image.fetch also retries).
  private retryWhenFull(full: boolean): void {
    clearTimeout(this.retry?.timer);
    if (!full) {
      this.retry = undefined;
      return;
    }
    const ms = Math.min((this.retry?.ms ?? 500) * 2, 30_000);
    this.retry = { ms, timer: setTimeout(() => this.latest && void this.onPolicy(this.latest), ms).unref() };
  }

  // Within a run the cache is re-hashed on use (here and by the importer);
  // what a previous run verified is re-hashed once, before it is trusted.
  private async stillCached(img: ImagePolicy): Promise<boolean> {
    if (!this.fromDisk.has(img.name)) return true;
    this.fromDisk.delete(img.name);
    const hex = img.source.startsWith('oci://') ? await this.cache.getRef(img.sha256) : img.sha256;
    if (!hex) return false;
    try {
      return (await this.cache.check(hex)).state === 'hit';
    } catch {
      return false;
    }
  }

  /** Fetch and verify one image; publishes the outcome and throws the refusal.
   *  `requested`: an image.fetch asked for it, so it is a new verification that
   *  the importer and ima follow again, not a repeat for the stream to absorb. */
  fetch(img: ImagePolicy, policy: Policy, requested = false): Promise<VerifiedImage> {
    const key = fingerprint(img, policy);
    const running = this.inflight.get(key);
    if (running) return running;
    const p = this.run(img, policy, requested ? randomUUID() : undefined).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async run(img: ImagePolicy, policy: Policy, request?: string): Promise<VerifiedImage> {
    const log = this.o.log.child({ image: img.name });
    await this.collecting;
    const started = Date.now();
    try {
      let result: VerifiedImage;
      try {
        result = img.source.startsWith('oci://') ? await this.fromRegistry(img, policy) : await this.fromUrl(img, policy);
      } catch (err) {
        throw isDiskFull(err) ? diskFull(this.o.dir, `fetching ${img.name}:${img.tag}`, err) : err;
      }
      // the same verification, repeated (after a crash, or by a concurrent
      // request), carries the same id: the stream stores it once. Under a
      // later policy it is news: the image may have been collected meanwhile,
      // and the importer and ima must take it again.
      const id = `verified-${createHash('sha256').update(JSON.stringify([fingerprint(img, policy), result.archive.sha256, request ?? null, policy.serial])).digest('hex').slice(0, 32)}`;
      await this.cache.hold({ name: img.name, tag: img.tag, sha256: img.sha256, source: img.source });
      await this.o.events.publish(subjects.image.verified, result, { id, headers: { 'Sealkit-Image': img.name }, subject: img.name });
      this.verified.set(img.name, fingerprint(img, policy));
      this.fullReported.delete(img.name);
      await this.saveVerified();
      log.info('image verified', { sha256: img.sha256, format: result.format, ms: Date.now() - started });
      return result;
    } catch (err) {
      const e = asSealkitError(err);
      if (this.verified.delete(img.name)) await this.saveVerified();
      const actual = e.data?.actual;
      // a full disk is reported once per image, not on every retry
      const repeat = e.code === 'SEALKIT_DISK_FULL' && this.fullReported.has(img.name);
      if (e.code === 'SEALKIT_DISK_FULL') this.fullReported.add(img.name);
      if (!repeat) await this.reject(img, policy, e.code, e.message, typeof actual === 'string' ? actual.replace(/^sha256:/, '') : undefined, true);
      log.warn('image rejected', { code: e.code, reason: e.message });
      throw e;
    }
  }

  /** Run `fn` after the fetches under way and before the next: a collection's turn. */
  alone<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(async () => {
      let finished = () => {};
      this.collecting = new Promise<void>((resolve) => (finished = resolve));
      try {
        await Promise.allSettled([...this.inflight.values()]);
        return await fn();
      } finally {
        finished();
      }
    });
    this.queue = run.then(() => {}, () => {});
    return run;
  }

  /** Remove the cache entries of images `policy` no longer names (in a turn of alone()). */
  async collect(policy: Policy): Promise<CollectRun> {
    const unnamed = await collectCache(this.cache, policy, (h) => this.forget(h), async (c) => {
      const data: Collected = { ...c, kind: 'cache', policySerial: policy.serial };
      const id = `collected-cache-${createHash('sha256').update(JSON.stringify([c.image, policy.serial])).digest('hex').slice(0, 32)}`;
      this.o.log.info('collected: cache entries of an image the policy no longer names', { image: `${c.image.name}:${c.image.tag}`, sha256: c.image.digest, files: c.where.length, bytes: c.bytes, serial: policy.serial });
      await this.o.events.publish(subjects.image.collected, data, { id, headers: { 'Sealkit-Image': `${c.image.name}:${c.image.tag}` }, subject: `${c.image.name}:${c.image.tag}` });
    });
    if (unnamed.files) this.o.log.info('collected: cache entries no image names', { ...unnamed, serial: policy.serial });
    return { kept: 0 };
  }

  // Having verified an image is forgotten with its entries: named again, it is fetched again.
  private async forget(h: HeldImage): Promise<void> {
    const fp = this.verified.get(h.name);
    const img = fp ? ((JSON.parse(fp) as [ImagePolicy])[0] ?? undefined) : undefined;
    if (!img || img.tag !== h.tag || img.sha256 !== h.sha256) return;
    this.verified.delete(h.name);
    await this.saveVerified();
  }

  private async reject(img: ImagePolicy, policy: Policy, code: string, reason: string, actualSha256: string | undefined, imageEvent: boolean): Promise<void> {
    const data: RejectedImage = { name: img.name, tag: img.tag, source: img.source, expectedSha256: img.sha256, code, reason, policySerial: policy.serial };
    if (actualSha256) data.actualSha256 = actualSha256;
    const opts = { headers: { 'Sealkit-Image': img.name }, subject: img.name };
    if (imageEvent) await this.o.events.publish(subjects.image.rejected, data, opts);
    await this.o.events.publish(subjects.audit.rejected, data, opts);
  }

  private async cacheCorrupt(img: ImagePolicy, policy: Policy, hex: string, actual: string): Promise<void> {
    const reason = `cached file ${this.cache.path(hex)} for ${img.name} no longer matches sha256 ${hex} (now ${actual}); it was discarded and will be fetched again`;
    this.o.log.warn('cache file corrupt', { image: img.name, expected: hex, actual });
    await this.reject(img, policy, 'SEALKIT_CACHE_CORRUPT', reason, actual, false);
  }

  private rules(img: ImagePolicy, policy: Policy, progress?: Progress): Rules {
    return {
      what: `${img.name}:${img.tag}`,
      allowHttp: img.allowHttp,
      redirects: img.redirects,
      maxBytes: policy.limits.maxImageBytes,
      expectedSize: img.size,
      deadline: Date.now() + policy.limits.fetchTimeoutMs,
      stallMs: policy.limits.stallTimeoutMs,
      onBytes: progress ? (n, total) => progress.update(n, total) : undefined,
    };
  }

  private async signatures(img: ImagePolicy, policy: Policy, statement: Statement, rules: Rules): Promise<string[]> {
    if (!img.signatures) return [];
    const url = signatureUrl(img);
    const sink = memorySink();
    try {
      await download(url, sink, { ...rules, maxBytes: MAX_SIGNATURE_FILE, expectedSize: undefined, onBytes: undefined });
    } catch (err) {
      const e = asSealkitError(err);
      throw new SealkitError('SEALKIT_SIGNATURE_MISSING', `${img.name}: cannot get its signatures from ${url}: ${e.message}`, { url, cause: e.code });
    }
    return checkImageSignatures(img, policy, statement, parseSignatureFile(sink.bytes(), url));
  }

  private async verifiers(img: ImagePolicy, policy: Policy, d: { mediaType: string; digest: string; size: number }): Promise<VerifiedImage['verifiers']> {
    if (policy.verifiers.length === 0) return [];
    const decisions = await askVerifiers(this.o.nc, policy.verifiers, { ...d, annotations: { name: img.name, tag: img.tag, source: img.source } }, `${img.name}:${img.tag}`);
    return decisions.map((x) => ({ subject: x.subject, decision: x.decision }));
  }

  private archiveOptions(img: ImagePolicy, policy: Policy, manifestDigest?: string): ArchiveOptions {
    return { limits: policy.limits, what: `${img.name}:${img.tag} (sha256 ${img.sha256.slice(0, 12)}…)`, ref: { name: img.name, tag: img.tag }, manifestDigest };
  }

  private async archiveCheck(img: ImagePolicy, policy: Policy, path: string, manifestDigest?: string): Promise<OpenedImage> {
    return openImage(path, this.archiveOptions(img, policy, manifestDigest));
  }

  private async fromUrl(img: ImagePolicy, policy: Policy): Promise<VerifiedImage> {
    const hex = img.sha256;
    const progress = new Progress(this.o.events, img.name);
    const rules = this.rules(img, policy, progress);
    let path: string;
    let size: number;
    let signedBy: string[];
    let verifiers: VerifiedImage['verifiers'];
    let compression: Compression;
    let opened: OpenedImage;
    const cached = await this.cache.check(hex);
    if (cached.state === 'corrupt') {
      await this.cacheCorrupt(img, policy, hex, cached.actual);
      await this.cache.remove(hex);
    }
    if (cached.state === 'hit') {
      path = this.cache.path(hex);
      size = cached.size;
      this.checkSize(img, size);
      signedBy = await this.signatures(img, policy, { name: img.name, tag: img.tag, sha256: hex, size }, rules);
      compression = await detectCompression(path);
      verifiers = await this.verifiers(img, policy, { mediaType: archiveMediaType(compression), digest: `sha256:${hex}`, size });
      try {
        opened = await this.archiveCheck(img, policy, path);
      } catch (err) {
        await this.cache.remove(hex); // verified bytes, but not an image we will hand on
        throw err;
      }
    } else {
      const q = await this.cache.quarantine(img.name);
      try {
        const got = await download(img.source, q, rules);
        if (got.sha256 !== hex) {
          throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `digest mismatch for ${img.name} from ${got.url}: expected ${hex}, got ${got.sha256}; the download was discarded`, { expected: hex, actual: got.sha256, url: got.url });
        }
        size = got.size;
        progress.done(size);
        this.checkSize(img, size);
        signedBy = await this.signatures(img, policy, { name: img.name, tag: img.tag, sha256: hex, size }, rules);
        await q.written();
        // verified bytes, all in the file: they are checked while the disk
        // makes them durable, and admitted once both are done
        const durable = q.close();
        durable.catch(() => {}); // awaited below; discard() waits for it on failure
        compression = await detectCompression(q.path); // magic bytes of verified content only
        verifiers = await this.verifiers(img, policy, { mediaType: archiveMediaType(compression), digest: `sha256:${hex}`, size });
        opened = await this.archiveCheck(img, policy, q.path); // not an image we will hand on: discarded below
        await durable;
        path = await this.cache.admit(q, hex);
      } catch (err) {
        await q.discard();
        throw err;
      }
    }
    return {
      name: img.name,
      tag: img.tag,
      source: img.source,
      sha256: hex,
      size,
      policySerial: policy.serial,
      manifestDigest: opened.manifestDigest,
      format: opened.format,
      compression: opened.compression,
      archive: { path, sha256: hex, size },
      signedBy,
      verifiers,
    };
  }

  private checkSize(img: ImagePolicy, size: number): void {
    if (img.size !== undefined && img.size !== size) {
      throw new SealkitError('SEALKIT_SIZE_LIMIT', `${img.name}: content matching sha256 ${img.sha256} is ${size} bytes, but the policy pins size ${img.size}; fix images[].size`, { expected: img.size, actual: size });
    }
  }

  // A manifest from the CAS (re-hashed) or from the registry (verified), kept in the CAS.
  private async manifest(img: ImagePolicy, policy: Policy, ref: OciRef, digest: string, rules: Rules): Promise<VerifiedManifest> {
    const hex = digest.slice(7);
    const cached = await this.cache.check(hex);
    if (cached.state === 'hit') {
      const bytes = await readFile(this.cache.path(hex));
      if (sha256Hex(bytes) === hex) {
        const json = JSON.parse(bytes.toString('utf8')) as VerifiedManifest['json'];
        return { digest, bytes, mediaType: json.mediaType ?? '', json };
      }
    }
    if (cached.state === 'corrupt') await this.cacheCorrupt(img, policy, hex, cached.actual);
    await this.cache.remove(hex);
    const m = await fetchManifest(ref, digest, rules);
    const q = await this.cache.quarantine(hex);
    try {
      await q.write(m.bytes);
      await this.cache.admit(q, hex);
    } catch (err) {
      await q.discard();
      throw err;
    }
    return m;
  }

  private async fromRegistry(img: ImagePolicy, policy: Policy): Promise<VerifiedImage> {
    const ref = parseOciSource(img.source, img.allowHttp);
    const what = `${img.name}:${img.tag}`;
    const progress = new Progress(this.o.events, img.name);
    const rules = { ...this.rules(img, policy), expectedSize: undefined };
    const top = await this.manifest(img, policy, ref, ref.digest, rules);
    let manifest = top;
    if (Array.isArray(top.json.manifests)) manifest = await this.manifest(img, policy, ref, pickPlatform(top, what).digest, rules);
    // the decision comes before any layer is fetched
    const size = top.bytes.length;
    const signedBy = await this.signatures(img, policy, { name: img.name, tag: img.tag, sha256: img.sha256, size }, rules);
    const verifiers = await this.verifiers(img, policy, { mediaType: top.mediaType || 'application/vnd.oci.image.manifest.v1+json', digest: ref.digest, size });

    const config = checkDescriptor(manifest.json.config, what);
    const layers = (manifest.json.layers ?? []).map((d) => checkDescriptor(d, what));
    const blobs: Descriptor[] = [config, ...layers];
    const total = blobs.reduce((n, d) => n + d.size, 0);
    if (total > policy.limits.maxImageBytes) {
      throw new SealkitError('SEALKIT_SIZE_LIMIT', `${what}: manifest ${manifest.digest} describes ${total} bytes of blobs, more than limits.maxImageBytes ${policy.limits.maxImageBytes}; nothing was downloaded`, { limit: policy.limits.maxImageBytes });
    }

    let path: string | undefined;
    let archive: { hex: string; size: number } | undefined;
    let opened: OpenedImage | undefined;
    const refHex = await this.cache.getRef(img.sha256);
    if (refHex) {
      const c = await this.cache.check(refHex);
      if (c.state === 'hit') {
        try {
          path = this.cache.path(refHex);
          opened = await this.archiveCheck(img, policy, path, manifest.digest);
          archive = { hex: refHex, size: c.size };
        } catch (err) {
          await this.cacheCorrupt(img, policy, refHex, `unusable: ${asSealkitError(err).code}`);
          await this.cache.remove(refHex);
          path = opened = archive = undefined;
        }
      } else if (c.state === 'corrupt') {
        await this.cacheCorrupt(img, policy, refHex, c.actual);
        await this.cache.remove(refHex);
      }
    }
    if (!opened) {
      const plan = planLayout({ manifest, index: top === manifest ? undefined : top, blobs, refName: img.name, tag: img.tag });
      const q = await this.cache.quarantine(`oci-${manifest.digest.slice(7, 19)}`);
      // each blob, once verified and in the file, is read back and walked
      // while the others arrive; the archive digest follows the written prefix
      const check = new LayoutCheck(q.path, this.archiveOptions(img, policy, manifest.digest));
      // and checks each blob's bytes in the file against its digest again
      const hasher = hashFileThread(q.path, plan.blobs.map((b) => ({ at: b.at, size: b.d.size })));
      try {
        for (const e of plan.entries) check.add(e.name, e.size, e.type);
        for (const e of plan.entries) if (e.body) check.record(e.name, e.size, e.body);
        await pullLayout(q, plan, ref, { ...rules, onBytes: (n) => progress.update(n, total) }, {
          blob: ({ d, at }) => check.record(`blobs/sha256/${d.digest.slice(7)}`, d.size, { at }, d.digest.slice(7)),
          prefix: (upTo) => hasher.advance(upTo),
        });
        progress.done(total);
        // every blob in it is verified: sync, name and open it in one go
        const [, built, open] = await settled([q.close(), hasher.finish(plan.size), check.finish()]);
        plan.blobs.forEach(({ d }, i) => {
          if (built.ranges[i] !== d.digest.slice(7)) {
            throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${what}: blob ${d.digest} reads back from ${q.path} as sha256:${built.ranges[i]} after it was verified; the disk changed it, and the image was discarded`, { expected: d.digest, actual: `sha256:${built.ranges[i]}` });
          }
        });
        path = await this.cache.admit(q, built.sha256);
        archive = { hex: built.sha256, size: built.size };
        opened = open;
      } catch (err) {
        await Promise.all([check.settle(), hasher.stop()]);
        await q.discard();
        throw err;
      }
      await this.cache.setRef(img.sha256, archive.hex);
    }
    return {
      name: img.name,
      tag: img.tag,
      source: img.source,
      sha256: img.sha256,
      size,
      policySerial: policy.serial,
      manifestDigest: opened.manifestDigest,
      format: opened.format,
      compression: opened.compression,
      archive: { path: path!, sha256: archive!.hex, size: archive!.size },
      signedBy,
      verifiers,
    };
  }
}

// Like Promise.all, but every promise has finished when it returns or throws
// (the first rejection): nothing still reads a file the caller then removes.
async function settled<T extends readonly unknown[]>(ps: [...{ [K in keyof T]: Promise<T[K]> }]): Promise<T> {
  const out = await Promise.allSettled(ps);
  const failed = out.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return out.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

// What a verification depends on: the image's pin and rules, the keys it
// names, the plugins and the limits. A change in any means verify again.
function fingerprint(img: ImagePolicy, policy: Policy): string {
  const keys = policy.keys.filter((k) => img.signatures?.keys.includes(k.id));
  return JSON.stringify([img, keys, policy.verifiers, policy.limits]);
}

// image.progress: at most every second or every 5 %, plus the last one.
class Progress {
  private lastAt = 0;
  private lastBytes = 0;
  private readonly started = Date.now();

  constructor(
    private readonly events: Pick<EventPublisher, 'emit'>,
    private readonly name: string,
  ) {}

  update(bytes: number, total: number | undefined): void {
    const now = Date.now();
    const step = total ? total / 20 : Number.POSITIVE_INFINITY;
    if (now - this.lastAt < 1000 && bytes - this.lastBytes < step) return;
    this.send(bytes, total, now);
  }

  done(bytes: number): void {
    if (this.lastBytes !== bytes) this.send(bytes, bytes, Date.now());
  }

  private send(bytes: number, total: number | undefined, now: number): void {
    this.lastAt = now;
    this.lastBytes = bytes;
    const secs = Math.max((now - this.started) / 1000, 0.001);
    this.events.emit(subjects.image.progress, { name: this.name, bytes, total: total ?? null, rate: Math.round(bytes / secs) }, { headers: { 'Sealkit-Image': this.name } });
  }
}
