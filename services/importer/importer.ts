import { resolve, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SealkitError, asSealkitError, type ErrorCode } from '../lib/errors.ts';
import { short } from '../lib/digest.ts';
import type { Logger } from '../lib/log.ts';
import type { Policy, ImagePolicy } from '../lib/policy.ts';
import type { ImportedImage, ImportFailure, Runtime, Target, VerifiedImage } from '../lib/contract.ts';
import { assertUnchanged, openArchive, recheck, type CachedArchive, type CheckedArchive } from './archive.ts';
import { ingest } from './ingest.ts';
import { sendStripped } from './splice.ts';
import { LEASE_PREFIX, type Containerd, type CtrImage } from './ctr.ts';
import { DockerTarget } from './docker.ts';
import type { ArchiveMeta } from './names.ts';
import type { DockerTags } from './dockertags.ts';

// The importer's core: decide whether a verified image may be imported,
// re-check the cached archive, import it under a staging name, check what
// the runtime reports against what was verified, and only then move the
// final name onto it. No bus here; main.ts wires it.

export interface Outcome {
  imported?: ImportedImage; // at least one runtime holds the image
  failures: ImportFailure[]; // runtimes (or the whole image) that definitively failed
}

export const STAGING = 'sealkit-staging/';
// sealkit.image: the name:tag it was imported as, so that a copy under
// another name (`ctr images tag` copies labels) is not taken for sealkit's
export const LABELS = { source: 'sealkit.source', sha256: 'sealkit.sha256', manifest: 'sealkit.manifest', serial: 'sealkit.policy-serial', image: 'sealkit.image' } as const;

export interface ImporterOptions {
  containerd: Containerd;
  docker?: DockerTarget; // absent when no Docker socket is configured
  dockerTags?: DockerTags; // the tag given to each image put into Docker
  cacheDir: string; // <state>/fetcher/cache
  log: Logger;
}

// The reference containerd and `ctr run` use: docker.io/library/x:t for "x".
export function containerdRef(name: string, tag: string): string {
  const first = name.split('/')[0];
  const hasHost = name.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost');
  const full = hasHost ? name : name.includes('/') ? `docker.io/${name}` : `docker.io/library/${name}`;
  return `${full}:${tag}`;
}

export class Importer {
  constructor(private readonly o: ImporterOptions) {}

  async importImage(ev: VerifiedImage, policy: Policy): Promise<Outcome> {
    const fail = (code: ErrorCode, reason: string, runtime: Runtime | 'none' = 'none'): Outcome => ({
      failures: [{ name: ev?.name ?? '', tag: ev?.tag ?? '', sha256: ev?.sha256 ?? '', code, reason, runtime }],
    });
    let img: ImagePolicy;
    try {
      img = this.allowed(ev, policy);
      this.checkPath(ev);
    } catch (err) {
      const e = asSealkitError(err);
      return fail(e.code, e.message);
    }
    const log = this.o.log.child({ image: `${ev.name}:${ev.tag}`, sha256: short(ev.sha256) });
    const archive: CachedArchive = { ...ev.archive, format: ev.format, compression: ev.compression };
    const label = `${ev.name}:${ev.tag}`;
    const out: Outcome = { failures: [] };
    const targets: Target[] = [];
    let skipped = true;
    const wanted: Runtime[] = [];
    if (img.import.containerd) wanted.push('containerd');
    if (img.import.docker) wanted.push('docker');
    if (wanted.length === 0) return fail('SEALKIT_CONFIG', `policy serial ${policy.serial} imports ${label} into no runtime; set import.containerd or import.docker`);

    // The re-hash starts now, beside the "already there?" questions to the
    // runtimes (2–470 ms under load): no runtime gets a byte before it
    // matched, and when nothing needs importing the hash is stopped.
    const unwanted = new AbortController();
    const rechecking = recheck(archive, label, unwanted.signal);
    rechecking.catch(() => {});
    const ensureRechecked = () => rechecking;

    try {
      for (const runtime of wanted) {
        try {
          if (runtime === 'containerd') {
            const ns = (img.import.containerd as { namespace: string }).namespace;
            const done = await this.presentInContainerd(ev, ns);
            if (done) {
              log.info('already in containerd; not importing again', { ns, ref: done.ref });
              targets.push(done);
              continue;
            }
            targets.push(await this.intoContainerd(ev, ensureRechecked, ns, log));
          } else {
            if (!this.o.docker) throw new SealkitError('SEALKIT_CONFIG', `policy imports ${label} into Docker, but the importer has no Docker socket; set SEALKIT_DOCKER_SOCK`);
            const id = await this.o.docker.present(ev.name, ev.tag, ev.sha256);
            if (id) {
              await this.o.dockerTags?.record(`${ev.name}:${DockerTarget.digestTag(ev.sha256)}`, ev.tag);
              log.info('already in docker; not importing again', { id });
              targets.push({ runtime: 'docker', ref: label, id });
              continue;
            }
            targets.push(await this.intoDocker(ev, await ensureRechecked(), log));
          }
          skipped = false;
        } catch (err) {
          const e = asSealkitError(err);
          if (e.code === 'SEALKIT_UNAVAILABLE') throw e; // retried by the caller; done runtimes are skipped then
          log.error('import failed', { runtime, err: e });
          out.failures.push({ name: ev.name, tag: ev.tag, sha256: ev.sha256, code: e.code, reason: e.message, runtime });
          // a corrupt cache is corrupt for every runtime
          if (e.code === 'SEALKIT_CACHE_CORRUPT') break;
        }
      }
    } finally {
      unwanted.abort();
      await rechecking.then((c) => c.close(), () => {});
    }
    if (targets.length) {
      out.imported = {
        name: ev.name,
        tag: ev.tag,
        sha256: ev.sha256,
        source: ev.source,
        manifestDigest: ev.manifestDigest,
        policySerial: ev.policySerial,
        archive: { path: ev.archive.path, sha256: ev.archive.sha256, format: ev.format, compression: ev.compression },
        targets,
        ...(skipped ? { skipped: true } : {}),
      };
    }
    return out;
  }

