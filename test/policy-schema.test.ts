import test from 'ava';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import YAML from 'yaml';
import { Ajv } from 'ajv';
import { repoRoot } from '../services/lib/config.ts';
import { SCHEMA_HINTS, generatedPath, policyValidatorSource } from '../iso/policy-validator.ts';
import { parsePolicyYaml, validatePolicy } from '../services/lib/policy.ts';
import { KEY_ID } from '../services/lib/sign.ts';
import { SHA256_HEX } from '../services/lib/digest.ts';
import { isSealkitError } from '../services/lib/errors.ts';

// policy.schema.json is what editors check a policy against (the README's
// yaml-language-server modeline names it) and what the node checks it
// against: the same file must accept what the node accepts and say where
// the rest is wrong.

type Json = Record<string, any>;

const schemaPath = join(repoRoot, 'services', 'lib', 'policy.schema.json');
const schema: Json = JSON.parse(readFileSync(schemaPath, 'utf8'));
const MODELINE = /^# yaml-language-server: \$schema=(\S+)$/m;

// A fresh ajv, as an editor or CI would load the file: strict, with the
// editor hint keywords declared; union types (a duration is whole seconds or
// a string) allowed.
function compile() {
  return new Ajv({ strict: true, allowUnionTypes: true, keywords: SCHEMA_HINTS }).compile(schema);
}

// The policies a user copies: the README's, and the one docs/signatures.md
// writes with printf.
function examples(): Array<{ where: string; text: string }> {
  const out: Array<{ where: string; text: string }> = [];
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  for (const [i, m] of [...readme.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].entries()) {
    if (/^kind: NodePolicy$/m.test(m[1])) out.push({ where: `README.md yaml block ${i + 1}`, text: m[1] });
  }
  const docs = readFileSync(join(repoRoot, 'docs', 'signatures.md'), 'utf8');
  for (const m of docs.matchAll(/printf '(apiVersion: [^']*)' > policy\.yaml/g)) out.push({ where: 'docs/signatures.md printf', text: m[1].replace(/\\n/g, '\n') });
  return out;
}

test('the schema file is a draft-07 JSON Schema that ajv compiles in strict mode', (t) => {
  const ajv = new Ajv({ strict: true, allowUnionTypes: true, keywords: SCHEMA_HINTS });
  t.true(ajv.validateSchema(schema), ajv.errorsText(ajv.errors));
  t.is(schema.$schema, 'http://json-schema.org/draft-07/schema#');
  t.truthy(schema.$id);
  t.notThrows(compile);
});

// The node runs a validator generated from the file ahead of time; one that
// no longer matches the file would accept or refuse what editors do not.
test('the committed validator is the one ajv generates from the schema file now', (t) => {
  t.is(readFileSync(generatedPath, 'utf8'), policyValidatorSource(), 'services/lib/policy-validate.gen.ts is stale: run make schema');
});

test('every example policy the README and docs show validates against the schema file, and the node accepts it', (t) => {
  const validate = compile();
  const found = examples();
  t.true(found.filter((e) => e.where.startsWith('README')).length >= 2, 'the README shows its example policies');
  for (const { where, text } of found) {
    t.true(validate(YAML.parse(text)), `${where}: ${JSON.stringify(validate.errors)}`);
    t.notThrows(() => parsePolicyYaml(text), where);
  }
});

test("the README's policies carry the modeline, and it names the schema file from where policy.yaml sits", (t) => {
  for (const { where, text } of examples().filter((e) => e.where.startsWith('README'))) {
    const m = MODELINE.exec(text.split('\n')[0]);
    t.truthy(m, `${where} starts with "# yaml-language-server: $schema=…"`);
    // the first session keeps policy.yaml in the checkout, where the CLI runs
    t.is(resolve(repoRoot, m![1]), schemaPath, where);
  }
});

test("the schema's key id and digest patterns are the library's", (t) => {
  t.is(schema.definitions.keyId.pattern, KEY_ID.source);
  t.is(schema.definitions.sha256.pattern, SHA256_HEX.source);
});

// Fill every default the schema states into a document, following $ref and
// the object branch of anyOf, without overriding what is written.
function withDefaults(node: Json, value: unknown): unknown {
  const s: Json = node.$ref ? schema.definitions[node.$ref.replace('#/definitions/', '')] : node;
  if (s.anyOf) {
    const branch = s.anyOf.find((b: Json) => b.$ref);
    return branch && value !== null && typeof value === 'object' ? withDefaults(branch, value) : value;
  }
  if (Array.isArray(value)) return value.map((v) => withDefaults(s.items ?? {}, v));
  if (value === null || typeof value !== 'object' || !s.properties) return value;
  const out: Json = { ...value };
  for (const [k, p] of Object.entries<Json>(s.properties)) {
    if (out[k] === undefined && p.default !== undefined) out[k] = structuredClone(p.default);
    if (out[k] !== undefined) out[k] = withDefaults(p, out[k]);
  }
  return out;
}

