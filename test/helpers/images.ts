import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

// Real image archives built in the test, byte by byte: OCI image layouts and
// docker-archive tarballs, optionally compressed as a whole, and hand-made
// hostile tar entries. Nothing here is a mock: containerd, Docker and the
// registry accept what it builds.

export type Compression = 'none' | 'gzip' | 'xz' | 'zstd';
export type Format = 'oci' | 'docker';

export interface TarEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  content?: string | Buffer;
  size?: number; // header size when it should differ from the content (truncation tests)
  linkname?: string;
  mode?: number;
  devmajor?: number;
  devminor?: number;
}

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export async function makeTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });
  for (const e of entries) {
    const content = e.content === undefined ? undefined : Buffer.isBuffer(e.content) ? e.content : Buffer.from(e.content);
    await new Promise<void>((resolve, reject) => {
      pack.entry(
        {
          name: e.name,
          type: e.type ?? 'file',
          mode: e.mode ?? (e.type === 'directory' ? 0o755 : 0o644),
          mtime: new Date(0),
          linkname: e.linkname,
          devmajor: e.devmajor,
          devminor: e.devminor,
          size: e.size ?? content?.length ?? 0,
        },
        content ?? Buffer.alloc(0),
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export function compress(data: Buffer, how: Compression): Buffer {
  switch (how) {
    case 'none':
      return data;
    case 'gzip':
      return gzipSync(data);
    case 'xz':
    case 'zstd': {
      const r = spawnSync(how, ['-c', '-q'], { input: data, maxBuffer: 1 << 30 });
      if (r.status !== 0) throw new Error(`${how} failed: ${r.stderr}`);
      return r.stdout;
    }
  }
}

export interface Layer {
  mediaType: string;
  digest: string; // sha256:… of the blob as stored
  diffId: string; // sha256:… of the uncompressed tar
  size: number;
  blob: Buffer;
  tar: Buffer;
}

export interface BuiltImage {
  name: string;
  tag: string;
  format: Format;
  compression: Compression;
  archive: Buffer; // the bytes a source serves
  sha256: string; // hex of archive
  size: number;
  config: Buffer;
  configDigest: string;
  manifest: Buffer; // OCI manifest JSON
  manifestDigest: string; // sha256:…
  layers: Layer[];
  files: Record<string, Buffer>; // final rootfs view: path → content
}

export interface ImageSpec {
  name?: string;
  tag?: string;
  // one map per layer, applied in order; a value of null is a whiteout
  layers?: Array<Record<string, string | Buffer | null>>;
  format?: Format;
  compression?: Compression; // of the whole archive
  layerCompression?: 'gzip' | 'none';
}

export async function buildImage(spec: ImageSpec = {}): Promise<BuiltImage> {
  const name = spec.name ?? 'sealkit/test';
  const tag = spec.tag ?? 'v1';
  const format = spec.format ?? 'oci';
  const compression = spec.compression ?? 'none';
  const layerCompression = spec.layerCompression ?? (format === 'oci' ? 'gzip' : 'none');
  const layerSpecs = spec.layers ?? [{ 'bin/hello': '#!/bin/sh\necho hello\n', 'etc/os-release': 'ID=sealkit-test\n' }];
  const files: Record<string, Buffer> = {};
  const layers: Layer[] = [];
  for (const ls of layerSpecs) {
    const entries: TarEntry[] = [];
    const dirs = new Set<string>();
    for (const [path, content] of Object.entries(ls)) {
      const parts = path.split('/');
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
      if (content === null) {
        const base = parts.pop()!;
        entries.push({ name: [...parts, `.wh.${base}`].join('/'), content: '' });
        delete files[path];
      } else {
        const buf = Buffer.isBuffer(content) ? content : Buffer.from(content);
        entries.push({ name: path, content: buf, mode: path.startsWith('bin/') ? 0o755 : 0o644 });
        files[path] = buf;
      }
    }
    const tarball = await makeTar([...[...dirs].sort().map((d) => ({ name: `${d}/`, type: 'directory' as const })), ...entries]);
    const blob = layerCompression === 'gzip' ? gzipSync(tarball) : tarball;
    layers.push({
      mediaType: layerCompression === 'gzip' ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar',
      digest: `sha256:${sha256(blob)}`,
      diffId: `sha256:${sha256(tarball)}`,
      size: blob.length,
      blob,
      tar: tarball,
    });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: '1970-01-01T00:00:00Z',
      config: { Cmd: ['/bin/hello'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map(() => ({ created: '1970-01-01T00:00:00Z', created_by: 'sealkit test' })),
    }),
  );
  const configDigest = `sha256:${sha256(config)}`;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    }),
  );
  const manifestDigest = `sha256:${sha256(manifest)}`;

  let entries: TarEntry[];
  if (format === 'oci') {
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: manifestDigest,
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': tag, 'io.containerd.image.name': `${name}:${tag}` },
        },
      ],
    };
    entries = [
      { name: 'oci-layout', content: JSON.stringify({ imageLayoutVersion: '1.0.0' }) },
      { name: 'index.json', content: JSON.stringify(index) },
      { name: 'blobs/', type: 'directory' },
      { name: 'blobs/sha256/', type: 'directory' },
      { name: `blobs/sha256/${manifestDigest.slice(7)}`, content: manifest },
      { name: `blobs/sha256/${configDigest.slice(7)}`, content: config },
      ...layers.map((l) => ({ name: `blobs/sha256/${l.digest.slice(7)}`, content: l.blob })),
    ];
  } else {
    const dockerManifest = [
      {
        Config: `${configDigest.slice(7)}.json`,
        RepoTags: [`${name}:${tag}`],
        Layers: layers.map((l) => `${l.digest.slice(7)}/layer.tar`),
      },
    ];
    entries = [
      { name: 'manifest.json', content: JSON.stringify(dockerManifest) },
      { name: `${configDigest.slice(7)}.json`, content: config },
      ...layers.flatMap((l) => [
        { name: `${l.digest.slice(7)}/`, type: 'directory' as const },
        { name: `${l.digest.slice(7)}/layer.tar`, content: l.blob },
      ]),
    ];
  }
  const archive = compress(await makeTar(entries), compression);
  return { name, tag, format, compression, archive, sha256: sha256(archive), size: archive.length, config, configDigest, manifest, manifestDigest, layers, files };
}

// An image that runs: the host's static busybox as /bin/busybox (from
// busybox-static) and the given scripts beside it, each starting with
// "#!/bin/busybox sh"; a gzip OCI archive, as a workload is served.
export function busyboxImage(name: string, tag: string, scripts: Record<string, string>, compression: Compression = 'gzip'): Promise<BuiltImage> {
  return buildImage({ name, tag, format: 'oci', compression, layers: [{ 'bin/busybox': readFileSync('/bin/busybox'), ...scripts }] });
}
