import test from 'ava';
import { createLogger } from '../services/lib/log.ts';

// A log line is the last word a failing service says: logging must never be
// what throws, whatever the fields hold.

function capture() {
  const lines: string[] = [];
  const log = createLogger({ service: 'test' }, { write: (l) => lines.push(l) });
  return { log, lines, last: () => JSON.parse(lines[lines.length - 1]) as Record<string, unknown> };
}

test('a cyclic field is written with the cycle cut, not thrown', (t) => {
  const { log, last } = capture();
  const a: Record<string, unknown> = { name: 'a' };
  a.self = a;
  t.notThrows(() => log.info('cycle', { a }));
  t.deepEqual(last().a, { name: 'a', self: '[Circular]' });
});

test('an object referenced twice without a cycle is written both times', (t) => {
  const { log, last } = capture();
  const shared = { digest: 'sha256:1' };
  log.info('shared', { x: shared, y: [shared, shared] });
  t.deepEqual(last().x, shared);
  t.deepEqual(last().y, [shared, shared]);
});

test('BigInt fields become decimal strings', (t) => {
  const { log, last } = capture();
  t.notThrows(() => log.warn('big', { bytes: 2n ** 70n, nested: { ino: 12n } }));
  t.is(last().bytes, (2n ** 70n).toString());
  t.deepEqual(last().nested, { ino: '12' });
});

test('errors keep message, code and stack, also nested', (t) => {
  const { log, last } = capture();
  const err = Object.assign(new Error('disk full'), { code: 'SEALKIT_DISK_FULL' });
  log.error('failed', { err, ctx: { cause: err } });
  t.is((last().err as { code: string }).code, 'SEALKIT_DISK_FULL');
  t.is((last().ctx as { cause: { message: string } }).cause.message, 'disk full');
});

test('a field whose toJSON or getter throws is replaced by a note and the rest is kept', (t) => {
  const { log, lines, last } = capture();
  const bad = { toJSON: () => { throw new Error('boom'); } };
  const getter = Object.defineProperty({}, 'x', { enumerable: true, get: () => { throw new Error('getter'); } });
  t.notThrows(() => log.info('bad', { bad, getter, image: 'acme/base' }));
  t.is(lines.length, 1);
  t.is(last().image, 'acme/base');
  t.is(last().msg, 'bad');
  t.regex(String(last().bad), /Unserializable: boom/);
  t.regex(String(last().getter), /Unserializable: getter/);
});