test('the defaults the schema shows editors are the ones the node applies', (t) => {
  const bare = {
    apiVersion: 'sealkit/v1',
    kind: 'NodePolicy',
    serial: 1,
    keys: [{ id: 'release', ed25519: 'A'.repeat(43) + '=' }],
    images: [{ name: 'acme/base', tag: '1', source: 'https://images.example/a.tar', sha256: 'a'.repeat(64), signatures: { keys: ['release'] }, import: { containerd: {} }, redirects: {} }],
    containers: [{ name: 'web', image: 'acme/base', backoff: {}, resources: {}, mounts: [{ type: 'tmpfs', destination: '/tmp' }] }],
    verifiers: [{ subject: 'verify.image.cosign' }],
    ima: {},
    limits: {},
  };
  const explicit = withDefaults(schema, bare) as Json;
  t.notDeepEqual(explicit, bare, 'the schema states defaults');
  t.is(explicit.limits.fetchTimeout, '30m');
  t.deepEqual(validatePolicy(explicit), validatePolicy(bare));
  const { import: _i, redirects: _r, ...fewest } = bare.images[0];
  const { backoff: _b, resources: _rs, ...fewestContainer } = bare.containers[0];
  const { ima: _m, limits: _l, ...top } = bare;
  t.deepEqual(validatePolicy({ ...top, images: [fewest], containers: [fewestContainer] }), validatePolicy(bare), 'an absent mapping takes the same defaults as an empty one');
  const c = validatePolicy(bare).containers[0];
  t.deepEqual([c.restart, c.network, c.onTamper, c.capabilities, c.backoff], ['always', 'none', 'stop', [], { initialMs: 1000, maxMs: 300_000 }], 'a container runs with no capabilities and no network unless the policy says so');
});

// The refusals a push answers with: SEALKIT_POLICY_SCHEMA, the path of the
// field as written in YAML, and the message naming it.
const KEY = 'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=';
const sha = 'c'.repeat(64);
const good = (): Json => ({
  apiVersion: 'sealkit/v1',
  kind: 'NodePolicy',
  serial: 6,
  keys: [{ id: 'release', ed25519: KEY }],
  images: [{ name: 'library/alpine', tag: '3.19', source: 'https://images.example/alpine.tar', sha256: sha, signatures: { keys: ['release'], threshold: 1 } }],
});
const img = (d: Json) => d.images[0];

