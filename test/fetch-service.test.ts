import test from 'ava';
import { request } from '../services/lib/bus.ts';
import { buildImage } from './helpers/images.ts';
import { selfSignedCert, startHttp } from './helpers/http.ts';
import { startNats } from './helpers/nats.ts';
import { makeAdmin, policyYaml, putPolicy } from './helpers/policy.ts';
import { startService } from './helpers/service.ts';
import { EventLog } from './helpers/events.ts';

test('the fetcher service verifies what a new policy pins over https and answers image.fetch', async (t) => {
  const nats = await startNats();
  const tls = selfSignedCert();
  const web = await startHttp({ tls });
  const admin = await makeAdmin(nats.stateDir);
  const svc = await startService('fetcher', { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: admin.trustPath, NODE_EXTRA_CA_CERTS: tls.certPath });
  const anon = await nats.connectAs(null);
  const adminNc = await nats.connectAs('admin');
  try {
    const images = new EventLog(anon, 'image.verified');
    const audit = new EventLog(anon, 'audit.*');
    await anon.flush();
    const good = await buildImage({ name: 'svc/good', compression: 'gzip' });
    const bad = await buildImage({ name: 'svc/bad' });
    const goodUrl = web.route('/good.tar.gz', { body: good.archive });
    const badUrl = web.route('/bad.tar', { body: good.archive });
    const verified = images.wait((e) => e.type === 'image.verified' && e.data.name === 'svc/good');
    const rejected = audit.wait((e) => e.data.name === 'svc/bad');
    await putPolicy(adminNc, policyYaml({ serial: 1, images: [
      { name: 'svc/good', tag: 'v1', source: goodUrl, sha256: good.sha256 },
      { name: 'svc/bad', tag: 'v1', source: badUrl, sha256: bad.sha256 },
    ] }), admin.key);
    const ev = await verified;
    t.like(ev.data, { name: 'svc/good', sha256: good.sha256, compression: 'gzip', policySerial: 1, manifestDigest: good.manifestDigest });
    t.true(ev.data.archive.path.startsWith(nats.stateDir));
    t.like((await rejected).data, { code: 'SEALKIT_DIGEST_MISMATCH', expectedSha256: bad.sha256, actualSha256: good.sha256 });

    const reply = await request<{ ok: boolean; image: { sha256: string } }>(adminNc, 'image.fetch', { name: 'svc/good' }, { timeout: 15_000 });
    t.true(reply.ok);
    t.is(reply.image.sha256, good.sha256);
    const err: any = await t.throwsAsync(request(adminNc, 'image.fetch', { name: 'svc/nope' }));
    t.is(err.code, 'SEALKIT_IMAGE_UNKNOWN');
  } finally {
    await svc.stop();
    await anon.close();
    await adminNc.close();
    await web.close();
    tls.cleanup();
    await nats.cleanup();
  }
});
