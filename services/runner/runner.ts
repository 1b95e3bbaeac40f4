import { readFile, stat } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
import { Backoff } from '../lib/backoff.ts';
import { writeFileAtomic } from '../lib/atomic.ts';
import { sha256Hex } from '../lib/digest.ts';
import { SealkitError, asSealkitError, type ErrorCode } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { PublishOptions } from '../lib/outbox.ts';
import type { ContainerPolicy, ImagePolicy, Policy } from '../lib/policy.ts';
import type { PublicKey } from '../lib/sign.ts';
import { subjects } from '../lib/subjects.ts';
import type {
  ContainerExited, ContainerRef, ContainerRefused, ContainerRestarting, ContainerStarted, ContainerState, ContainerStopped,
  ImaNamespaceUse, Labeled, PsEntry, StopReason, Tamper,
} from '../lib/contract.ts';
import { containerName } from '../lib/rootfs/names.ts';
import { containerPaths, type ContainerPaths, type StoreLayout } from '../lib/rootfs/store.ts';
import { readManifestKey, readVerifiedManifest, verifyRootfs, type FileFinding } from '../lib/rootfs/verify.ts';
import { Ctr, isExisting, isNotFound, type Task, type TaskExit } from './containerd.ts';
import { runSpecFor, workloadSpec } from './process.ts';

// The runner's core: keep the containers the policy names running, each from
// the labelled rootfs of its image, re-verified before every start; restart
// what exits as the policy says; stop what the policy no longer names or
// whose rootfs was found changed. Every decision is taken in one queue
// (`serial`), so a policy change, an exit, a tamper report and the periodic
// reconcile never act on the same container at once.

// Labels on the containerd container: what a restarted runner needs to adopt
// a task it started, or to know it must replace it.
export const LABELS = {
  spec: 'sealkit.runner.spec', // sha256 of the OCI spec it was created with
  digest: 'sealkit.runner.digest',
  image: 'sealkit.runner.image', // name:tag
  rootfs: 'sealkit.runner.rootfs',
  serial: 'sealkit.runner.policy-serial',
  restarts: 'sealkit.runner.restarts',
  started: 'sealkit.runner.started-at',
} as const;

const TAMPER_KINDS = new Set(['modified', 'added', 'removed']);
// audit.tamper of scope node that mean the kernel stopped enforcing while
// the node ran (IPE switched to permissive, the owner's policy no longer
// the active one, a policy trusting any fs-verity signature): whatever ran
// since may have been anything, and nothing the node does now brings the
// owner's policy back before a reboot. The standing weaknesses the same
// check reports (firmware in Setup Mode, a read-write initramfs root) are
// there from boot on and stop nothing.
export const NODE_STOP_KINDS: ReadonlySet<string> = new Set(['ipe-enforce-off', 'ipe-policy-inactive', 'ipe-signature-rule']);

export interface NodeTamper {
  kind: string;
  detail: string;
  bootId: string; // the boot it happened in: a reboot deploys the owner's policy again
  at: string;
}
// audit.tamper events published for one refused start; the refusal names the first
const MAX_TAMPER_EVENTS = 16;

export interface RunnerOptions {
  ctr: Ctr;
  layout: StoreLayout;
  specDir: string;
  logDir: string;
  log: Logger;
  publish: (subject: string, data: unknown, opts?: PublishOptions) => Promise<unknown>;
  policy: () => Policy | null;
  imaNamespace: ImaNamespaceUse;
  stopGraceMs: number;
  nodeTamperFile?: string; // where a node tamper is kept, so a restarted runner keeps refusing until the reboot
}

interface Run {
  pid: number;
  startedAt: number;
  image: { name: string; tag: string; digest: string };
  rootfsName: string;
  rootfs: string;
  serial: number;
  spec: string;
  unchecked?: boolean; // adopted: its rootfs is verified before it is trusted
}

