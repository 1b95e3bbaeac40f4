import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import YAML from 'yaml';
import AjvDraft04 from 'ajv-draft-04';
import { testCases } from '../iso/build.ts';

// a CommonJS module: under NodeNext its class is the default export's .default
const Ajv = AjvDraft04.default;

// linuxkit.yml must be a file `linuxkit build` accepts: LinuxKit validates
// it against this draft-04 schema and rejects every key the schema lacks.
const root = join(import.meta.dirname, '..');
const schemaPath = join(root, 'iso', 'linuxkit', 'schema.json');

async function validator() {
  const schema = JSON.parse(await readFile(schemaPath, 'utf8'));
  const ajv = new Ajv({ allErrors: true, strict: false });
  return ajv.compile(schema);
}

async function image(): Promise<Record<string, any>> {
  return YAML.parse(await readFile(join(root, 'linuxkit.yml'), 'utf8'));
}

test('linuxkit.yml validates against the LinuxKit schema', async (t) => {
  const validate = await validator();
  const ok = validate(await image());
  t.true(ok, JSON.stringify(validate.errors, null, 2));
});

test('a key LinuxKit does not know is rejected', async (t) => {
  const validate = await validator();
  const doc = await image();
  doc.services[0].restart = 'always';
  t.false(validate(doc));
  t.true(validate.errors!.some((e: { keyword: string; params: unknown }) => e.keyword === 'additionalProperties' && (e.params as { additionalProperty: string }).additionalProperty === 'restart'));

  const top = await image();
  top.outputs = [{ format: 'iso-bios' }];
  t.false(validate(top));
});

test('every sealkit service runs as its own service with its own bus credentials', async (t) => {
  const doc = await image();
  const services = new Map<string, Record<string, any>>(doc.services.map((s: Record<string, any>) => [s.name, s]));
  for (const name of ['nats-server', 'policy', 'fetcher', 'importer', 'ima', 'runner', 'auditor', 'nodeinfo']) {
    t.truthy(services.get(name), `service ${name} is missing`);
  }
  for (const name of ['policy', 'fetcher', 'importer', 'ima', 'runner', 'auditor', 'nodeinfo']) {
    const s = services.get(name)!;
    t.is(s.image, `sealkit/${name}:dev`);
    t.true(s.env.includes(`SEALKIT_NATS_CREDS=/etc/sealkit/bus/creds/${name}.json`), `${name} uses its own credentials`);
    const creds = (s.binds as string[]).filter((b) => b.includes('/bus/creds/'));
    t.deepEqual(creds, [`/etc/sealkit/bus/creds/${name}.json:/etc/sealkit/bus/creds/${name}.json:ro`], `${name} sees only its own credentials`);
    t.true(Array.isArray(s.capabilities), `${name} lists its capabilities rather than taking the defaults`);
  }
  t.deepEqual(services.get('auditor')!.capabilities, ['CAP_SYSLOG']);
  t.deepEqual(services.get('fetcher')!.capabilities, []);
  t.true((doc.onboot as Array<{ name: string }>).some((o) => o.name === 'bus-init'));
  t.true((doc.onboot as Array<{ name: string }>).some((o) => o.name === 'ima-policy'));
  t.notRegex(doc.kernel.cmdline, /ima_policy=/, 'the one policy write per boot belongs to the onboot step');
});

test('every test case (test/cases/*/test.yml) validates against the LinuxKit schema', async (t) => {
  const validate = await validator();
  const cases = testCases(root);
  t.true(cases.length >= 2, `test cases: ${cases.join(', ')}`);
  for (const name of cases) {
    const doc = YAML.parse(await readFile(join(root, 'test', 'cases', name, 'test.yml'), 'utf8'));
    t.true(validate(doc), `${name}: ${JSON.stringify(validate.errors, null, 2)}`);
  }
});
