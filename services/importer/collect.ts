import type { Collected } from '../lib/contract.ts';
import type { Policy } from '../lib/policy.ts';
import type { Containerd } from './ctr.ts';
import { DockerTarget } from './docker.ts';
import { containerdRef, LABELS } from './importer.ts';

// Runtime images sealkit imported that the policy in force no longer names.
// Only sealkit's: a containerd image carries the labels of the import and is
// under the very name it was imported as (`ctr images tag` copies labels to
// another name, which is then someone else's); a Docker image is sealkit's
// through its digest tag `name:sha256-<hex>` and the tag the importer
// recorded beside it. A name the policy still names in that runtime (and
// namespace) is kept whatever its digest: the next import replaces it.

export type Removed = Omit<Collected, 'policySerial'>;

// The name:tag an image was imported as, for what was imported before the
// sealkit.image label and the Docker tag record.
export type Known = (sha256: string) => Array<{ name: string; tag: string }>;

// Each removal is reported as soon as it is done: a runtime that fails half
// way must not take the news of what already went with it.
export type Report = (r: Removed) => Promise<void>;

export async function collectContainerd(ctr: Containerd, policy: Policy, known: Known, report: Report): Promise<void> {
  for (const ns of await ctr.namespaces()) {
    const wanted = new Set(policy.images.flatMap((i) => (i.import.containerd && i.import.containerd.namespace === ns ? [containerdRef(i.name, i.tag)] : [])));
    for (const img of await ctr.list(ns, `labels."${LABELS.sha256}"`)) {
      const sha256 = img.labels[LABELS.sha256];
      const as = importedAs(img.labels[LABELS.image]) ?? known(sha256).find((k) => containerdRef(k.name, k.tag) === img.ref);
      if (!as || containerdRef(as.name, as.tag) !== img.ref || wanted.has(img.ref)) continue;
      await ctr.remove(ns, [img.ref]);
      await report({ image: { name: as.name, tag: as.tag, digest: sha256 }, kind: 'containerd', where: [`${ns}/${img.ref}`], bytes: null });
    }
  }
}

function importedAs(label: string | undefined): { name: string; tag: string } | undefined {
  const at = label?.lastIndexOf(':') ?? -1;
  if (!label || at <= 0 || label.slice(at).includes('/')) return undefined;
  return { name: label.slice(0, at), tag: label.slice(at + 1) };
}

export async function collectDocker(docker: DockerTarget, policy: Policy, tags: Map<string, string>, known: Known, report: Report): Promise<void> {
  const wanted = new Set(policy.images.filter((i) => i.import.docker).flatMap((i) => [`${i.name}:${i.tag}`, `${i.name}:${DockerTarget.digestTag(i.sha256)}`]));
  for (const { id, digestTag, name, sha256 } of await docker.sealkitImages()) {
    if (wanted.has(digestTag)) continue;
    const tag = tags.get(digestTag) ?? known(sha256).find((k) => k.name === name)?.tag;
    const where = [digestTag];
    // name:tag goes only while it is still the image the digest tag names
    if (tag !== undefined && !wanted.has(`${name}:${tag}`) && (await docker.idOf(`${name}:${tag}`)) === id) where.unshift(`${name}:${tag}`);
    await docker.untag(where);
    tags.delete(digestTag);
    await report({ image: { name, tag: tag ?? '', digest: sha256 }, kind: 'docker', where, bytes: null });
  }
}