interface Workload {
  name: string;
  state: ContainerState;
  reason: string | null;
  image: { name: string; tag: string; digest: string | null };
  desired: string; // the policy's container and image, as JSON: a change resets what follows
  run?: Run;
  restarts: number;
  backoff: Backoff;
  abort: AbortController;
  // a refusal stays until its manifest is rewritten or ima.labeled names it
  refusedAt?: number | null; // the manifest's mtime then (null: none)
  blocked?: boolean; // stopped for tamper: refused until relabelled
  stopping: boolean;
  last?: ContainerRef; // the last run, for what is said about it between runs
}

interface Plan {
  c: ContainerPolicy;
  image: ImagePolicy;
  rootfsName: string;
  paths: ContainerPaths;
}

export class Runner {
  private readonly workloads = new Map<string, Workload>();
  private queue: Promise<void> = Promise.resolve();
  private readonly exitWaiters = new Map<string, () => void>();
  private closed = false;
  private nodeTamper: NodeTamper | null = null;

  constructor(private readonly o: RunnerOptions) {}

  // A node tamper recorded in this boot, by this runner before it restarted.
  async loadNodeTamper(): Promise<void> {
    if (!this.o.nodeTamperFile) return;
    const kept = await readFile(this.o.nodeTamperFile, 'utf8').then((t) => JSON.parse(t) as NodeTamper, () => null);
    if (kept && kept.bootId === (await bootId())) {
      this.nodeTamper = kept;
      this.o.log.warn('the kernel stopped enforcing earlier in this boot; containers whose policy says onTamper: stop stay stopped until the node reboots', { ...kept });
    }
  }

  // audit.tamper of scope node: every container whose policy says
  // onTamper: stop is stopped and refused until the node reboots. False:
  // a kind that stops nothing.
  onNodeTamper(t: { kind: string; detail: string }): boolean {
    if (!NODE_STOP_KINDS.has(t.kind)) return false;
    void this.serial(`node tamper ${t.kind}`, async () => {
      if (!this.nodeTamper) {
        this.nodeTamper = { kind: t.kind, detail: t.detail, bootId: await bootId(), at: new Date().toISOString() };
        if (this.o.nodeTamperFile) await writeFileAtomic(this.o.nodeTamperFile, JSON.stringify(this.nodeTamper));
      }
      const policy = this.o.policy();
      for (const w of this.workloads.values()) {
        const c = policy?.containers.find((x) => x.name === w.name);
        if (!c || c.onTamper !== 'stop' || !w.run) continue;
        const run = w.run;
        await this.stop(w, 'tamper', `the node's kernel stopped enforcing (${t.kind}: ${t.detail})`);
        const image = policy!.images.find((i) => i.name === c.image)!;
        await this.refuseForNode(w, this.plan(c, image), run.serial);
      }
    });
    return true;
  }

  private async refuseForNode(w: Workload, p: Plan, serial: number): Promise<void> {
    const n = this.nodeTamper!;
    w.blocked = true;
    await this.refuse(w, p, serial, 'SEALKIT_NODE_TAMPER', `the node's kernel stopped enforcing at ${n.at} (${n.kind}: ${n.detail}); container "${w.name}" (onTamper: stop) is not started again until the node reboots and its boot step deploys the owner's policy`, null, null);
  }

  // One decision at a time, in arrival order; a failure is logged, never
  // stops the queue.
  serial(what: string, fn: () => Promise<void>): Promise<void> {
    const next = this.queue.then(fn).catch((err) => this.o.log.error(`${what} failed`, { err: err as Error }));
    this.queue = next;
    return next;
  }

  close(): void {
    this.closed = true;
    for (const w of this.workloads.values()) w.abort.abort();
  }

