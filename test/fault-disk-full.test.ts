import test from 'ava';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startNats } from './helpers/nats.ts';
import { startService } from './helpers/service.ts';
import { EventLog } from './helpers/events.ts';
import { makeAdmin, policyYaml, putPolicy } from './helpers/policy.ts';
import { buildImage, sha256 } from './helpers/images.ts';
import { stored } from './helpers/importer.ts';
import { canMount, smallDisk } from './helpers/disk.ts';
import { EventPublisher } from '../services/lib/outbox.ts';
import { createLogger, silentLogger } from '../services/lib/log.ts';
import { containerName } from '../services/lib/rootfs/names.ts';
import { digestLabel, readLabel } from '../services/ima/label.ts';

// A full disk under each writer, on a real (tmpfs) filesystem: a clear
// SEALKIT_DISK_FULL, nothing half-written, and the work done once space is
// back, without anyone restarting anything.

const maybe = canMount ? test : test.skip;

async function until(pred: () => Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  for (const deadline = Date.now() + ms; !(await pred()); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const records = async (dir: string) => (await readdir(dir)).filter((n) => n !== '.filler');

maybe('a fetch onto a full disk fails with SEALKIT_DISK_FULL, leaves no partial file, and completes by itself once space is back', async (t) => {
  const nats = await startNats();
  t.teardown(() => nats.cleanup());
  const admin = await makeAdmin(nats.stateDir);
  const adminNc = await nats.connectAs('admin');
  const work = await mkdtemp(join(tmpdir(), 'sealkit-full-fetch-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  // quarantine, cache and the fetcher's outbox: all on the full disk
  const disk = await smallDisk(join(nats.stateDir, 'fetcher'));
  t.teardown(() => disk.unmount());
  const img = await buildImage({ name: 'sealkit/full-fetch', tag: 'v1', layers: [{ 'opt/blob': randomBytes(2 << 20), 'etc/conf': 'x=1\n' }] });
  const archive = join(work, 'full-fetch.tar');
  await writeFile(archive, img.archive);
  const svc = await startService('fetcher', { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: admin.trustPath });
  t.teardown(() => svc.stop());
  const events = new EventLog(adminNc, 'image.*');
  t.teardown(() => events.close());
  await adminNc.flush();

  await disk.fill();
  await putPolicy(adminNc, policyYaml({ serial: 1, images: [{ name: img.name, tag: img.tag, source: `file://${archive}`, sha256: img.sha256 }] }), admin.key);
  const rejected = await events.wait((e) => e.type === 'image.rejected' && e.data.name === img.name, 30_000);
  t.is(rejected.data.code, 'SEALKIT_DISK_FULL');
  t.deepEqual(await readdir(join(disk.dir, 'quarantine')), []);
  t.false(existsSync(join(disk.dir, 'cache', 'sha256', img.sha256)));
  // the outbox on that disk could not keep the rejection either: it went out from memory, and the log says why
  await svc.waitForLog((r) => String(r.msg).startsWith('outbox: cannot write') && r.code === 'SEALKIT_DISK_FULL', 10_000);

  await disk.free();
  const verified = await events.wait((e) => e.type === 'image.verified' && e.data.name === img.name && e.data.sha256 === img.sha256, 60_000);
  t.is(sha256(await readFile(verified.data.archive.path)), img.sha256);
  t.deepEqual(await readdir(join(disk.dir, 'quarantine')), []);
  t.is((await stored(adminNc, 'image.verified')).filter((e) => e.data.name === img.name).length, 1);
});

maybe('an event written to a full outbox disk goes out from memory, is written once space is back, and then survives a restart', async (t) => {
  const nats = await startNats();
  t.teardown(() => nats.cleanup());
  const work = await mkdtemp(join(tmpdir(), 'sealkit-full-outbox-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const disk = await smallDisk(join(work, 'outbox'));
  t.teardown(() => disk.unmount());
  const nc = await nats.connectAs('fetcher');
  const adminNc = await nats.connectAs('admin');
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({}, { write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) });
  const first = new EventPublisher({ nc, service: 'fetcher', node: 'test', dir: disk.dir, log });
  await first.init();
  await disk.fill();

  // bus up: the disk refuses the record, the event is delivered anyway
  await first.publish('image.verified', { name: 'sealkit/outbox-a' });
  t.true(await first.flush(10_000));
  t.true(lines.some((r) => r.code === 'SEALKIT_DISK_FULL'), JSON.stringify(lines));
  t.deepEqual(await records(disk.dir), []); // no torn record, no temp file

  // bus away: held in memory, written as soon as the disk has room
  await nats.stop();
  const b = await first.publish('image.verified', { name: 'sealkit/outbox-b' });
  t.deepEqual(await records(disk.dir), []);
  await disk.free();
  await until(async () => (await records(disk.dir)).some((n) => n.endsWith('.json')), 'the record written after space came back');
  const rec = JSON.parse(await readFile(join(disk.dir, (await records(disk.dir)).find((n) => n.endsWith('.json'))!), 'utf8'));
  t.is(rec.event.id, b.id);

  // the process is gone before the bus is back; the next one sends it, once
  first.close();
  const second = new EventPublisher({ nc, service: 'fetcher', node: 'test', dir: disk.dir, log: silentLogger });
  await second.init();
  t.is(second.pending, 1);
  await nats.restart();
  t.true(await second.flush(20_000));
  second.close();
  const kept = await stored(adminNc, 'image.verified');
  t.is(kept.filter((e) => e.data.name === 'sealkit/outbox-a').length, 1);
  t.is(kept.filter((e) => e.id === b.id).length, 1);
  t.deepEqual(await records(disk.dir), []);
});

maybe('a label run onto a full container store fails with SEALKIT_DISK_FULL, shows nothing as labelled, and completes on redelivery once space is back', async (t) => {
  const nats = await startNats();
  t.teardown(() => nats.cleanup());
  await makeAdmin(nats.stateDir);
  const adminNc = await nats.connectAs('admin');
  const work = await mkdtemp(join(tmpdir(), 'sealkit-full-label-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const disk = await smallDisk(join(work, 'store'));
  t.teardown(() => disk.unmount());
  const svc = await startService('ima', { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_CONTAINER_STORE: disk.dir, SEALKIT_NODE: 'node-full', SEALKIT_IMA_ACK_WAIT_MS: '5000' });
  t.teardown(() => svc.stop());
  const events = new EventLog(adminNc, 'ima.*');
  t.teardown(() => events.close());
  await adminNc.flush();
  const img = await buildImage({ name: 'sealkit/full-label', tag: 'v1', layers: [{ 'opt/blob': randomBytes(1 << 20), 'etc/conf': 'a=1\n', 'bin/run': '#!/bin/sh\n' }] });
  const archive = join(work, img.sha256);
  await writeFile(archive, img.archive);

  await disk.fill();
  const importerNc = await nats.connectAs('importer');
  const importer = new EventPublisher({ nc: importerNc, service: 'importer', node: 'node-full', log: silentLogger });
  t.teardown(() => importer.close());
  await importer.publish('image.imported', {
    name: img.name, tag: img.tag, sha256: img.sha256, source: `file://${archive}`, manifestDigest: img.manifestDigest, policySerial: 1,
    archive: { path: archive, sha256: img.sha256, format: 'oci-archive', compression: 'none' }, targets: [],
  });
  t.true(await importer.flush(10_000));
  await svc.waitForLog((r) => r.msg === 'labelling failed; retrying once space is back' && r.code === 'SEALKIT_DISK_FULL', 30_000);
  // no rootfs, no half-unpacked staging tree, no ima.labeled
  t.deepEqual(await readdir(join(disk.dir, containerName(img.name, img.tag))), []);
  t.is((await stored(adminNc, 'ima.labeled')).length, 0);

  await disk.free();
  const labeled = await events.wait((e) => e.type === 'ima.labeled' && e.data.image?.digest === img.sha256, 60_000);
  for (const [rel, content] of Object.entries(img.files)) {
    t.deepEqual(await readLabel(join(labeled.data.rootfs, rel)), digestLabel(sha256(content)), rel);
  }
  t.is((await stored(adminNc, 'ima.labeled')).filter((e) => e.data.image.digest === img.sha256).length, 1);
});
