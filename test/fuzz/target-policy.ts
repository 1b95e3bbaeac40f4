import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import YAML from 'yaml';
import { MAX_POLICY_BYTES, parsePolicyYaml, validatePolicy, type Policy } from '../../services/lib/policy.ts';
import { check, mutated, utf8, type Target } from './harness.ts';

// Policy YAML. Properties: it parses into a well-formed Policy or is refused
// with a code; a policy that parses re-validates to itself, from its object
// form and from YAML written back; every duration fits a Node.js timer.

const KEY_A = 'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY='; // 32 bytes
const KEY_B = 'MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=';
const hex = 'a'.repeat(64);

const any = fc.oneof(fc.string({ maxLength: 8 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constant([]), fc.constant({}));
const maybe = <T>(a: fc.Arbitrary<T>) => fc.option(fc.oneof({ weight: 5, arbitrary: a as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: any }), { nil: undefined });
const duration = fc.oneof(
  fc.constantFrom('10m', '1m', '300ms', '30s', '0s', '0', 0, 1, 596, '596h', '597h', '2147483647ms', '2147483648ms', '99999999999999999999h', '1.5s', '-1s', '10 m', '10M', 'ms', 2147484, 1e20, -1),
  fc.tuple(fc.nat(), fc.constantFrom('ms', 's', 'm', 'h')).map(([n, u]) => `${n}${u}`),
);
const key = fc.record({ id: fc.constantFrom('admin', 'release-2026', 'b', 'Bad', '', 'x'.repeat(65)), ed25519: fc.constantFrom(KEY_A, KEY_B, 'short', '', KEY_A + '=') }, { requiredKeys: [] });
const image = fc.record(
  {
    name: fc.constantFrom('library/alpine', 'app', 'a.b/c-d', 'UPPER', '', 'a//b', '../x'),
    tag: fc.constantFrom('v1', 'latest', '', 'x'.repeat(129), '_a', '-a'),
    source: fc.constantFrom('https://example.test/a.tar', 'http://h/a.tar', 'file:///srv/a.tar', `oci://reg:5000/repo@sha256:${hex}`, `oci://reg/repo@sha256:${'b'.repeat(64)}`, 'ftp://x', 'not a url', 'javascript:alert(1)', 'oci://reg/@sha256:'),
    sha256: fc.constantFrom(hex, 'A'.repeat(64), 'a'.repeat(63), ''),
    size: maybe(fc.oneof(fc.integer({ min: -1, max: 10 ** 12 }), fc.constant(2 ** 53))),
    allowHttp: maybe(fc.boolean()),
    redirects: maybe(fc.record({ max: maybe(fc.integer({ min: -1, max: 11 })), hosts: maybe(fc.array(fc.constantFrom('cdn.test', 'h:443', 'bad host', ''), { maxLength: 3 })) }, { requiredKeys: [] })),
    signatures: maybe(fc.record({ keys: maybe(fc.array(fc.constantFrom('admin', 'release-2026', 'nope'), { maxLength: 3 })), threshold: maybe(fc.integer({ min: 0, max: 4 })), url: maybe(fc.constantFrom('https://s/x.sig', 'file:///x.sig', 'ftp://x')) }, { requiredKeys: [] })),
    import: maybe(fc.record({ containerd: maybe(fc.oneof(fc.constant(false), fc.constant(true), fc.record({ namespace: maybe(fc.constantFrom('services.linuxkit', 'k8s.io', '-bad', '')) }, { requiredKeys: [] }))), docker: maybe(fc.boolean()) }, { requiredKeys: [] })),
  },
  { requiredKeys: [] },
);
const doc = fc.record(
  {
    apiVersion: fc.constantFrom('sealkit/v1', 'sealkit/v1', 'sealkit/v2'),
    kind: fc.constantFrom('NodePolicy', 'NodePolicy', 'Policy'),
    serial: fc.oneof(fc.integer({ min: -1, max: 10 ** 6 }), fc.constantFrom(2 ** 53, 1.5, '1')),
    keys: maybe(fc.array(key, { maxLength: 3 })),
    images: maybe(fc.array(image, { maxLength: 4 })),
    verifiers: maybe(fc.array(fc.record({ subject: fc.constantFrom('verify.image.cosign', 'verify', 'other.x'), required: maybe(fc.boolean()), timeoutMs: maybe(fc.integer({ min: 0, max: 70_000 })) }, { requiredKeys: [] }), { maxLength: 2 })),
    ima: maybe(fc.record({ mode: maybe(fc.constantFrom('enforce', 'log', 'off', 'on')), reverify: maybe(duration), signatures: maybe(fc.boolean()) }, { requiredKeys: [] })),
    limits: maybe(fc.record({ maxImageBytes: maybe(fc.integer({ min: 0, max: 2 ** 40 })), fetchTimeout: maybe(duration), stallTimeout: maybe(duration), maxArchiveEntries: maybe(fc.nat()), maxUnpackedBytes: maybe(fc.nat()) }, { requiredKeys: [] })),
  },
  { requiredKeys: ['apiVersion', 'kind', 'serial'] },
);
const clean = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (_k, x) => (x === undefined ? undefined : x)));
const valid = fc.constant(
  YAML.stringify({
    apiVersion: 'sealkit/v1',
    kind: 'NodePolicy',
    serial: 3,
    keys: [{ id: 'admin', ed25519: KEY_A }],
    images: [{ name: 'library/alpine', tag: 'v1', source: 'https://example.test/a.tar', sha256: hex, signatures: { keys: ['admin'] } }],
    ima: { mode: 'enforce', reverify: '10m' },
    limits: { fetchTimeout: '30m', stallTimeout: '30s' },
  }),
);
// mostly small, sometimes near the 256 KiB limit
const size = (max: number) => fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 64 }) }, { weight: 1, arbitrary: fc.integer({ min: 1, max }) });
// YAML-level hostility: anchors and aliases (billion laughs), deep nesting,
// tags, merge keys, duplicate keys, several documents.
const yamlTricks = fc.oneof(
  fc.integer({ min: 1, max: 40 }).map((n) => `apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\na0: &a0 [x, x]\n${Array.from({ length: n }, (_, i) => `a${i + 1}: &a${i + 1} [*a${i}, *a${i}]`).join('\n')}\n`),
  size(130_000).map((n) => `apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\nimages: ${'['.repeat(n)}${']'.repeat(n)}\n`),
  size(65_000).map((n) => `apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\nimages: ${'{a: '.repeat(n)}1${'}'.repeat(n)}\n`),
  size(720).map((n) => `apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\nimages:\n${Array.from({ length: n }, (_, i) => `${' '.repeat(i)}- `).join('\n')}\n`),
  fc.constantFrom(
    'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\nserial: 2\n',
    'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: !!int 1\nkeys: !!set {a}\n',
    'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\n---\nserial: 2\n',
    'base: &b {apiVersion: sealkit/v1, kind: NodePolicy}\n<<: *b\nserial: 1\n',
    'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\n__proto__: {x: 1}\n',
    'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 0x10\n',
    'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1e3\n',
    'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 9007199254740993\n',
    'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: !!binary aGVsbG8=\n',
    'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\nimages: !!omap [a: 1]\n',
    'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\nima: {mode: !!str enforce, reverify: !!timestamp 2001-12-14}\n',
    '%YAML 1.1\n---\napiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\nima: {signatures: yes}\n',
    '? [a, b]\n: c\napiVersion: sealkit/v1\n',
    '',
    '~',
    '- 1',
  ),
);
const text = fc.oneof(
  { weight: 4, arbitrary: doc.map((d) => YAML.stringify(clean(d))) },
  { weight: 1, arbitrary: doc.map((d) => JSON.stringify(clean(d))) },
  { weight: 2, arbitrary: yamlTricks },
  { weight: 1, arbitrary: valid },
);