  // The event must name an image of the policy in force, with the same pin.
  private allowed(ev: VerifiedImage, policy: Policy): ImagePolicy {
    const img = policy.images.find((i) => i.name === ev.name);
    if (!img) {
      throw new SealkitError('SEALKIT_IMAGE_UNKNOWN', `image.verified names ${ev.name}:${ev.tag}, which policy serial ${policy.serial} does not list; not importing — add it to the policy or ignore the event`);
    }
    if (img.tag !== ev.tag) {
      throw new SealkitError('SEALKIT_IMAGE_UNKNOWN', `image.verified names ${ev.name}:${ev.tag}, but policy serial ${policy.serial} pins tag ${img.tag}; not importing`);
    }
    if (img.sha256 !== ev.sha256) {
      throw new SealkitError(
        'SEALKIT_DIGEST_MISMATCH',
        `image.verified for ${ev.name}:${ev.tag} carries sha256 ${short(ev.sha256)}…, but policy serial ${policy.serial} pins ${short(img.sha256)}…; not importing — the event is stale or the policy changed, fetch again`,
      );
    }
    // the pin is the archive digest for URL sources, the manifest digest for oci://
    const pinned = img.source.startsWith('oci://') ? ev.manifestDigest === `sha256:${img.sha256}` : ev.archive.sha256 === img.sha256;
    if (!pinned) {
      throw new SealkitError(
        'SEALKIT_DIGEST_MISMATCH',
        `image.verified for ${ev.name}:${ev.tag} hands over ${img.source.startsWith('oci://') ? `manifest ${ev.manifestDigest}` : `archive ${short(ev.archive.sha256)}…`}, which is not the pinned sha256 ${short(img.sha256)}…; not importing`,
      );
    }
    return img;
  }

  // Only files in the fetcher's content-addressed cache, named by their digest.
  private checkPath(ev: VerifiedImage): void {
    const want = join(resolve(this.o.cacheDir), 'sha256', ev.archive.sha256);
    if (resolve(ev.archive.path) !== want) {
      throw new SealkitError('SEALKIT_BAD_REQUEST', `image.verified for ${ev.name}:${ev.tag} points at ${ev.archive.path}; only ${want} (the fetcher's cache) is accepted`);
    }
  }

  private async presentInContainerd(ev: VerifiedImage, ns: string): Promise<Target | undefined> {
    const ref = containerdRef(ev.name, ev.tag);
    const cur = await this.o.containerd.get(ns, ref);
    if (!cur) return undefined;
    const same = cur.labels[LABELS.sha256] === ev.sha256 && cur.labels[LABELS.manifest] === (ev.manifestDigest ?? 'none') && (ev.format !== 'oci-archive' || cur.digest === ev.manifestDigest);
    return same ? { runtime: 'containerd', namespace: ns, ref, digest: cur.digest } : undefined;
  }

  private labels(ev: VerifiedImage): Record<string, string> {
    return {
      [LABELS.source]: ev.source,
      [LABELS.sha256]: ev.sha256,
      [LABELS.manifest]: ev.manifestDigest ?? 'none',
      [LABELS.serial]: String(ev.policySerial),
      [LABELS.image]: `${ev.name}:${ev.tag}`,
    };
  }

