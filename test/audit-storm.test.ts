import test from 'ava';
import { Storm, type Output } from '../services/auditor/storm.ts';

type D = { file: string };
const T0 = 1_800_000_000_000;

function tally(outs: Array<Output<D>>) {
  let events = 0;
  let repeats = 0;
  let lost = 0;
  for (const o of outs) {
    if (o.kind === 'lost') lost += o.dropped;
    else if (o.repeats) repeats += o.repeats;
    else events++;
  }
  return { events, repeats, lost, total: events + repeats + lost };
}

test('identical denials inside the window become one event and one follow-up with repeats', (t) => {
  const s = new Storm<D>({ windowMs: 1000, maxPerSec: 1000 }, 'p');
  const out: Array<Output<D>> = [];
  for (let i = 0; i < 5000; i++) out.push(...s.offer({ key: `f${i % 5}`, seq: i, data: { file: `f${i % 5}` } }, T0 + (i % 100)));
  t.is(out.length, 5);
  t.is(s.held, 4995);
  t.deepEqual(s.tick(T0 + 500), []); // window still open
  const follow = s.tick(T0 + 1100);
  t.is(follow.length, 5);
  for (const f of follow) t.is(f.kind === 'event' ? f.repeats : 0, 999);
  t.deepEqual(tally([...out, ...follow]), { events: 5, repeats: 4995, lost: 0, total: 5000 });
  t.is(s.held, 0);
  t.is(follow[0].id, 'p-0-repeats');
});

test('the per-second cap refuses the excess and reports it exactly once on lost', (t) => {
  const s = new Storm<D>({ windowMs: 1000, maxPerSec: 100 }, 'p');
  const out: Array<Output<D>> = [];
  for (let i = 0; i < 5000; i++) out.push(...s.offer({ key: `f${i}`, seq: i, data: { file: `f${i}` } }, T0));
  t.is(out.length, 100);
  const lost = s.tick(T0 + 10);
  t.is(lost.length, 1);
  t.like(lost[0], { kind: 'lost', dropped: 4900 });
  t.deepEqual(s.tick(T0 + 20), []);
  t.deepEqual(tally([...out, ...lost]), { events: 100, repeats: 0, lost: 4900, total: 5000 });
});

test('a refused follow-up counts all of its repeats as lost', (t) => {
  const s = new Storm<D>({ windowMs: 100, maxPerSec: 1 }, 'p');
  const out = [...s.offer({ key: 'a', seq: 1, data: { file: 'a' } }, T0)];
  for (let i = 2; i <= 10; i++) out.push(...s.offer({ key: 'a', seq: i, data: { file: 'a' } }, T0 + i));
  out.push(...s.tick(T0 + 200)); // follow-up due, but no token yet
  t.deepEqual(tally(out), { events: 1, repeats: 0, lost: 9, total: 10 });
});

test('a snapshot carries held counts into a new instance', (t) => {
  const a = new Storm<D>({ windowMs: 1000, maxPerSec: 10 }, 'p');
  const out: Array<Output<D>> = [];
  for (let i = 0; i < 50; i++) out.push(...a.offer({ key: `k${i % 20}`, seq: i, data: { file: `k${i % 20}` } }, T0));
  const b = new Storm<D>({ windowMs: 1000, maxPerSec: 10 }, 'p');
  b.restore(JSON.parse(JSON.stringify(a.snapshot())), T0);
  t.is(b.held, a.held);
  out.push(...b.drain(T0 + 2000));
  t.is(tally(out).total, 50);
});

test('a snapshot keeps only the windows holding counts, however many distinct denials are open', (t) => {
  const a = new Storm<D>({ windowMs: 1000, maxPerSec: 1_000_000 }, 'p');
  for (let i = 0; i < 5000; i++) a.offer({ key: `k${i}`, seq: i, data: { file: `k${i}` } }, T0);
  for (let i = 0; i < 3; i++) a.offer({ key: 'k7', seq: 5000 + i, data: { file: 'k7' } }, T0 + 1);
  const snap = a.snapshot();
  t.deepEqual(snap.entries.map(([key, e]) => [key, e.repeats, e.last]), [['k7', 3, { file: 'k7' }]]);
  const b = new Storm<D>({ windowMs: 1000, maxPerSec: 1_000_000 }, 'p');
  b.restore(JSON.parse(JSON.stringify(snap)), T0 + 2);
  t.is(b.held, 3);
  const follow = b.drain(T0 + 2000);
  t.like(follow, [{ kind: 'event', id: 'p-7-repeats', repeats: 3, data: { file: 'k7' } }]);
});