  // Take over the tasks a previous runner started (labelled LABELS.spec):
  // running ones are adopted as they are (no second container.started); one
  // that ended meanwhile is reported as exited. Whether each still matches
  // the policy is the next reconcile's to decide.
  adopt(): Promise<void> {
    return this.serial('adopting running containers', async () => {
      const [containers, tasks] = await Promise.all([this.o.ctr.containers(LABELS.spec), this.o.ctr.tasks()]);
      for (const [id, labels] of containers) {
        const [name, tag] = splitRef(labels[LABELS.image] ?? '');
        const w = this.workload(id, { name, tag, digest: labels[LABELS.digest] ?? null });
        w.restarts = Number(labels[LABELS.restarts] ?? 0) || 0;
        const task = tasks.get(id);
        w.run = {
          pid: task?.pid ?? 0,
          startedAt: Date.parse(labels[LABELS.started] ?? '') || Date.now(),
          image: { name, tag, digest: labels[LABELS.digest] ?? '' },
          rootfsName: containerName(name, tag),
          rootfs: labels[LABELS.rootfs] ?? '',
          serial: Number(labels[LABELS.serial] ?? 0) || 0,
          spec: labels[LABELS.spec] ?? '',
          unchecked: true,
        };
        if (task?.status === 'RUNNING') {
          w.state = 'running';
          this.o.log.info('adopted a running container', { container: id, pid: task.pid, image: labels[LABELS.image] });
        } else {
          await this.exited(w, { id, pid: task?.pid ?? 0, status: (await this.o.ctr.deleteTask(id)) ?? 0 });
        }
      }
    });
  }

  // Bring containerd to what the policy says. Without a policy (none yet, or
  // the bus unreadable) nothing is touched. With `tasks`, first look for
  // exits the event stream did not report (it was down, or we were): the
  // periodic reconcile and a reopened stream ask for it; one woken by a
  // policy change or a label need not pay a `ctr tasks ls` before its start.
  reconcile(why: string, opts: { tasks?: boolean } = {}): Promise<void> {
    return this.serial(`reconcile (${why})`, async () => {
      if (this.closed) return;
      const policy = this.o.policy();
      if (!policy) return;
      const tasks = opts.tasks ? await this.o.ctr.tasks() : new Map<string, Task>();
      for (const w of opts.tasks ? this.workloads.values() : []) {
        const t = w.run && tasks.get(w.name);
        if (w.run && !w.stopping && (!t || t.status === 'STOPPED')) {
          await this.exited(w, { id: w.name, pid: w.run.pid, status: (await this.o.ctr.deleteTask(w.name)) ?? 0 });
        }
      }
      const wanted = new Set<string>();
      for (const c of policy.containers) {
        wanted.add(c.name);
        const image = policy.images.find((i) => i.name === c.image)!;
        await this.converge(this.plan(c, image), policy.serial);
      }
      for (const w of [...this.workloads.values()]) {
        if (wanted.has(w.name)) continue;
        const detail = `container "${w.name}" is not in policy serial ${policy.serial}`;
        if (w.run) await this.stop(w, 'removed', detail);
        else if (w.state === 'restarting' && w.last) {
          // between two runs: its pending restart is cancelled
          const ev: ContainerStopped = { ...w.last, reason: 'removed', detail };
          await this.publish(subjects.container.stopped, ev, w);
        }
        w.abort.abort();
        this.workloads.delete(w.name);
      }
      this.o.log.debug('reconciled', { why, containers: this.workloads.size });
    });
  }

  private plan(c: ContainerPolicy, image: ImagePolicy): Plan {
    const rootfsName = containerName(image.name, image.tag);
    return { c, image, rootfsName, paths: containerPaths(this.o.layout, rootfsName) };
  }

