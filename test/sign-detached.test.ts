import test from 'ava';
import nacl from 'tweetnacl';
import { framed, generateKey, signDetached, unb64, verifyDetached } from '../services/lib/sign.ts';

// signDetached goes through node:crypto; a signer or verifier built on
// tweetnacl (the card's library, and every key file's maker) must see the
// very same bytes.
test('a detached signature is byte for byte the one tweetnacl makes, and both verifiers accept it', (t) => {
  for (let i = 0; i < 20; i++) {
    const key = generateKey(`k${i}`);
    const message = Buffer.from(nacl.randomBytes(i * 97));
    const sig = signDetached('sealkit-policy-v1', message, key);
    const theirs = nacl.sign.detached(framed('sealkit-policy-v1', message), unb64(key.secret, 'secret'));
    t.is(sig, Buffer.from(theirs).toString('base64'));
    t.true(nacl.sign.detached.verify(framed('sealkit-policy-v1', message), unb64(sig, 'sig'), unb64(key.ed25519, 'pub')));
    t.true(verifyDetached('sealkit-policy-v1', message, sig, key));
    t.false(verifyDetached('sealkit-image-v1', message, sig, key), 'the domain is part of what is signed');
  }
});

test('a secret key of the wrong length is refused with its id named', (t) => {
  const key = { ...generateKey('short'), secret: Buffer.alloc(12).toString('base64') };
  const err = t.throws(() => signDetached('sealkit-policy-v1', Buffer.from('x'), key));
  t.is((err as { code?: string }).code, 'SEALKIT_KEY_INVALID');
  t.regex(err!.message, /short/);
});
