import { access, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { decode, serve } from '../lib/bus.ts';
import { runService } from '../lib/service.ts';
import { PolicyFollower } from '../lib/policy-follow.ts';
import { readTrust } from '../lib/sign.ts';
import { envInt, trustPath } from '../lib/config.ts';
import { subjects } from '../lib/subjects.ts';
import { Backoff } from '../lib/backoff.ts';
import { checkData, checkEvent, contract, type ImaNamespaceUse } from '../lib/contract.ts';
import { parseEvent } from '../lib/envelope.ts';
import { storeLayout } from '../lib/rootfs/store.ts';
import { Ctr } from './containerd.ts';
import { Runner, unknownContainer } from './runner.ts';
import { loggedNames, readLog } from './logs.ts';

// Environment:
//   SEALKIT_CONTAINERD_SOCK      containerd's socket (default /run/containerd/containerd.sock)
//   SEALKIT_RUNNER_NAMESPACE     containerd namespace of the workloads (default services.linuxkit)
//   SEALKIT_CONTAINER_STORE      the labelled rootfs trees (see lib/rootfs/store.ts)
//   SEALKIT_RUNNER_RECONCILE_MS  the fallback reconcile's period (default 30000)
//   SEALKIT_RUNNER_STOP_GRACE_MS SIGTERM to SIGKILL when the runner stops a container (default 10000)
//   SEALKIT_IMA_NAMESPACES       where securityfs would expose IMA namespaces (default /sys/kernel/security/ima/namespaces)

await runService('runner', async ({ nc, events, log, state, root }) => {
  const policy = new PolicyFollower(nc, await readTrust(trustPath(root)), log.child({ concern: 'policy' }));
  await policy.start();
  const ctr = new Ctr(process.env.SEALKIT_CONTAINERD_SOCK ?? '/run/containerd/containerd.sock', process.env.SEALKIT_RUNNER_NAMESPACE ?? 'services.linuxkit');
  const specDir = join(state, 'specs');
  const logDir = join(state, 'logs');
  await mkdir(specDir, { recursive: true });
  await mkdir(logDir, { recursive: true });

  const nsPath = process.env.SEALKIT_IMA_NAMESPACES ?? '/sys/kernel/security/ima/namespaces';
  const imaNamespace: ImaNamespaceUse = (await access(nsPath).then(() => true, () => false)) ? 'detected' : 'absent';
  if (imaNamespace === 'detected') log.warn('the kernel offers IMA namespaces; sealkit writes no per-container appraisal policy yet: containers are appraised as on any kernel', { path: nsPath });

  const runner = new Runner({
    ctr,
    layout: storeLayout(root),
    specDir,
    logDir,
    log,
    publish: (s, d, o) => events.publish(s, d, o),
    policy: () => policy.policy,
    imaNamespace,
    stopGraceMs: envInt('SEALKIT_RUNNER_STOP_GRACE_MS', 10_000),
    nodeTamperFile: join(state, 'node-tamper.json'),
  });
  await runner.loadNodeTamper();

  const stopping = new AbortController();
  let adopted = false;
  const reconcile = (why: string, tasks = false) => (adopted ? runner.reconcile(why, { tasks }) : Promise.resolve());

  // /tasks/exit as they happen; the stream is opened again when it ends
  // (containerd restarted), and a reconcile then catches what it missed
  let exits: ChildProcess | undefined;
  const follow = async () => {
    const backoff = new Backoff({ firstMs: 250, maxMs: 5000, signal: stopping.signal });
    while (!stopping.signal.aborted) {
      const ended = new Promise<string>((resolve) => {
        exits = ctr.followExits((e) => runner.onExit(e), resolve);
      });
      void reconcile('exit stream opened', true);
      const why = await ended;
      if (stopping.signal.aborted) return;
      log.warn('the containerd event stream ended; opening it again', { why, retryInMs: backoff.delayMs });
      await backoff.wait();
    }
  };

  // containerd may be away at boot: adopt what runs once it answers
  const adopt = async () => {
    const backoff = new Backoff({ firstMs: 500, maxMs: 10_000, signal: stopping.signal });
    while (!stopping.signal.aborted) {
      try {
        await ctr.tasks();
        break;
      } catch (err) {
        log.warn('containerd is not answering; the runner starts nothing until it does', { retryInMs: backoff.delayMs, err: err as Error });
        await backoff.wait();
      }
    }
    if (stopping.signal.aborted) return;
    await runner.adopt();
    adopted = true;
    void follow();
    await reconcile('start', true);
  };
  void adopt();

  policy.onChange(() => reconcile('policy changed'));
  const timer = setInterval(() => void reconcile('periodic', true), envInt('SEALKIT_RUNNER_RECONCILE_MS', 30_000));

  const tamper = nc.subscribe(subjects.audit.tamper, {
    callback: (_err, msg) => {
      try {
        const ev = checkEvent(contract.audit.tamper, parseEvent(msg.data));
        if ((ev.data as { scope?: unknown }).scope === 'node') {
          // no rootfs changed: IPE switched off stops what the policy says
          // to stop; Setup Mode firmware or a writable initramfs stop nothing
          const n = ev.data as { kind?: unknown; detail?: unknown };
          if (typeof n.kind !== 'string') throw new Error('audit.tamper of scope node without kind');
          if (!runner.onNodeTamper({ kind: n.kind, detail: String(n.detail ?? '') })) log.warn('node-level tamper reported; it stops no container', { ...ev.data });
          return;
        }
        if (typeof ev.data?.container !== 'string' || typeof ev.data.file !== 'string') throw new Error('audit.tamper without container and file');
        // our own reports of a refused start are not news to us
        runner.onTamper(ev.data, ev.source.startsWith('sealkit/runner/'));
      } catch (err) {
        log.error('audit.tamper is malformed; ignored', { err: err as Error });
      }
    },
  });
  const labeled = nc.subscribe(subjects.ima.labeled, {
    callback: (_err, msg) => {
      try {
        runner.onLabeled(checkEvent(contract.ima.labeled, parseEvent(msg.data)).data);
      } catch (err) {
        log.error('ima.labeled is malformed; ignored', { err: err as Error });
      }
    },
  });

  serve(nc, subjects.runner.ps, () => ({ containers: runner.ps() }), { log });
  serve(nc, subjects.runner.logs, async (msg) => {
    const req = checkData(contract.runner.logs, decode(msg.data, 'runner.logs request'));
    const known = [...new Set([...runner.names(), ...(await loggedNames(logDir))])];
    if (!known.includes(req.name)) throw unknownContainer(req.name, known);
    return readLog(logDir, req);
  }, { log });

  return {
    // The workloads keep running: a supervisor restarting the runner (or a
    // node update of it) must not restart what the node exists to run. The
    // next runner adopts them.
    async stop() {
      stopping.abort();
      clearInterval(timer);
      runner.close();
      tamper.unsubscribe();
      labeled.unsubscribe();
      exits?.kill();
    },
  };
});
