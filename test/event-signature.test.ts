import test from 'ava';
import nacl from 'tweetnacl';
import { makeEvent } from '../services/lib/envelope.ts';
import { canonicalJson, EVENT_DOMAIN, EventKey, EventSealer, generateEventKey, linkOf, newChainState, sha256hex, signedBytes, type SealedEvent } from '../services/lib/eventsig.ts';
import { framed, unb64 } from '../services/lib/sign.ts';

// Events are signed with node:crypto for speed, but the key files are
// tweetnacl's and so are other verifiers: the signatures must be the very
// bytes tweetnacl makes from the same key, and the signed bytes the RFC 8785
// form any verifier computes from the parsed event.

const denial = (i: number) => ({
  file: `/var/lib/app/f${i}`,
  cause: 'invalid-hash',
  process: { pid: 1000 + i, comm: 'cat', uid: 0 },
  image: null,
  kernel: { seq: i, usec: null, auditId: `1700000000.001:${i}` },
  raw: `audit: type=1800 name="/var/lib/app/f${i}" \u00e9\u20ac`,
});

test('an event sealed with node:crypto carries the signature tweetnacl makes from the same key, and tweetnacl verifies it', (t) => {
  const file = generateEventKey('node-a');
  const secret = unb64(file.secretKey, 'secret');
  const sealer = new EventSealer(new EventKey(file), newChainState());
  for (let i = 0; i < 20; i++) {
    const { event } = sealer.seal(makeEvent('auditor', 'audit.denial', denial(i), { node: 'node-a' }));
    const message = framed(EVENT_DOMAIN, signedBytes(event));
    const sig = Buffer.from(event.sealkitsig, 'base64');
    t.is(event.sealkitsig, Buffer.from(nacl.sign.detached(message, secret)).toString('base64'));
    t.true(nacl.sign.detached.verify(message, sig, unb64(file.publicKey, 'public')));
  }
  const signal = sealer.signal(makeEvent('nodeinfo', 'node.heartbeat', { up: 1 }, { node: 'node-a' }));
  t.is(signal.sealkitsig, Buffer.from(nacl.sign.detached(framed(EVENT_DOMAIN, signedBytes(signal)), secret)).toString('base64'));
});

test('the signed bytes of the parsed event are those the producer signed, and the chain hash is theirs', (t) => {
  const sealer = new EventSealer(new EventKey(generateEventKey('node-a')), newChainState());
  const first = sealer.seal(makeEvent('auditor', 'audit.denial', { ...denial(1), gone: undefined }, { node: 'node-a' }));
  const second = sealer.seal(makeEvent('auditor', 'audit.denial', denial(2), { node: 'node-a' }));
  const parsed = JSON.parse(JSON.stringify(first.event)) as SealedEvent;
  t.deepEqual(signedBytes(parsed), signedBytes(first.event));
  t.is(first.link.hash, sha256hex(signedBytes(parsed)));
  t.is(second.event.sealkitprev, first.link.hash);
  t.deepEqual(linkOf(parsed), first.link);
});

test('canonical JSON sorts keys by UTF-16 code units and writes what JSON.stringify would keep', (t) => {
  t.is(canonicalJson({ b: 1, a: [1, undefined, 'x'], '\u20ac': true, '\r': null, '1': { z: 0, y: -0 }, 'é': 1e21, f: () => 1, u: undefined }), '{"\\r":null,"1":{"y":0,"z":0},"a":[1,null,"x"],"b":1,"é":1e+21,"€":true}');
  t.is(canonicalJson([Number.NaN, Infinity, new Date(0), 'a"b']), '[null,null,"1970-01-01T00:00:00.000Z","a\\"b"]');
  t.is(canonicalJson({}), '{}');
  t.is(canonicalJson([]), '[]');
  t.is(canonicalJson({ a: undefined }), '{}');
});
