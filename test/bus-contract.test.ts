import test from 'ava';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import YAML from 'yaml';
import { checkData, checkReply, contract, matches, serviceNames, specs, type VerifiedImage } from '../services/lib/contract.ts';
import { streams } from '../services/lib/subjects.ts';
import { permissions } from '../services/lib/natsconf.ts';
import { isSealkitError, type SealkitError } from '../services/lib/errors.ts';

// The bus contract against what is built from it and what ships: every
// service has a package and a place in linuxkit.yml, every event is kept by
// exactly one stream, only a subject's publishers may publish it, and a
// payload that breaks the contract is refused naming subject and field.

const root = join(import.meta.dirname, '..');
// packages that are not bus services: the bus itself, the store mount, and
// the onboot step that creates the streams as the admin user
const infrastructure = ['nats-server', 'store', 'bus-init'];

interface LinuxkitEntry {
  name: string;
  image: string;
  env?: string[];
}

async function linuxkit(): Promise<{ onboot: LinuxkitEntry[]; services: LinuxkitEntry[]; files: Array<{ path: string }> }> {
  return YAML.parse(await readFile(join(root, 'linuxkit.yml'), 'utf8'));
}

test('every service has its process, its package and its place in linuxkit.yml with its own bus credentials', async (t) => {
  const lk = await linuxkit();
  for (const name of serviceNames) {
    t.true(existsSync(join(root, 'services', name, 'main.ts')), `services/${name}/main.ts`);
    t.true(existsSync(join(root, 'pkg', name, 'build.yml')), `pkg/${name}/build.yml`);
    t.regex(await readFile(join(root, 'pkg', name, 'Dockerfile'), 'utf8'), new RegExp(`dist/services/${name}/main\\.js`), `pkg/${name}/Dockerfile runs the ${name} service`);
    const entry = lk.services.find((s) => s.name === name);
    t.truthy(entry, `linuxkit.yml services has ${name}`);
    t.is(entry?.image, `sealkit/${name}:dev`);
    t.true(entry?.env?.includes(`SEALKIT_NATS_CREDS=/etc/sealkit/bus/creds/${name}.json`), `${name} connects as the ${name} bus user`);
    t.true(lk.files.some((f) => f.path === `etc/sealkit/bus/creds/${name}.json`), `linuxkit.yml ships ${name}'s credentials`);
  }
});

test('every package and every sealkit container in linuxkit.yml is a service of the contract or named infrastructure', async (t) => {
  const lk = await linuxkit();
  for (const dir of await readdir(join(root, 'pkg'))) {
    t.true((serviceNames as readonly string[]).includes(dir) || infrastructure.includes(dir), `pkg/${dir} is neither a service in serviceNames nor infrastructure`);
  }
  for (const entry of [...lk.onboot, ...lk.services]) {
    const pkg = /^sealkit\/([^:]+):/.exec(entry.image)?.[1];
    if (!pkg) continue;
    const service = (serviceNames as readonly string[]).includes(entry.name);
    // an onboot step may run a service's image for a one-off command (ima-policy)
    t.true(service || infrastructure.includes(pkg) || (serviceNames as readonly string[]).includes(pkg), `linuxkit.yml ${entry.name} runs sealkit/${pkg}`);
    if (service) t.is(pkg, entry.name);
  }
});

test('every event subject is kept by exactly one stream, and no request or signal by any', (t) => {
  const all = [streams.audit, streams.events];
  for (const s of specs) {
    const keeping = all.filter((st) => st.subjects.some((f) => matches(f, s.subject))).map((st) => st.name);
    if (s.kind === 'event') t.deepEqual(keeping, [s.stream === 'audit' ? streams.audit.name : streams.events.name], s.subject);
    else t.deepEqual(keeping, [], `${s.subject} is a ${s.kind}: no stream may capture it`);
  }
});

