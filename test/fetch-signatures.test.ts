import test from 'ava';
import { generateKey } from '../services/lib/sign.ts';
import { signImage } from '../services/fetcher/signatures.ts';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { startHttp, type TestServer } from './helpers/http.ts';
import { startFetcherRig, type FetcherRig } from './helpers/fetcher.ts';

let rig: FetcherRig;
let web: TestServer;
let img: BuiltImage;
const [a, b, c, stranger] = ['rel-a', 'rel-b', 'rel-c', 'stranger'].map((id) => generateKey(id));
const keys = [a, b, c].map((k) => ({ id: k.id, ed25519: k.ed25519 }));
test.before(async () => {
  rig = await startFetcherRig();
  web = await startHttp();
  img = await buildImage({ name: 'test/signed' });
  web.route('/signed.tar', { body: img.archive });
});
test.after.always(async () => {
  await web?.close();
  await rig?.cleanup();
});

const statement = () => ({ name: img.name, tag: 'v1', sha256: img.sha256, size: img.size });
async function fetchWith(sigs: object, threshold: number) {
  web.route('/signed.tar.sig', { body: JSON.stringify(sigs) });
  const policy = rig.policy({ keys, images: [{ name: img.name, tag: 'v1', source: web.url('/signed.tar'), sha256: img.sha256, allowHttp: true, signatures: { keys: ['rel-a', 'rel-b', 'rel-c'], threshold } }] });
  return rig.fetcher.fetch(policy.images[0], policy);
}
async function refused(t: any, sigs: object, threshold: number, code: string) {
  const audit = rig.audit.next((e) => e.data.name === img.name);
  const err: any = await t.throwsAsync(fetchWith(sigs, threshold));
  t.is(err.code, code, err.message);
  t.is((await audit).data.code, code);
}

test.serial('two of three trusted keys meet a threshold of two', async (t) => {
  const got = await fetchWith(signImage(statement(), [a, c]), 2);
  t.deepEqual(got.signedBy.sort(), ['rel-a', 'rel-c']);
});

test.serial('a signature over other bytes is refused', async (t) => {
  await refused(t, signImage({ ...statement(), tag: 'v2' }, [a]), 1, 'SEALKIT_SIGNATURE_INVALID');
});

test.serial('a signature by a key the image does not trust is refused', async (t) => {
  await refused(t, signImage(statement(), [stranger]), 1, 'SEALKIT_KEY_UNTRUSTED');
});

test.serial('one valid signature does not meet a threshold of two', async (t) => {
  await refused(t, signImage(statement(), [b]), 2, 'SEALKIT_THRESHOLD_NOT_MET');
});

test.serial('a missing signature file blocks the image', async (t) => {
  const audit = rig.audit.next((e) => e.data.name === 'test/unsigned');
  const policy = rig.policy({ keys, images: [{ name: 'test/unsigned', tag: 'v1', source: web.url('/signed.tar'), sha256: img.sha256, allowHttp: true, signatures: { keys: ['rel-a'], url: web.url('/nowhere.sig') } }] });
  const err: any = await t.throwsAsync(rig.fetcher.fetch(policy.images[0], policy));
  t.is(err.code, 'SEALKIT_SIGNATURE_MISSING');
  t.is((await audit).data.code, 'SEALKIT_SIGNATURE_MISSING');
});