  private async converge(p: Plan, serial: number): Promise<void> {
    const desired = JSON.stringify([p.c, p.image]);
    const w = this.workload(p.c.name, { name: p.image.name, tag: p.image.tag, digest: p.image.sha256 });
    if (w.desired !== desired) {
      // first sight (adopted) keeps its restarts; a change of the container
      // or its image starts its restarts and refusals over
      const changed = w.desired !== '';
      this.renew(w, p.c);
      if (changed) {
        w.restarts = 0;
        w.blocked = false;
        w.refusedAt = undefined;
      }
      if (changed || (!w.run && w.state === 'exited')) {
        if (!w.run) w.state = 'waiting';
      }
      w.desired = desired;
    }
    w.image = { name: p.image.name, tag: p.image.tag, digest: p.image.sha256 };

    if (w.run && this.nodeTamper && p.c.onTamper === 'stop') {
      const run = w.run;
      await this.stop(w, 'tamper', `the node's kernel stopped enforcing earlier in this boot (${this.nodeTamper.kind})`);
      return this.refuseForNode(w, p, run.serial);
    }
    if (w.run) {
      if (w.run.unchecked) {
        delete w.run.unchecked;
        if (!(await this.stillIntact(w, p))) return;
      }
      if (w.run.image.digest !== p.image.sha256) {
        // the new image's rootfs first: the old one runs until it is ready
        const ready = await this.labelledDigest(p);
        if (ready !== p.image.sha256) {
          w.reason = `waiting for ${p.image.name}:${p.image.tag} (sha256 ${p.image.sha256.slice(0, 12)}) to be labelled; the previous image runs meanwhile`;
          return;
        }
        await this.stop(w, 'replaced', `image ${p.image.name}:${p.image.tag} is now sha256 ${p.image.sha256.slice(0, 12)} (policy serial ${serial})`);
      } else {
        const spec = await this.specHash(p).catch(() => null);
        if (spec === null || spec === w.run.spec) return;
        await this.stop(w, 'replaced', `container "${p.c.name}" changed in policy serial ${serial}`);
      }
    }
    if (w.state === 'restarting' || w.state === 'exited' || w.state === 'stopped') return;
    if (w.state === 'refused') {
      if (w.blocked) return;
      if ((await mtimeOf(p.paths.manifest)) === w.refusedAt) return;
    }
    if (this.nodeTamper && p.c.onTamper === 'stop') return this.refuseForNode(w, p, serial);
    await this.start(w, p, serial);
  }

