import { SealkitError } from '../errors.ts';
import { checkLayer, invalid, layerList, type Catalog } from './catalog.ts';
import type { ArchiveOptions, OpenedImage } from './image.ts';

// A docker-archive (`docker save`): manifest.json lists images by RepoTags,
// each with a config file and layer tars by path. Nothing is named by digest
// but a config called <sha256>.json: layers are checked against the config's
// diff_ids instead.

export function isDockerArchive(c: Catalog): boolean {
  return c.has('manifest.json');
}

export function openDocker(c: Catalog, opts: ArchiveOptions): Omit<OpenedImage, 'compression' | 'stats'> {
  const what = c.what;
  const raw = c.find('manifest.json', 'the docker-archive manifest');
  let list: unknown;
  try {
    list = JSON.parse((raw.body ?? Buffer.alloc(0)).toString('utf8'));
  } catch (err) {
    throw invalid(what, `has a manifest.json that is not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(list) || list.length === 0 || !list.every((i) => i !== null && typeof i === 'object')) throw invalid(what, 'has a manifest.json that is not a non-empty list of objects');
  type Item = { Config?: unknown; Layers?: unknown; RepoTags?: unknown };
  const items = list as Item[];
  const ref = opts.ref ? `${opts.ref.name}:${opts.ref.tag}` : undefined;
  const item = items.find((i) => ref && Array.isArray(i.RepoTags) && i.RepoTags.includes(ref)) ?? items[0];
  if (typeof item.Config !== 'string' || !Array.isArray(item.Layers) || !item.Layers.every((l) => typeof l === 'string')) {
    throw invalid(what, 'has a manifest.json entry without Config and Layers');
  }
  const cr = c.find(item.Config, 'the image config');
  const named = /(?:^|\/)([0-9a-f]{64})(?:\.json)?$/.exec(cr.name);
  if (named && named[1] !== cr.sha256) {
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${what}: config "${cr.name}" hashes to ${cr.sha256}; the archive is corrupt`, { entry: cr.name, expected: named[1], actual: cr.sha256 });
  }
  const config = c.json(cr, 'the image config');
  const paths = item.Layers as string[];
  const diffIds = layerList(what, config, paths.length);
  const layers = paths.map((p, i) => {
    const r = c.find(p, `layer ${i}`);
    const compression = checkLayer(what, r, diffIds[i], i);
    const mediaType = compression === 'gzip' ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : compression === 'zstd' ? 'application/vnd.oci.image.layer.v1.tar+zstd' : 'application/vnd.docker.image.rootfs.diff.tar';
    return { index: i, digest: `sha256:${r.sha256}`, diffId: diffIds[i], mediaType, size: r.size, compression, entry: r.name };
  });
  const repoTags = Array.isArray(item.RepoTags) ? item.RepoTags.filter((t): t is string => typeof t === 'string') : [];
  return { format: 'docker-archive', manifestDigest: null, manifest: null, configDigest: `sha256:${cr.sha256}`, config, layers, repoTags };
}