  private async intoContainerd(ev: VerifiedImage, rechecked: () => Promise<CheckedArchive>, ns: string, log: Logger): Promise<Target> {
    return ev.compression === 'none' ? this.written(ev, rechecked, ns, log) : this.staged(ev, rechecked, ns, log);
  }

  // An uncompressed archive: its blobs written into the content store from
  // their offsets in the checked file, under a lease, then the final name
  // given to the manifest in one record. No staging name: every blob is
  // committed with its digest, and the manifest named is the verified one
  // (OCI) or the one built from the verified manifest.json (docker). A
  // failure anywhere deletes the lease, and with it what was written.
  private async written(ev: VerifiedImage, rechecked: () => Promise<CheckedArchive>, ns: string, log: Logger): Promise<Target> {
    const ctr = this.o.containerd;
    log.info('importing into containerd', { ns, format: ev.format, compression: ev.compression });
    const t0 = Date.now();
    const leasing = ctr.lease(ns);
    leasing.catch(() => {});
    let archive: CheckedArchive;
    try {
      archive = await rechecked();
    } catch (err) {
      await leasing.then((id) => ctr.dropLease(ns, id)).catch(() => {});
      throw err;
    }
    const lease = await leasing;
    try {
      const { target } = await ingest(ctr, ns, lease, archive, ev.manifestDigest);
      await assertUnchanged(archive);
      const ref = containerdRef(ev.name, ev.tag);
      const final = await ctr.put(ns, ref, target, this.labels(ev));
      log.info('imported into containerd', { ns, ref, digest: final.digest, ms: Date.now() - t0 });
      return { runtime: 'containerd', namespace: ns, ref, digest: final.digest };
    } finally {
      // named content stays through the image; the rest goes with the lease
      await ctr.dropLease(ns, lease).catch((err) => log.warn('could not remove the import lease; it expires within the hour', { ns, lease, err: err as Error }));
    }
  }

  // A compressed archive: decompressed into `ctr images import` under a staging name.
  private async staged(ev: VerifiedImage, rechecked: () => Promise<CheckedArchive>, ns: string, log: Logger): Promise<Target> {
    const ctr = this.o.containerd;
    // a staging name left by an interrupted attempt is simply overwritten
    const staging = `${STAGING}${ev.sha256}`;
    log.info('importing into containerd', { ns, staging, format: ev.format, compression: ev.compression });
    const t0 = Date.now();
    // ctr starts and dials while the archive is re-hashed; it gets its
    // first byte only once the digest matched (an empty input creates nothing)
    const input = new PassThrough({ highWaterMark: 1 << 20 });
    const importing = ctr.importTar(ns, staging, input);
    importing.catch(() => {}).finally(() => input.destroy()); // a ctr that is gone reads nothing more
    let archive: CheckedArchive;
    try {
      archive = await rechecked();
    } catch (err) {
      input.end();
      await importing.catch(() => {});
      throw err;
    }
    const src = openArchive(archive);
    pipeline(src.stream, input).catch(() => {}); // either side failing ends the other; the reasons come below
    const [imported, read] = await Promise.allSettled([importing, src.finished]);
    try {
      // the reading side names the cause (changed file, bad archive) better than ctr does
      if (read.status === 'rejected' && read.reason instanceof SealkitError) throw read.reason;
      if (imported.status === 'rejected') throw imported.reason;
      if (read.status === 'rejected') throw read.reason;
      const { chosen, refs } = await this.check(ev, ns, staging, src.meta);
      const ref = containerdRef(ev.name, ev.tag);
      // the final name appears with its target and labels in one record
      const final = await ctr.put(ns, ref, chosen, this.labels(ev));
      await ctr.remove(ns, [staging, ...refs]).catch((err) => log.warn('could not remove the staging image; it is removed on the next start', { ns, staging, err: err as Error }));
      log.info('imported into containerd', { ns, ref, digest: final.digest, ms: Date.now() - t0 });
      return { runtime: 'containerd', namespace: ns, ref, digest: final.digest };
    } catch (err) {
      // a half-done or refused import leaves nothing behind but what the
      // final name held before; a dead containerd is cleaned on the retry
      if (!isCode(err, 'SEALKIT_UNAVAILABLE')) await this.dropStaging(ns, staging, log);
      throw err;
    }
  }

  private async dropStaging(ns: string, staging: string, log: Logger): Promise<void> {
    try {
      await this.o.containerd.remove(ns, (await this.o.containerd.withPrefix(ns, staging)).map((i) => i.ref));
    } catch (err) {
      log.warn('could not remove the staging image; it is removed on the next start', { ns, staging, err: err as Error });
    }
  }

