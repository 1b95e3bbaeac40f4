import { join } from 'node:path';
import { runService } from '../lib/service.ts';
import { envInt } from '../lib/config.ts';
import { contract } from '../lib/contract.ts';
import { storeLayout } from '../lib/rootfs/store.ts';
import { Auditor, DEFAULT_FALLBACK_MS, type Format } from './auditor.ts';
import { ManifestIndex } from './manifests.ts';
import { Containers, followRunner } from './containers.ts';
import { openSource } from './source.ts';
import { readCursor } from './cursor.ts';

// SEALKIT_AUDIT_LOG=<auditd log> reads auditd's format; otherwise
// SEALKIT_KMSG (default /dev/kmsg) is read as kmsg records.
await runService('auditor', async ({ nc, events, log, state, root }) => {
  const auditLog = process.env.SEALKIT_AUDIT_LOG;
  const path = auditLog || process.env.SEALKIT_KMSG || '/dev/kmsg';
  const format: Format = auditLog ? 'audit-log' : 'kmsg';
  const cursorFile = join(state, 'cursor.json');
  const saved = await readCursor(cursorFile);
  const source = await openSource(path, saved && saved.path === path ? { identity: saved.identity, offset: saved.offset } : undefined);
  const layout = storeLayout(root);
  const manifests = new ManifestIndex(layout.manifests, layout.manifestKey, log.child({ concern: 'manifests' }));
  // the manifests on disk are what counts (signed, re-read): ima.labeled,
  // well formed or not, is only the hint to look now rather than at the
  // directory watch's next turn
  nc.subscribe(contract.ima.labeled.subject, { callback: (err) => void (err || manifests.reload()) });
  const containers = new Containers({ manifests, sync: () => nc.flush(), proc: process.env.SEALKIT_HOST_PROC || '/proc' });
  followRunner(nc, containers, log.child({ concern: 'containers' }));
  const auditor = new Auditor({
    source,
    format,
    manifests,
    containers,
    events,
    cursorFile,
    log,
    windowMs: envInt('SEALKIT_AUDIT_WINDOW_MS', 10_000),
    maxPerSec: envInt('SEALKIT_AUDIT_MAX_PER_SEC', 100),
    // read when the kernel log grows; SEALKIT_AUDIT_POLL_MS is only the fallback
    fallbackMs: envInt('SEALKIT_AUDIT_POLL_MS', DEFAULT_FALLBACK_MS),
  });
  await auditor.start();
  log.info('following the kernel log', { path, format, identity: source.identity, resumeSeq: saved?.seq ?? null });
  return { stop: () => auditor.stop() };
});