test('audit subjects have exactly two tokens, so that audit.* sees all of them', (t) => {
  const audit = specs.filter((s) => s.stream === 'audit');
  t.true(audit.length > 0);
  for (const s of audit) t.regex(s.subject, /^audit\.[a-z_]+$/);
  t.false(specs.some((s) => s.stream !== 'audit' && matches('audit.*', s.subject)));
});

test('a subject may be published by its publishers and by no other service', (t) => {
  for (const s of specs) {
    for (const name of serviceNames) {
      const may = permissions[name].publish.some((f) => matches(f, s.subject));
      t.is(may, s.from.includes(name), `${name} ${may ? 'may' : 'may not'} publish ${s.subject}`);
    }
  }
});

test('a subject is subscribed to by its listeners and answerers and by no other service', (t) => {
  for (const s of specs) {
    for (const name of serviceNames) {
      const may = permissions[name].subscribe.some((f) => matches(f, s.subject));
      t.is(may, s.to.includes(name), `${name} ${may ? 'may' : 'may not'} subscribe to ${s.subject}`);
    }
  }
});

const verified: VerifiedImage = {
  name: 'sealkit/app',
  tag: 'v1',
  source: 'https://images.example/app.tar',
  sha256: 'a'.repeat(64),
  size: 10,
  policySerial: 3,
  manifestDigest: `sha256:${'b'.repeat(64)}`,
  format: 'oci-archive',
  compression: 'none',
  archive: { path: `/state/fetcher/cache/sha256/${'a'.repeat(64)}`, sha256: 'a'.repeat(64), size: 10 },
  signedBy: [],
  verifiers: [],
};

function refusal(f: () => unknown): SealkitError {
  try {
    f();
  } catch (err) {
    if (isSealkitError(err)) return err;
    throw err;
  }
  throw new Error('accepted');
}

test('a well-formed image.verified passes the check unchanged', (t) => {
  t.is(checkData(contract.image.verified, verified), verified);
});

test('a malformed payload is refused naming the subject and the field', (t) => {
  const cases: Array<[unknown, string]> = [
    [{ ...verified, archive: { ...verified.archive, sha256: 'not-a-digest' } }, 'data.archive.sha256'],
    [{ ...verified, name: 7 }, 'data.name'],
    [{ ...verified, format: 'tarball' }, 'data.format'],
    [{ ...verified, manifestDigest: null }, 'data.manifestDigest'], // an oci-archive has a manifest
    [{ ...verified, verifiers: [{ subject: 'verify.x', decision: 'maybe' }] }, 'data.verifiers[0].decision'],
    [{ ...verified, archive: undefined }, 'data.archive'],
  ];
  for (const [data, field] of cases) {
    const e = refusal(() => checkData(contract.image.verified, data));
    t.is(e.code, 'SEALKIT_BAD_REQUEST', field);
    t.deepEqual(e.data, { subject: 'image.verified', field });
    t.true(e.message.includes('image.verified') && e.message.includes(field), e.message);
  }
  t.deepEqual(refusal(() => checkData(contract.image.verified, null)).data, { subject: 'image.verified', field: 'data' });
});

test('a malformed image.imported names its target field, and a reply is checked like a payload', (t) => {
  const imported = { name: 'sealkit/app', tag: 'v1', sha256: 'a'.repeat(64), source: 's', manifestDigest: null, policySerial: 1, archive: { path: '/x', sha256: 'a'.repeat(64), format: 'docker-archive', compression: 'gzip' }, targets: [{ runtime: 'containerd', namespace: 'ns', ref: 'r' }] };
  t.deepEqual(refusal(() => checkData(contract.image.imported, imported)).data, { subject: 'image.imported', field: 'data.targets[0].digest' });
  t.deepEqual(refusal(() => checkReply(contract.ping, { service: 'ima', node: 'n', pid: -1, uptimeSec: 1, version: '0' })).data, { subject: 'sealkit.ping', field: 'reply.pid' });
});