  // Re-verification before every start and restart; a failure refuses it.
  private async start(w: Workload, p: Plan, serial: number): Promise<void> {
    const key = await this.manifestKey();
    const ref = { name: p.image.name, tag: p.image.tag, digest: p.image.sha256 };
    if (!key) return this.wait(w, `waiting for the ima service's manifest key at ${this.o.layout.manifestKey}`);
    const manifestAt = await mtimeOf(p.paths.manifest);
    if (manifestAt === null) return this.wait(w, `waiting for ${p.image.name}:${p.image.tag} to be labelled (no label manifest for ${p.rootfsName} yet)`);
    let check;
    try {
      check = await verifyRootfs(p.paths, key);
    } catch (err) {
      const e = asSealkitError(err);
      // the manifest itself cannot vouch for the rootfs: named by its absolute path, not a rootfs file
      await this.tamper(p, serial, [{ file: p.paths.manifest, kind: 'modified', expectedSha256: null, actualSha256: null }]);
      return this.refuse(w, p, serial, e.code, `${e.message}; container "${w.name}" was not started`, null, manifestAt);
    }
    if (check.manifest.image.digest !== p.image.sha256) {
      return this.wait(w, `waiting for ${p.image.name}:${p.image.tag} sha256 ${p.image.sha256.slice(0, 12)} to be labelled (the rootfs holds ${check.manifest.image.digest.slice(0, 12)})`);
    }
    if (check.findings.length) {
      const f = check.findings[0];
      await this.tamper(p, serial, check.findings);
      const more = check.findings.length > 1 ? ` (and ${check.findings.length - 1} more)` : '';
      return this.refuse(w, p, serial, 'SEALKIT_DIGEST_MISMATCH', `rootfs ${p.paths.rootfs}: /${f.file} is ${f.kind} against its label manifest${more}; container "${w.name}" was not started — relabel the image (fetch it again)`, `/${f.file}`, manifestAt);
    }
    let spec: Record<string, unknown>;
    try {
      spec = workloadSpec(runSpecFor(p.c, check.manifest.process, p.paths.rootfs));
    } catch (err) {
      const e = asSealkitError(err);
      return this.refuse(w, p, serial, e.code, e.message, null, manifestAt);
    }
    const specHash = sha256Hex(JSON.stringify(spec));
    w.state = 'starting';
    const specFile = join(this.o.specDir, `${w.name}.json`);
    const pidFile = join(this.o.specDir, `${w.name}.pid`);
    await writeFileAtomic(specFile, JSON.stringify(spec, null, 2));
    const startedAt = new Date();
    const labels = {
      [LABELS.spec]: specHash,
      [LABELS.digest]: p.image.sha256,
      [LABELS.image]: `${p.image.name}:${p.image.tag}`,
      [LABELS.rootfs]: p.paths.rootfs,
      [LABELS.serial]: String(serial),
      [LABELS.restarts]: String(w.restarts),
      [LABELS.started]: startedAt.toISOString(),
    };
    // containerd creates the task (its mount namespace) and starts it in one
    // call: a kernel with IMA namespaces would take the container's appraisal
    // policy between the two. None is written (no kernel here has them; see
    // README), so nothing sits between them.
    const run = () => this.o.ctr.run(w.name, specFile, labels, join(this.o.logDir, `${w.name}.log`), pidFile);
    let pid: number;
    try {
      await run().catch(async (err) => {
        if (!isExisting(err)) throw err;
        // a container of that name: ours (a runner killed mid-start) is
        // replaced; one sealkit did not start is not touched
        const theirs = await this.o.ctr.labels(w.name);
        if (theirs && theirs[LABELS.spec] === undefined) {
          throw new SealkitError('SEALKIT_CONFIG', `containerd namespace ${this.o.ctr.namespace} already holds a container "${w.name}" that sealkit did not start; rename the policy's container`, { foreign: true });
        }
        await this.remove(w.name);
        await run();
      });
      pid = Number((await readFile(pidFile, 'utf8')).trim()) || 0;
    } catch (err) {
      const e = asSealkitError(err);
      // never a half-created container: what the start made goes (not someone else's)
      if (!e.data?.foreign) await this.remove(w.name).catch((x) => this.o.log.error('cannot remove a container whose start failed', { container: w.name, err: x as Error }));
      if (e.code === 'SEALKIT_UNAVAILABLE') return this.wait(w, e.message);
      if (e.data?.foreign) return this.refuse(w, p, serial, e.code, e.message, null, manifestAt);
      // retried like a crash, as the restart policy says; with never, not until something changes
      await this.refuse(w, p, serial, e.code, `container "${w.name}" could not be started: ${e.message}`, null, manifestAt, p.c.restart === 'never');
      return this.retryLater(w, p, serial);
    }
    const ref2 = { name: w.name, image: ref, rootfs: p.paths.rootfs, policySerial: serial };
    w.run = { pid, startedAt: startedAt.getTime(), image: ref, rootfsName: p.rootfsName, rootfs: p.paths.rootfs, serial, spec: specHash };
    w.state = 'running';
    w.reason = null;
    w.refusedAt = undefined;
    const started: ContainerStarted = {
      ...ref2,
      pid,
      mntNs: await stat(`/proc/${pid}/ns/mnt`).then((s) => s.ino, () => null),
      cgroup: await cgroupOf(pid),
      restarts: w.restarts,
      verifiedFiles: check.files,
      startedAt: startedAt.toISOString(),
      imaNamespace: this.o.imaNamespace,
    };
    this.o.log.info('container started', { ...started });
    await this.publish(subjects.container.started, started, w);
  }

  // An exit of the task's init, reported once, from the event stream or a reconcile.
  onExit(e: TaskExit): void {
    this.exitWaiters.get(e.id)?.();
    // judged in the queue: an init that exits at once is reported while its
    // start is still being recorded
    void this.serial(`exit of ${e.id}`, async () => {
      const w = this.workloads.get(e.id);
      if (w?.run?.pid === e.pid && !w.stopping) await this.exited(w, e);
    });
  }

  private async exited(w: Workload, e: TaskExit): Promise<void> {
    const run = w.run!;
    const ranMs = Date.now() - run.startedAt;
    const signal = e.status > 128 && e.status <= 128 + 64 ? signalName(e.status - 128) : null;
    const ev: ContainerExited = { ...this.ref(w, run), pid: e.pid, code: signal ? null : e.status, signal, ranMs };
    this.o.log.info('container exited', { ...ev });
    await this.publish(subjects.container.exited, ev, w);
    await this.remove(w.name);
    w.run = undefined;
    const c = this.o.policy()?.containers.find((x) => x.name === w.name);
    const again = c && (c.restart === 'always' || (c.restart === 'on-failure' && (signal !== null || e.status !== 0)));
    if (!c || !again) {
      w.state = 'exited';
      w.reason = c ? `exited with ${signal ?? `code ${e.status}`}; restart is ${c.restart}` : `exited, and container "${w.name}" is no longer in the policy`;
      const stopped: ContainerStopped = { ...this.ref(w, run), reason: c ? 'exited' : 'removed', detail: w.reason };
      await this.publish(subjects.container.stopped, stopped, w);
      return;
    }
    // a run longer than the longest wait was a success: the next crash starts the backoff over
    if (ranMs > c.backoff.maxMs) w.backoff.reset();
    await this.restartLater(w, run);
  }