  // What containerd stored must be what was verified: for an OCI archive the
  // manifest digest itself; a docker-archive has no manifest blob (containerd
  // writes one), so its config digest must be the one manifest.json names.
  private async check(ev: VerifiedImage, ns: string, staging: string, meta: ArchiveMeta): Promise<{ chosen: CtrImage; refs: string[] }> {
    const found = (await this.o.containerd.withPrefix(ns, `${staging}@`)).filter((i) => i.ref === `${staging}@${i.digest}`);
    const refs = found.map((i) => i.ref);
    const exact = found.find((i) => i.digest === ev.manifestDigest);
    if (exact) return { chosen: exact, refs };
    const seen = found.map((i) => i.digest).join(', ') || 'none';
    if (ev.format === 'docker-archive' && found.length === 1 && meta.manifest?.length === 1) {
      const m = JSON.parse((await this.o.containerd.content(ns, found[0].digest)).toString('utf8')) as { config?: { digest?: string } };
      const named = /([0-9a-f]{64})(\.json)?$/.exec(meta.manifest[0].Config ?? '')?.[1];
      if (named && m.config?.digest === `sha256:${named}`) return { chosen: found[0], refs };
      throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `containerd stored ${ev.name}:${ev.tag} with config ${m.config?.digest ?? 'unknown'}, but the verified archive's manifest.json names config ${named ?? meta.manifest[0].Config}; the staging import was removed`);
    }
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `containerd stored ${ev.name}:${ev.tag} as manifest(s) ${seen}, but the verified manifest is ${ev.manifestDigest}; the staging import was removed`);
  }

  private async intoDocker(ev: VerifiedImage, archive: CheckedArchive, log: Logger): Promise<Target> {
    const docker = this.o.docker!;
    const label = `${ev.name}:${ev.tag}`;
    log.info('importing into docker', { format: ev.format });
    const t0 = Date.now();
    if (ev.compression === 'none') {
      const id = await docker.loadWritten((write) => sendStripped(archive, write), label).catch((err) => {
        const e = asSealkitError(err);
        if (ev.format === 'oci-archive' && e.code === 'SEALKIT_IMPORT_FAILED') {
          throw new SealkitError('SEALKIT_IMPORT_FAILED', `${e.message}; Docker before 25 loads docker-archives only — pin a docker-archive for ${label} or set import.docker: false`, e.data);
        }
        throw e;
      });
      return this.tagged(ev, id, log, t0);
    }
    const src = openArchive(archive);
    const abort = new AbortController();
    src.finished.catch(() => abort.abort());
    const [loaded, read] = await Promise.allSettled([docker.load(src.stream, label, abort.signal), src.finished]);
    if (read.status === 'rejected' && read.reason instanceof SealkitError) throw read.reason;
    if (loaded.status === 'rejected') {
      const e = asSealkitError(loaded.reason);
      if (ev.format === 'oci-archive' && e.code === 'SEALKIT_IMPORT_FAILED') {
        throw new SealkitError('SEALKIT_IMPORT_FAILED', `${e.message}; Docker before 25 loads docker-archives only — pin a docker-archive for ${label} or set import.docker: false`, e.data);
      }
      throw e;
    }
    if (read.status === 'rejected') throw read.reason;
    return this.tagged(ev, loaded.value, log, t0);
  }

  private async tagged(ev: VerifiedImage, id: string, log: Logger, t0: number): Promise<Target> {
    const docker = this.o.docker!;
    const label = `${ev.name}:${ev.tag}`;
    // the digest tag first: name:tag appears only on a complete, checked image;
    // and the record of name:tag before it exists, so collection can find it
    await this.o.dockerTags?.record(`${ev.name}:${DockerTarget.digestTag(ev.sha256)}`, ev.tag);
    await docker.tag(id, ev.name, DockerTarget.digestTag(ev.sha256));
    await docker.tag(id, ev.name, ev.tag);
    log.info('imported into docker', { ref: label, id, ms: Date.now() - t0 });
    return { runtime: 'docker', ref: label, id };
  }

  // At start nothing is in flight: every staging name is a leftover.
  async cleanStaging(namespaces: string[]): Promise<number> {
    let n = 0;
    for (const ns of new Set(namespaces)) {
      // leases of interrupted writes: their content is collected now, not in an hour
      for (const id of (await this.o.containerd.leases(ns)).filter((l) => l.startsWith(LEASE_PREFIX))) await this.o.containerd.dropLease(ns, id);
      const stale = (await this.o.containerd.withPrefix(ns, STAGING)).map((i) => i.ref);
      if (stale.length) {
        this.o.log.info('removing staging images left by an interrupted import', { ns, refs: stale });
        await this.o.containerd.remove(ns, stale);
        n += stale.length;
      }
    }
    return n;
  }
}

function isCode(err: unknown, code: ErrorCode): boolean {
  return err instanceof SealkitError && err.code === code;
}
