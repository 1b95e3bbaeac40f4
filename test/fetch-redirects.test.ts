import test from 'ava';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { startHttp, type TestServer } from './helpers/http.ts';
import { startFetcherRig, type FetcherRig } from './helpers/fetcher.ts';

let rig: FetcherRig;
let web: TestServer;
let other: TestServer;
let img: BuiltImage;
test.before(async () => {
  rig = await startFetcherRig();
  web = await startHttp();
  other = await startHttp();
  img = await buildImage({ name: 'test/redirects' });
  web.route('/real.tar', { body: img.archive });
  other.route('/real.tar', { body: img.archive });
});
test.after.always(async () => {
  await web?.close();
  await other?.close();
  await rig?.cleanup();
});

const fetchFrom = async (source: string, extra: Record<string, unknown> = {}) => {
  await rig.fetcher.cache.remove(img.sha256); // every test downloads
  const policy = rig.policy({ images: [{ name: img.name, tag: 'v1', source, sha256: img.sha256, allowHttp: true, ...extra }] });
  return rig.fetcher.fetch(policy.images[0], policy);
};

test.serial('a redirect on the same host is followed', async (t) => {
  const got = await fetchFrom(web.route('/hop', { redirect: '/real.tar' }));
  t.is(got.sha256, img.sha256);
});

test.serial('a redirect to another host is refused unless the policy lists it', async (t) => {
  const source = web.route('/away', { redirect: other.url('/real.tar') });
  const audit = rig.audit.next((e) => e.data.source === source);
  const err: any = await t.throwsAsync(fetchFrom(source));
  t.is(err.code, 'SEALKIT_REDIRECT_REFUSED');
  t.is((await audit).data.code, 'SEALKIT_REDIRECT_REFUSED');
  t.is(other.hits('/real.tar'), 0);
  const got = await fetchFrom(source, { redirects: { hosts: [new URL(other.origin).host] } });
  t.is(got.sha256, img.sha256);
});

test.serial('a redirect from https to http is refused', async (t) => {
  const { selfSignedCert } = await import('./helpers/http.ts');
  const tls = selfSignedCert();
  const secure = await startHttp({ tls });
  try {
    // the refusal happens on the Location header, before any TLS trust matters for the body
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
    const source = secure.route('/down', { redirect: web.url('/real.tar') });
    const err: any = await t.throwsAsync(fetchFrom(source, { redirects: { hosts: [new URL(web.origin).host] } }));
    t.is(err.code, 'SEALKIT_REDIRECT_REFUSED');
    t.regex(err.message, /downgrades https to http/);
  } finally {
    delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    await secure.close();
    tls.cleanup();
  }
});

test.serial('too many redirects are refused', async (t) => {
  web.route('/r1', { redirect: '/r2' });
  web.route('/r2', { redirect: '/real.tar' });
  const err: any = await t.throwsAsync(fetchFrom(web.url('/r1'), { redirects: { max: 1 } }));
  t.is(err.code, 'SEALKIT_REDIRECT_REFUSED');
});