  private async restartLater(w: Workload, run: Pick<Run, 'image' | 'rootfs' | 'serial'>): Promise<void> {
    const attempt = ++w.restarts;
    const inMs = w.backoff.delayMs;
    w.state = 'restarting';
    w.reason = `restart ${attempt} in ${inMs} ms`;
    w.last = { name: w.name, image: run.image, rootfs: run.rootfs, policySerial: run.serial };
    const ev: ContainerRestarting = { ...w.last, attempt, inMs };
    await this.publish(subjects.container.restarting, ev, w);
    const backoff = w.backoff;
    void backoff.wait().then((waited) => {
      if (!waited || this.closed) return;
      void this.serial(`restart of ${w.name}`, async () => {
        if (this.workloads.get(w.name) !== w || w.state !== 'restarting' || w.backoff !== backoff) return;
        w.state = 'waiting';
        const policy = this.o.policy();
        const c = policy?.containers.find((x) => x.name === w.name);
        const image = c && policy!.images.find((i) => i.name === c.image);
        if (c && image) await this.start(w, this.plan(c, image), policy!.serial);
      });
    });
  }

  private async retryLater(w: Workload, p: Plan, serial: number): Promise<void> {
    if (p.c.restart === 'never') return;
    await this.restartLater(w, { image: { name: p.image.name, tag: p.image.tag, digest: p.image.sha256 }, rootfs: p.paths.rootfs, serial });
  }

  // SIGTERM, SIGKILL after the grace, then the task and container removed.
  private async stop(w: Workload, reason: StopReason, detail: string): Promise<void> {
    const run = w.run;
    if (!run) return;
    w.stopping = true;
    w.abort.abort();
    try {
      if (await this.o.ctr.kill(w.name, 'SIGTERM')) {
        if (!(await this.stopped(w.name, this.o.stopGraceMs))) {
          this.o.log.warn('container did not stop on SIGTERM; killing it', { container: w.name, graceMs: this.o.stopGraceMs });
          await this.o.ctr.kill(w.name, 'SIGKILL');
          await this.stopped(w.name, 30_000);
        }
      }
      await this.remove(w.name);
    } finally {
      w.stopping = false;
    }
    w.run = undefined;
    this.renew(w);
    w.state = 'stopped';
    w.reason = detail;
    const ev: ContainerStopped = { ...this.ref(w, run), reason, detail };
    this.o.log.info('container stopped', { ...ev });
    await this.publish(subjects.container.stopped, ev, w);
    if (reason === 'replaced' || reason === 'removed') w.state = 'waiting';
  }