const refusals: Array<[string, (d: Json) => unknown, string]> = [
  ['an unknown top-level field', (d) => (d.extra = 1), 'extra'],
  ['an unknown field in an image', (d) => (img(d).tagg = 'x'), 'images[0].tagg'],
  ['a missing required field', (d) => delete img(d).sha256, 'images[0].sha256'],
  ['a missing serial', (d) => delete d.serial, 'serial'],
  [
    'a misspelt required field',
    (d) => {
      img(d).sah256 = sha;
      delete img(d).sha256;
    },
    'images[0].sah256',
  ],
  ['serial 0', (d) => (d.serial = 0), 'serial'],
  ['another apiVersion', (d) => (d.apiVersion = 'sealkit/v2'), 'apiVersion'],
  ['images that are not a list', (d) => (d.images = {}), 'images'],
  ['a malformed digest', (d) => (img(d).sha256 = 'abc'), 'images[0].sha256'],
  ['an upper-case image name', (d) => (img(d).name = 'Library/alpine'), 'images[0].name'],
  ['a duration of the wrong type', (d) => (d.ima = { reverify: true }), 'ima.reverify'],
  ['a duration of 0 seconds', (d) => (d.limits = { fetchTimeout: 0 }), 'limits.fetchTimeout'],
  ['a duration past what a timer holds', (d) => (d.ima = { reverify: '597h' }), 'ima.reverify'],
  ['an IMA mode that does not exist', (d) => (d.ima = { mode: 'on' }), 'ima.mode'],
  ['containerd: true', (d) => (img(d).import = { containerd: true }), 'images[0].import.containerd'],
  ['an unknown field under containerd', (d) => (img(d).import = { containerd: { ns: 'x' } }), 'images[0].import.containerd.ns'],
  ['a bad containerd namespace', (d) => (img(d).import = { containerd: { namespace: '-x' } }), 'images[0].import.containerd.namespace'],
  ['a redirect host with a space', (d) => (img(d).redirects = { hosts: ['cdn.example', 'bad host'] }), 'images[0].redirects.hosts[1]'],
  ['a key that is not 32 bytes', (d) => (d.keys[0].ed25519 = 'short'), 'keys[0].ed25519'],
  ['duplicate key ids', (d) => d.keys.push({ ...d.keys[0] }), 'keys[1].id'],
  ['a signature key not under keys:', (d) => (img(d).signatures.keys = ['nope']), 'images[0].signatures.keys[0]'],
  ['no signature keys', (d) => (img(d).signatures.keys = []), 'images[0].signatures.keys'],
  ['a threshold above the number of keys', (d) => (img(d).signatures.threshold = 2), 'images[0].signatures.threshold'],
  ['plain http without allowHttp', (d) => (img(d).source = 'http://images.example/a.tar'), 'images[0].source'],
  ['an unsupported scheme', (d) => (img(d).source = 'ftp://images.example/a.tar'), 'images[0].source'],
  ['an oci:// digest other than sha256', (d) => (img(d).source = `oci://reg.example/alpine@sha256:${'d'.repeat(64)}`), 'images[0].sha256'],
  ['duplicate image names', (d) => d.images.push({ ...img(d), tag: '2' }), 'images[1].name'],
  ['a container of an image not under images:', (d) => (d.containers = [{ name: 'web', image: 'library/busybox' }]), 'containers[0].image'],
  ['a container without an image', (d) => (d.containers = [{ name: 'web' }]), 'containers[0].image'],
  ['an upper-case container name', (d) => (d.containers = [{ name: 'Web', image: 'library/alpine' }]), 'containers[0].name'],
  ['duplicate container names', (d) => (d.containers = [{ name: 'web', image: 'library/alpine' }, { name: 'web', image: 'library/alpine' }]), 'containers[1].name'],
  ['a restart policy that does not exist', (d) => (d.containers = [{ name: 'web', image: 'library/alpine', restart: 'sometimes' }]), 'containers[0].restart'],
  ['a capability that does not exist', (d) => (d.containers = [{ name: 'web', image: 'library/alpine', capabilities: ['CAP_NET_BIND_SERVICE', 'CAP_ROOT'] }]), 'containers[0].capabilities[1]'],
  ['a memory limit under 4Mi', (d) => (d.containers = [{ name: 'web', image: 'library/alpine', resources: { memory: '1Mi' } }]), 'containers[0].resources.memory'],
  ['a bind mount without a source', (d) => (d.containers = [{ name: 'web', image: 'library/alpine', mounts: [{ type: 'bind', destination: '/etc/app' }] }]), 'containers[0].mounts[0].source'],
  ['a relative mount destination', (d) => (d.containers = [{ name: 'web', image: 'library/alpine', mounts: [{ type: 'tmpfs', destination: 'tmp' }] }]), 'containers[0].mounts[0].destination'],
  ['a user name instead of a uid', (d) => (d.containers = [{ name: 'web', image: 'library/alpine', user: 'nobody' }]), 'containers[0].user'],
  ['a backoff that starts above its max', (d) => (d.containers = [{ name: 'web', image: 'library/alpine', backoff: { initial: '10m', max: '1m' } }]), 'containers[0].backoff.initial'],
  ['a network mode that does not exist', (d) => (d.containers = [{ name: 'web', image: 'library/alpine', network: 'bridge' }]), 'containers[0].network'],
];

for (const [what, spoil, path] of refusals) {
  test(`policy refusal, ${what}: at ${path}`, (t) => {
    t.notThrows(() => validatePolicy(good()));
    const doc = good();
    spoil(doc);
    const err = t.throws(() => validatePolicy(doc));
    t.true(isSealkitError(err, 'SEALKIT_POLICY_SCHEMA'), `${err?.message}`);
    t.is((err as { data?: Json }).data?.path, path, err?.message);
    t.true(err!.message.startsWith(`policy ${path}: `), err?.message);
  });
}

test('a document that is not a mapping is refused as a whole', (t) => {
  for (const doc of [[], 'policy', null, 5]) {
    const err = t.throws(() => validatePolicy(doc));
    t.true(isSealkitError(err, 'SEALKIT_POLICY_SCHEMA'), `${err?.message}`);
    t.is((err as { data?: Json }).data?.path, '', err?.message);
    t.regex(err!.message, /^policy: must be a mapping/);
  }
});

test("a pattern's refusal says what the editor says", (t) => {
  const doc = good();
  img(doc).sha256 = 'abc';
  const err = t.throws(() => validatePolicy(doc));
  t.true(err!.message.includes(schema.definitions.sha256.patternErrorMessage), err?.message);
});
