import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { checkDescriptor, parseManifest, pickPlatform, type Descriptor } from '../../services/fetcher/registry.ts';
import { check, mutated, utf8, type Target } from './harness.ts';

// Registry manifests and indexes after their digest matched, walked the way
// the fetcher walks them (fetcher.fromRegistry): an index picks this
// platform, a manifest yields its config and layer descriptors. Properties:
// a result or SEALKIT_ARCHIVE_INVALID; every descriptor that comes out has a
// sha256 digest and a safe non-negative integer size; a picked manifest is
// linux on this machine's architecture.

const hex = (c: string) => c.repeat(64);
const arch = ({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch] ?? process.arch;
const anyJson = fc.oneof(fc.constant(null), fc.integer(), fc.double(), fc.string({ maxLength: 6 }), fc.boolean(), fc.constant([]), fc.constant({}), fc.constant([null]), fc.constant({ length: 2 }));
const digest = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(`sha256:${hex('a')}`, `sha256:${hex('b')}`) }, { weight: 1, arbitrary: fc.constantFrom(`sha256:${hex('A')}`, 'sha256:', `sha512:${hex('a')}`, `sha256:${hex('a')}\n`, `SHA256:${hex('a')}`) }, { weight: 1, arbitrary: anyJson });
const size = fc.oneof({ weight: 5, arbitrary: fc.nat() }, { weight: 1, arbitrary: fc.constantFrom<unknown>(-1, 1.5, 2 ** 53, 1e300, Infinity, '5', null, NaN) });
const descriptor = fc.oneof(
  { weight: 6, arbitrary: fc.record({ mediaType: fc.constantFrom('application/vnd.oci.image.manifest.v1+json', 'application/vnd.oci.image.layer.v1.tar+gzip', 'x'), digest, size, platform: fc.option(fc.record({ os: fc.constantFrom('linux', 'windows', ''), architecture: fc.constantFrom(arch, 'arm64', 's390x', '') }, { requiredKeys: [] }), { nil: undefined }), annotations: fc.option(fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 2 }), { nil: undefined }) }, { requiredKeys: [] }) },
  { weight: 1, arbitrary: anyJson },
);
const doc = fc.oneof(
  fc.record({ schemaVersion: fc.constant(2), mediaType: fc.option(fc.oneof(fc.constant('application/vnd.oci.image.index.v1+json'), anyJson), { nil: undefined }), manifests: fc.oneof({ weight: 5, arbitrary: fc.array(descriptor, { maxLength: 4 }) }, { weight: 1, arbitrary: anyJson }) }, { requiredKeys: ['manifests'] }),
  fc.record({ schemaVersion: fc.constant(2), mediaType: fc.option(fc.oneof(fc.constant('application/vnd.oci.image.manifest.v1+json'), anyJson), { nil: undefined }), config: descriptor, layers: fc.oneof({ weight: 5, arbitrary: fc.array(descriptor, { maxLength: 5 }) }, { weight: 1, arbitrary: anyJson }) }, { requiredKeys: [] }),
  anyJson,
);
const text = doc.map((d) => JSON.stringify(d) ?? 'undefined');

function checked(d: Descriptor) {
  check(typeof d.digest === 'string' && /^sha256:[0-9a-f]{64}$/.test(d.digest), `descriptor digest ${JSON.stringify(d.digest)}`);
  check(Number.isSafeInteger(d.size) && d.size >= 0, `descriptor size ${JSON.stringify(d.size)}`);
}

export const target: Target = {
  name: 'registry',
  timeoutMs: 5000,
  arbitrary: () => fc.oneof({ weight: 5, arbitrary: text.map(utf8) }, { weight: 2, arbitrary: mutated(text.map(utf8), 4) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) }),
  run(input) {
    const bytes = Buffer.from(input);
    const h = createHash('sha256').update(bytes).digest('hex');
    const m = parseManifest(bytes, `sha256:${h}`, ['application/vnd.oci.image.manifest.v1+json; charset=utf-8', undefined, ''][parseInt(h[0], 16) % 3], 'fuzz');
    check(typeof m.mediaType === 'string', `mediaType ${typeof m.mediaType}`);
    if (Array.isArray(m.json.manifests)) {
      const d = pickPlatform(m, 'fuzz');
      checked(d);
      check(d.platform?.os === 'linux' && d.platform?.architecture === arch, `picked ${JSON.stringify(d.platform)}`);
      return;
    }
    const config = checkDescriptor(m.json.config, 'fuzz');
    checked(config);
    const layers = (m.json.layers ?? []).map((d) => checkDescriptor(d, 'fuzz'));
    for (const l of layers) checked(l);
    const total = [config, ...layers].reduce((n, d) => n + d.size, 0);
    check(Number.isFinite(total), 'total size');
  },
};