  // Whether the task has stopped within ms: told by the exit event, checked
  // against containerd in case the stream is down.
  private async stopped(id: string, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const t = (await this.o.ctr.tasks()).get(id);
      if (!t || t.status === 'STOPPED') return true;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(500, Math.max(0, deadline - Date.now())));
        this.exitWaiters.set(id, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.exitWaiters.delete(id);
    }
    const t = (await this.o.ctr.tasks()).get(id);
    return !t || t.status === 'STOPPED';
  }

  private async remove(id: string): Promise<void> {
    await this.o.ctr.deleteTask(id, true).catch((err) => {
      if (!isNotFound(err)) throw err;
    });
    await this.o.ctr.deleteContainer(id);
  }

  // audit.tamper for a rootfs: a running container of it whose policy says
  // stop is stopped, and refused until the image is labelled again.
  onTamper(t: Tamper, fromSelf: boolean): void {
    if (fromSelf || !TAMPER_KINDS.has(t.kind)) return;
    void this.serial(`tamper in ${t.container}`, async () => {
      const policy = this.o.policy();
      for (const w of this.workloads.values()) {
        if (w.run?.rootfsName !== t.container) continue;
        const c = policy?.containers.find((x) => x.name === w.name);
        if (c?.onTamper !== 'stop') {
          this.o.log.warn('rootfs of a running container changed; onTamper is report: it keeps running', { container: w.name, file: t.file, kind: t.kind });
          continue;
        }
        const run = w.run;
        await this.stop(w, 'tamper', `/${t.file} of its rootfs is ${t.kind} (audit.tamper)`);
        w.blocked = true;
        const image = policy!.images.find((i) => i.name === c.image)!;
        const p = this.plan(c, image);
        await this.refuse(w, p, run.serial, 'SEALKIT_DIGEST_MISMATCH', `rootfs ${run.rootfs}: /${t.file} is ${t.kind}; container "${w.name}" was stopped and is not started again until ${image.name}:${image.tag} is labelled again`, `/${t.file}`, await mtimeOf(p.paths.manifest));
      }
    });
  }

  // ima.labeled: what was refused or waiting on that rootfs is tried again.
  onLabeled(l: Labeled): void {
    void this.serial(`labelled ${l.container}`, async () => {
      for (const w of this.workloads.values()) {
        if (containerName(w.image.name, w.image.tag) !== l.container) continue;
        if (w.state === 'refused') {
          w.state = 'waiting';
          w.blocked = false;
        }
      }
    }).then(() => this.reconcile(`ima.labeled ${l.container}`));
  }

  ps(): PsEntry[] {
    return [...this.workloads.values()]
      .map((w) => ({
        name: w.name,
        image: w.run ? w.run.image : w.image,
        state: w.state,
        pid: w.run?.pid ?? null,
        restarts: w.restarts,
        startedAt: w.run ? new Date(w.run.startedAt).toISOString() : null,
        reason: w.reason,
        imaNamespace: this.o.imaNamespace,
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  names(): string[] {
    return [...this.workloads.keys()];
  }

  // An adopted task's rootfs, checked once: what changed while no runner
  // watched is treated like an audit.tamper.
  private async stillIntact(w: Workload, p: Plan): Promise<boolean> {
    const key = await this.manifestKey();
    if (!key || w.run!.rootfs !== p.paths.rootfs) return true;
    const check = await verifyRootfs(p.paths, key).catch(() => null);
    const findings = check?.findings ?? [{ file: p.paths.manifest, kind: 'modified' as const, expectedSha256: null, actualSha256: null }];
    if (findings.length === 0) return true;
    await this.tamper(p, w.run!.serial, findings);
    if (p.c.onTamper !== 'stop') return true;
    const run = w.run!;
    const f = findings[0];
    await this.stop(w, 'tamper', `/${f.file} of its rootfs is ${f.kind} (found when adopting it)`);
    w.blocked = true;
    await this.refuse(w, p, run.serial, 'SEALKIT_DIGEST_MISMATCH', `rootfs ${p.paths.rootfs}: /${f.file} is ${f.kind}; container "${w.name}" was stopped and is not started again until it is labelled again`, `/${f.file}`, await mtimeOf(p.paths.manifest));
    return false;
  }

  private async labelledDigest(p: Plan): Promise<string | null> {
    const key = await this.manifestKey();
    if (!key) return null;
    return readVerifiedManifest(p.paths.manifest, key).then((m) => (m.rootfs === p.paths.rootfs ? m.image.digest : null), () => null);
  }

  // the spec the container would be created with now; null when it cannot be known yet
  private async specHash(p: Plan): Promise<string | null> {
    const key = await this.manifestKey();
    if (!key) return null;
    const m = await readVerifiedManifest(p.paths.manifest, key);
    if (m.image.digest !== p.image.sha256) return null;
    return sha256Hex(JSON.stringify(workloadSpec(runSpecFor(p.c, m.process, p.paths.rootfs))));
  }

  private async manifestKey(): Promise<PublicKey | null> {
    return readManifestKey(this.o.layout.manifestKey).catch(() => null);
  }

  private wait(w: Workload, reason: string): void {
    if (w.reason !== reason) this.o.log.info('container waiting', { container: w.name, reason });
    w.state = 'waiting';
    w.reason = reason;
  }

  private async refuse(w: Workload, p: Plan, serial: number, code: ErrorCode, reason: string, file: string | null, manifestAt: number | null, sticky = true): Promise<void> {
    w.state = 'refused';
    w.reason = reason;
    w.refusedAt = sticky ? manifestAt : undefined;
    const ev: ContainerRefused = { name: w.name, image: { name: p.image.name, tag: p.image.tag, digest: p.image.sha256 }, rootfs: p.paths.rootfs, code, reason, file, policySerial: serial };
    this.o.log.warn('container refused', { ...ev });
    await this.publish(subjects.container.refused, ev, w);
  }

  private async tamper(p: Plan, serial: number, findings: FileFinding[]): Promise<void> {
    for (const f of findings.slice(0, MAX_TAMPER_EVENTS)) {
      const t: Tamper = { container: p.rootfsName, image: { name: p.image.name, tag: p.image.tag, digest: p.image.sha256 }, ...f, policySerial: serial, action: 'blocked' };
      await this.o.publish(subjects.audit.tamper, t, { headers: { 'Sealkit-Container': p.rootfsName, 'Sealkit-Image': `${p.image.name}:${p.image.tag}` } });
    }
  }

  private ref(w: Workload, run: Run): ContainerRef {
    return { name: w.name, image: run.image, rootfs: run.rootfs, policySerial: run.serial };
  }

  private publish(subject: string, data: unknown, w: Workload): Promise<unknown> {
    return this.o.publish(subject, data, { subject: w.name, headers: { 'Sealkit-Container': w.name, 'Sealkit-Image': `${w.image.name}:${w.image.tag}` } });
  }

  // a new backoff (and the signal that ends its wait) from the container's policy
  private renew(w: Workload, c = this.o.policy()?.containers.find((x) => x.name === w.name)): void {
    w.abort.abort();
    w.abort = new AbortController();
    w.backoff = new Backoff({ firstMs: c?.backoff.initialMs ?? 1000, maxMs: c?.backoff.maxMs ?? 5 * 60_000, signal: w.abort.signal });
  }

  private workload(name: string, image: Workload['image']): Workload {
    let w = this.workloads.get(name);
    if (!w) {
      const abort = new AbortController();
      w = { name, state: 'waiting', reason: null, image, desired: '', stopping: false, restarts: 0, abort, backoff: new Backoff({ firstMs: 1000, maxMs: 1000, signal: abort.signal }) };
      this.renew(w);
      this.workloads.set(name, w);
    }
    return w;
  }
}

async function bootId(): Promise<string> {
  return readFile('/proc/sys/kernel/random/boot_id', 'utf8').then((t) => t.trim(), () => 'unknown');
}

async function mtimeOf(path: string): Promise<number | null> {
  return stat(path).then((s) => s.mtimeMs, () => null);
}

// the unified hierarchy's path, else the first controller's
async function cgroupOf(pid: number): Promise<string> {
  const lines = await readFile(`/proc/${pid}/cgroup`, 'utf8').then((t) => t.trim().split('\n'), () => [] as string[]);
  const unified = lines.find((l) => l.startsWith('0::'));
  return (unified ?? lines[0] ?? '::').split(':').slice(2).join(':');
}

function signalName(n: number): string {
  return Object.entries(constants.signals).find(([, v]) => v === n)?.[0] ?? `SIG${n}`;
}

function splitRef(ref: string): [string, string] {
  const i = ref.lastIndexOf(':');
  return i > 0 ? [ref.slice(0, i), ref.slice(i + 1)] : [ref, ''];
}

export function unknownContainer(name: string, known: string[]): SealkitError {
  return new SealkitError('SEALKIT_BAD_REQUEST', `no container named "${name}" on this node; known: [${known.sort().join(', ')}]`, { name, known });
}
