import test from 'ava';
import type { NatsConnection } from 'nats';
import { decode, encode } from '../services/lib/bus.ts';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { startHttp, type TestServer } from './helpers/http.ts';
import { startFetcherRig, type FetcherRig } from './helpers/fetcher.ts';

let rig: FetcherRig;
let web: TestServer;
let img: BuiltImage;
let plugin: NatsConnection;
const asked: any[] = [];
test.before(async () => {
  rig = await startFetcherRig();
  web = await startHttp();
  img = await buildImage({ name: 'test/plugins' });
  web.route('/plugins.tar', { body: img.archive });
  plugin = await rig.nats.connectAs('verifier');
  plugin.subscribe('verify.image.allow', { callback: (_e, m) => (asked.push(decode(m.data)), m.respond(encode({ allow: true }))) });
  plugin.subscribe('verify.image.deny', { callback: (_e, m) => m.respond(encode({ allow: false, reason: 'CVE-2026-0001 in layer 0' })) });
  plugin.subscribe('verify.image.silent', { callback: () => {} });
  await plugin.flush();
});
test.after.always(async () => {
  await plugin?.close();
  await web?.close();
  await rig?.cleanup();
});

const withVerifiers = (verifiers: object[]) => {
  const policy = rig.policy({ verifiers, images: [{ name: img.name, tag: 'v1', source: web.url('/plugins.tar'), sha256: img.sha256, allowHttp: true }] });
  return rig.fetcher.fetch(policy.images[0], policy);
};
async function refused(t: any, verifiers: object[], code: string) {
  const audit = rig.audit.next((e) => e.data.name === img.name);
  const err: any = await t.throwsAsync(withVerifiers(verifiers));
  t.is(err.code, code, err.message);
  t.is((await audit).data.code, code);
  return err;
}

test.serial('an allowing plugin is asked with the OCI descriptor and recorded', async (t) => {
  const got = await withVerifiers([{ subject: 'verify.image.allow' }, { subject: 'verify.image.optional', required: false }]);
  t.deepEqual(got.verifiers, [{ subject: 'verify.image.allow', decision: 'allow' }, { subject: 'verify.image.optional', decision: 'absent' }]);
  t.deepEqual(asked.at(-1), { mediaType: 'application/x-tar', digest: `sha256:${img.sha256}`, size: img.size, annotations: { name: img.name, tag: 'v1', source: web.url('/plugins.tar') } });
});

test.serial('a deny blocks the image with the plugin reason', async (t) => {
  const err = await refused(t, [{ subject: 'verify.image.allow' }, { subject: 'verify.image.deny', required: false }], 'SEALKIT_VERIFIER_DENIED');
  t.regex(err.message, /CVE-2026-0001/);
});

test.serial('a required plugin that does not answer in time blocks the image', async (t) => {
  await refused(t, [{ subject: 'verify.image.silent', timeoutMs: 200 }], 'SEALKIT_VERIFIER_TIMEOUT');
});

test.serial('a required plugin that is not running blocks the image', async (t) => {
  await refused(t, [{ subject: 'verify.image.gone' }], 'SEALKIT_VERIFIER_ABSENT');
});