// The object form of a parsed policy, as an operator would write it.
export function policyDoc(p: Policy): Record<string, unknown> {
  return {
    apiVersion: p.apiVersion,
    kind: p.kind,
    serial: p.serial,
    keys: p.keys,
    images: p.images,
    verifiers: p.verifiers,
    ima: { mode: p.ima.mode, reverify: `${p.ima.reverifyMs}ms`, signatures: p.ima.signatures },
    limits: {
      maxImageBytes: p.limits.maxImageBytes,
      fetchTimeout: `${p.limits.fetchTimeoutMs}ms`,
      stallTimeout: `${p.limits.stallTimeoutMs}ms`,
      maxArchiveEntries: p.limits.maxArchiveEntries,
      maxUnpackedBytes: p.limits.maxUnpackedBytes,
    },
  };
}

export const target: Target = {
  name: 'policy',
  timeoutMs: 10_000,
  arbitrary: () => fc.oneof({ weight: 3, arbitrary: text.map(utf8) }, { weight: 2, arbitrary: mutated(text.map(utf8), 6) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) }),
  run(input) {
    let p: Policy;
    try {
      p = parsePolicyYaml(input);
    } catch (err) {
      throw err;
    }
    check(input.length <= MAX_POLICY_BYTES + 4 * 1024 || Buffer.byteLength(Buffer.from(input).toString('utf8')) <= MAX_POLICY_BYTES, 'an oversized policy was accepted');
    for (const [what, ms] of [['ima.reverify', p.ima.reverifyMs], ['limits.fetchTimeout', p.limits.fetchTimeoutMs], ['limits.stallTimeout', p.limits.stallTimeoutMs]] as const) {
      check(Number.isSafeInteger(ms) && ms >= 1 && ms <= 2 ** 31 - 1, `${what} = ${ms} ms does not fit a Node.js timer (fires after 1 ms instead)`);
    }
    const again = validatePolicy(policyDoc(p));
    check(isDeepStrictEqual(again, p), 'a parsed policy does not re-validate to itself from its object form');
    const yaml = YAML.stringify(policyDoc(p));
    const reparsed = parsePolicyYaml(yaml);
    check(isDeepStrictEqual(reparsed, p), 'a parsed policy written back as YAML parses to something else');
  },
};
