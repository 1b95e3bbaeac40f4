import { join } from 'node:path';
import { runService } from '../lib/service.ts';
import { envInt } from '../lib/config.ts';
import { checkEvent, contract } from '../lib/contract.ts';
import { parseEvent } from '../lib/envelope.ts';
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
  const manifests = new ManifestIndex(join(root, 'ima', 'manifests'), join(root, 'ima', 'manifest-key.pub'), log.child({ concern: 'manifests' }));
  // the manifests on disk are what counts (signed, re-read): an ima.labeled
  // that is not well formed is still a hint to look
  nc.subscribe(contract.ima.labeled.subject, {
    callback: (err, msg) => {
      if (!err) {
        try {
          const ev = checkEvent(contract.ima.labeled, parseEvent(msg.data));
          log.debug('ima.labeled: reloading the label manifests', { container: ev.data.container });
        } catch (e) {
          log.warn('ima.labeled is malformed; reloading the label manifests anyway', { err: e as Error });
        }
      }
      void manifests.reload();
    },
  });
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
