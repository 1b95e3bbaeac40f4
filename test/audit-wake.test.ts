import test from 'ava';
import { appendFile, cp, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { NatsConnection } from 'nats';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { canWriteKmsg } from './helpers/kmsg.ts';
import { parseEvent } from '../services/lib/envelope.ts';

// The auditor reads the kernel log when it grows, not when a timer says so:
// every auditor here has a fallback timer of an hour, so a record is seen
// only if the source woke the auditor. "Idle" is its own log line, so each
// record below is written while the auditor is waiting.

const AN_HOUR = String(3600_000);

let s: NatsServer;
let monitor: NatsConnection;
let dir: string;

test.before(async () => {
  s = await startNats();
  monitor = await s.connectAs(null);
  dir = await mkdtemp(join(tmpdir(), 'sealkit-audit-wake-'));
});

test.after.always(async () => {
  await monitor?.close();
  await s?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function startAuditor(t: { teardown(fn: () => unknown): void }, name: string, env: Record<string, string> = {}): Promise<{ svc: RunningService; kmsg: string }> {
  const state = join(dir, name, 'state');
  await cp(join(s.stateDir, 'bus'), join(state, 'bus'), { recursive: true });
  await mkdir(join(state, 'ima'), { recursive: true });
  const kmsg = join(dir, name, 'kmsg');
  await writeFile(kmsg, '');
  const svc = await startService('auditor', { SEALKIT_STATE: state, SEALKIT_NATS_URL: s.url, SEALKIT_NODE: name, SEALKIT_KMSG: kmsg, SEALKIT_AUDIT_POLL_MS: AN_HOUR, ...env });
  t.teardown(() => svc.stop());
  return { svc, kmsg };
}

// resolves with the first audit.* event of this node that pred accepts
function nextEvent(node: string, pred: (ev: { type: string; data: any }) => boolean): Promise<{ type: string; data: any }> {
  return new Promise((resolve) => {
    const sub = monitor.subscribe('audit.*', {
      callback: (_e, msg) => {
        if (msg.headers?.get('Sealkit-Node') !== node) return;
        const ev = parseEvent(msg.data) as { type: string; data: any };
        if (!pred(ev)) return;
        sub.unsubscribe();
        resolve(ev);
      },
    });
  });
}

const idleAt = (seq: number | null) => (r: Record<string, unknown>) => r.msg === 'read the kernel log to its end; waiting for it to grow' && r.seq === seq;

function denial(seq: number, name: string): string {
  return `5,${seq},${seq * 1000},-;audit: type=1800 audit(1795431129.${String(seq % 1000).padStart(3, '0')}:${seq}): pid=${100 + seq} uid=0 auid=4294967295 ses=4294967295 subj=unconfined op=appraise_data cause=invalid-hash comm="cat" name="${name}" dev="overlay" ino=${seq} res=0 errno=0\n`;
}

test('a record appended to the followed file is read at once, without waiting for the fallback timer', async (t) => {
  const { svc, kmsg } = await startAuditor(t, 'n-append');
  for (const seq of [1, 2, 3]) {
    await svc.waitForLog(idleAt(seq === 1 ? null : seq - 1));
    const seen = nextEvent('n-append', (ev) => ev.type === 'audit.denial' && ev.data.kernel.seq === seq);
    await appendFile(kmsg, denial(seq, `/wake/${seq}`));
    t.is((await seen).data.file, `/wake/${seq}`);
  }
});

test('a followed file replaced under its name (rotation) wakes the auditor, which reads the new file from its start', async (t) => {
  const { svc, kmsg } = await startAuditor(t, 'n-rotate');
  await svc.waitForLog(idleAt(null));
  const first = nextEvent('n-rotate', (ev) => ev.type === 'audit.denial' && ev.data.file === '/rotate/old');
  await appendFile(kmsg, denial(1, '/rotate/old'));
  await first;
  await svc.waitForLog(idleAt(1));
  const after = nextEvent('n-rotate', (ev) => ev.type === 'audit.denial' && ev.data.file === '/rotate/new');
  await rename(kmsg, `${kmsg}.1`);
  await writeFile(`${kmsg}.tmp`, denial(1, '/rotate/new'));
  await rename(`${kmsg}.tmp`, kmsg);
  t.is((await after).data.kernel.seq, 1);
});

(canWriteKmsg ? test : test.skip)('on the real /dev/kmsg a new record wakes the auditor, and it still stops at once', async (t) => {
  const { svc } = await startAuditor(t, 'n-devkmsg', { SEALKIT_KMSG: '/dev/kmsg' });
  // the ring as it is now is read first; then the auditor waits
  const idle = await svc.waitForLog((r) => r.msg === 'read the kernel log to its end; waiting for it to grow');
  const tag = `sealkit-wake-${process.pid}-${Date.now()}`;
  const spoof = nextEvent('n-devkmsg', (ev) => ev.type === 'audit.spoof' && ev.data.samples.some((x: string) => x.includes(tag)));
  await appendFile('/dev/kmsg', `<5>audit: type=1800 audit(1795431129.387:5): pid=88 uid=0 auid=4294967295 ses=4294967295 subj=unconfined op=appraise_data cause=invalid-hash comm="cat" name="/${tag}" dev="tmpfs" ino=2 res=0 errno=0\n`);
  t.true((await spoof).data.firstSeq > (idle.seq as number));
  // the doorbell must neither keep the process alive nor hang its exit
  t.is(await svc.stop(), 0);
});
