import { readFileSync, statSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { request, type NatsConnection } from '../lib/bus.ts';
import { checkEvent, checkReply, contract, type ContainerStarted, type PsEntry } from '../lib/contract.ts';
import { parseEvent } from '../lib/envelope.ts';
import type { LabelManifest } from '../lib/manifest.ts';
import type { Logger } from '../lib/log.ts';
import { owner, type FileOwner, type LookupBatch, type ManifestIndex, type MatchKind } from './manifests.ts';

// The workload containers the runner started, and which of them a denial
// happened in. A process inside a container sees its rootfs as /, so the
// kernel prints "/bin/app": the path alone says which file only when one
// rootfs holds it, and never which container. What the record says about the
// process does: its mount namespace (when the kernel prints one), else its pid
// as /proc shows it now (mount namespace, cgroup, ancestry up to the task's
// init). A process gone by the time its record is read leaves only the path,
// looked up in the rootfs of the containers that ran.

export interface Workload {
  name: string; // the runner's (policy's) container name
  image: { name: string; tag: string; digest: string };
  rootfs: string;
  policySerial: number;
  pid: number; // the task's init, host pid
  mntNs: number | null;
  cgroup: string | null;
  seenAt: number; // when the auditor learnt of this run
  endedAt: number | null;
}

/** A denial's file in a workload: the rootfs owner, the runner's container, the path on the host. */
export interface WorkloadOwner extends FileOwner {
  workload: string;
  file: string;
}

export interface ProcessBatch extends LookupBatch {
  // one batch of records, one look at each pid's /proc: a storm of denials
  // from one process costs its reads once
  processes?: Map<number, ProcFacts | null>;
  parents?: Map<number, number | null>;
  synced?: Promise<void>;
}

export interface Denied {
  pid: number | null;
  mntNs: number | null;
  path: string; // as the kernel printed it
  ino: number | null;
}

// the container a live process is in, none (a host process), or the process is gone
type InProcess = { w: Workload; match: MatchKind } | 'none' | 'gone';

// A record is read after the fact, sometimes long after (a storm, a restart):
// a container that ended this recently may still be the one it is about.
export const ENDED_KEPT_MS = 5 * 60_000;
// ancestry deeper than this is not a container's (and not worth the reads)
const MAX_ANCESTORS = 32;

export interface ContainersOptions {
  manifests: ManifestIndex;
  // a round trip to the bus: the container.* events sent before it are in
  sync?: () => Promise<void>;
  // the host's /proc: record pids are the host's, and a service in a pid
  // namespace of its own reads them through a bind of the host's procfs
  proc?: string;
  now?: () => number;
}

export class Containers {
  private readonly runs = new Map<string, Workload>();
  private asking?: Promise<void>;
  private hostMntNs?: number | null;
  private runnerHeard = false; // it answered runner.ps or sent a container.* event

  private readonly manifests: ManifestIndex;
  private readonly sync?: () => Promise<void>;
  private readonly proc: string;
  private readonly now: () => number;

  constructor(o: ContainersOptions) {
    this.manifests = o.manifests;
    this.sync = o.sync;
    this.proc = o.proc ?? '/proc';
    this.now = o.now ?? Date.now;
  }

  /** No runner heard of and no container known: nothing a denial could be tied to. */
  get idle(): boolean {
    return this.runs.size === 0 && !this.runnerHeard && !this.asking;
  }

  get running(): Workload[] {
    return [...this.runs.values()].filter((w) => w.endedAt === null);
  }

  private get known(): Workload[] {
    const cutoff = this.now() - ENDED_KEPT_MS;
    for (const [name, w] of this.runs) if (w.endedAt !== null && w.endedAt < cutoff) this.runs.delete(name);
    return [...this.runs.values()];
  }

  started(ev: ContainerStarted): void {
    this.runnerHeard = true;
    this.runs.set(ev.name, { name: ev.name, image: ev.image, rootfs: ev.rootfs, policySerial: ev.policySerial, pid: ev.pid, mntNs: ev.mntNs, cgroup: ev.cgroup || null, seenAt: this.now(), endedAt: null });
  }

  // pid: the run that ended (container.exited names it); a late event about
  // an earlier run must not end the one started since
  ended(name: string, pid?: number): void {
    this.runnerHeard = true;
    const w = this.runs.get(name);
    if (w && w.endedAt === null && (pid === undefined || pid === w.pid)) w.endedAt = this.now();
  }

  // What runs now, as `ask` fetches it from runner.ps. A denial that maps to
  // nothing waits for an answer under way: the auditor asks at its start,
  // when containers may already be running and failing.
  refresh(ask: () => Promise<PsEntry[] | null>, log: Logger): Promise<void> {
    const askedAt = this.now();
    const p: Promise<void> = ask()
      .then((entries) => (entries ? this.fromPs(entries, askedAt, log) : undefined))
      .finally(() => {
        if (this.asking === p) this.asking = undefined;
      });
    this.asking = p;
    return p;
  }

  // runner.ps names the image, not the rootfs, the serial nor the
  // namespaces: those come from the image's label manifest and from /proc.
  // A run learnt of after the question was asked is newer than the answer
  // and stays as it is.
  private async fromPs(entries: PsEntry[], askedAt: number, log: Logger): Promise<void> {
    this.runnerHeard = true;
    const now = new Map<string, Workload>();
    for (const e of entries) {
      if (e.state !== 'running' || e.pid === null) continue;
      const m = await this.manifests.ofImage(e.image);
      if (!m) {
        log.warn('runner.ps names a running container whose image has no label manifest here; its denials name no container until its container.started says where it runs from', { container: e.name, image: e.image });
        continue;
      }
      const proc = readProcess(this.proc, e.pid);
      // which of the init's cgroups the runner made is not said (on a v1 host
      // some are the runner's own): the namespace and the ancestry tell
      now.set(e.name, { name: e.name, image: m.image, rootfs: m.rootfs, policySerial: m.policySerial, pid: e.pid, mntNs: proc?.mntNs ?? null, cgroup: null, seenAt: askedAt, endedAt: null });
    }
    for (const [name, w] of this.runs) {
      if (w.seenAt >= askedAt) continue;
      const fresh = now.get(name);
      if (!fresh) this.ended(name);
      else if (fresh.pid !== w.pid || w.endedAt !== null) this.runs.set(name, fresh);
      now.delete(name);
    }
    for (const [name, w] of now) if (!this.runs.has(name)) this.runs.set(name, w);
  }

  /**
   * The workload a denial happened in, with its file on the host, or null
   * when none of the containers the runner started explains it.
   */
  async ofDenial(d: Denied, batch: ProcessBatch): Promise<WorkloadOwner | null> {
    const found = await this.find(d, batch);
    if (found || !this.sync || batch.synced || this.idle || !this.unannounced(d, batch)) return found;
    // a process in a container the auditor does not know (yet): the runner
    // may have published container.started before this record was read, the
    // event still on its way (or the answer to runner.ps). Once per batch,
    // let what the server sent before now arrive, and look again.
    await (batch.synced = this.sync().then(
      () => this.asking,
      () => {},
    ));
    return this.find(d, batch);
  }

  // Alive, in a mount namespace not the host's: some container's process.
  // Only then is the bus asked. A node with no runner heard of and no
  // question to it under way asks nothing, not even /proc: one stat took
  // 10–24 µs on the loaded test machine, where the storm spends about 300 µs
  // per event.
  private unannounced(d: Denied, batch: ProcessBatch): boolean {
    // null when init's is hidden (ptrace: init holds capabilities the
    // auditor lacks), and so is that of every host process that does
    if (this.hostMntNs === undefined) this.hostMntNs = mntNsOf(this.proc, 1);
    const seen = d.pid === null ? undefined : batch.processes?.get(d.pid);
    const ns = d.mntNs ?? (d.pid === null ? null : seen !== undefined ? (seen?.mntNs ?? null) : mntNsOf(this.proc, d.pid));
    return ns !== null && ns !== this.hostMntNs;
  }

  private process(pid: number, batch: ProcessBatch): ProcFacts | null {
    const procs = (batch.processes ??= new Map());
    let p = procs.get(pid);
    if (p === undefined) procs.set(pid, (p = readProcess(this.proc, pid)));
    return p;
  }

  private async find(d: Denied, batch: ProcessBatch): Promise<WorkloadOwner | null> {
    if (this.runs.size === 0) return null;
    const hit = this.inProcess(d, batch);
    // a live process outside every container: the path is its own, on the host
    if (hit === 'none') return null;
    const rel = d.path.replace(/^\/+/, '');
    if (hit === 'gone') return this.byPath(rel, d.ino, batch);
    const m = await this.manifests.ofRootfs(hit.w.rootfs, batch);
    if (!m) return null;
    // a file the manifest does not list, but there in the rootfs (written
    // after labelling): the same path with the record's inode
    const inRootfs = !Object.hasOwn(m.files, rel) && d.ino !== null && (await lstat(join(m.rootfs, rel)).catch(() => null))?.ino === d.ino;
    return inWorkload(hit.w, m, rel, hit.match, inRootfs);
  }

  private inProcess(d: Denied, batch: ProcessBatch): InProcess {
    const w = d.mntNs === null ? undefined : this.known.find((k) => k.mntNs === d.mntNs);
    if (w) return { w, match: 'mnt-ns' };
    if (d.pid === null) return 'gone';
    const proc = this.process(d.pid, batch);
    return proc ? this.ofProcess(d.pid, proc, batch) : 'gone';
  }

  private ofProcess(pid: number, proc: ProcFacts, batch: ProcessBatch): InProcess {
    const running = this.running.filter((w) => this.alive(w, batch));
    const byInit = running.find((w) => w.pid === pid);
    if (byInit) return { w: byInit, match: 'pid' };
    if (proc.mntNs !== null) {
      const w = running.find((k) => k.mntNs === proc.mntNs);
      if (w) return { w, match: 'pid' };
    }
    const w = running.find((k) => k.cgroup !== null && proc.cgroups.some((c) => within(c, k.cgroup!)));
    if (w) return { w, match: 'cgroup' };
    // /proc/<pid>/ns/mnt needs ptrace access, the cgroup may be one the
    // runner did not name: the task's init among the ancestors settles it
    const parents = (batch.parents ??= new Map());
    let at = proc.ppid;
    for (let i = 0; at !== null && at > 1 && running.length > 0 && i < MAX_ANCESTORS; i++) {
      const w = running.find((k) => k.pid === at);
      if (w) return { w, match: 'pid' };
      let next = parents.get(at);
      if (next === undefined) parents.set(at, (next = readPpid(this.proc, at)));
      at = next;
    }
    return 'none';
  }

  // The run's init still lives, in the namespace it was announced with. A
  // task that died while no runner was there to say so stays in the table,
  // and the kernel hands its namespace's inode number (the lowest free one)
  // and, once pids wrap, its pid to whatever starts next: a process in those
  // is not the container's.
  private alive(w: Workload, batch: ProcessBatch): boolean {
    const init = this.process(w.pid, batch);
    return init !== null && (init.mntNs === null || w.mntNs === null || init.mntNs === w.mntNs);
  }

  // The process is gone: the path in the rootfs of the containers that ran,
  // told apart by inode when several hold it. Two containers from one rootfs
  // cannot be told apart this way: then none is named.
  private async byPath(rel: string, ino: number | null, batch: LookupBatch): Promise<WorkloadOwner | null> {
    const holders: Array<{ w: Workload; m: LabelManifest }> = [];
    for (const w of this.known) {
      const m = await this.manifests.ofRootfs(w.rootfs, batch);
      if (m && Object.hasOwn(m.files, rel)) holders.push({ w, m });
    }
    let found = holders;
    let unlisted = false;
    if (found.length === 0 && ino !== null) {
      // a file no manifest lists, written into a rootfs after it was
      // labelled (IPE refuses to execute it): the rootfs that holds this
      // path with this inode
      for (const w of this.known) {
        const st = await lstat(join(w.rootfs, rel)).catch(() => null);
        const m = st?.ino === ino ? await this.manifests.ofRootfs(w.rootfs, batch) : null;
        if (m) found.push({ w, m });
      }
      unlisted = true;
    }
    if (new Set(found.map((h) => h.m.rootfs)).size > 1 && ino !== null) {
      const same: typeof holders = [];
      for (const h of found) {
        const st = await lstat(join(h.m.rootfs, rel)).catch(() => null);
        if (st?.ino === ino) same.push(h);
      }
      found = same;
    }
    if (found.length !== 1) return null;
    return inWorkload(found[0].w, found[0].m, rel, 'rootfs-path', unlisted);
  }
}

// inRootfs: the file was found in the rootfs, though its manifest does not list it
function inWorkload(w: Workload, m: LabelManifest, rel: string, match: MatchKind, inRootfs = false): WorkloadOwner {
  const listed = inRootfs || Object.hasOwn(m.files, rel);
  return {
    ...owner(m, rel, match),
    // the run's own facts: the runner started it from this image under this serial
    image: w.image,
    policySerial: w.policySerial,
    workload: w.name,
    // a file the manifest does not list may be on a mount of the container's
    // own (tmpfs, a bind): then the rootfs is no place to look for it
    file: listed ? join(m.rootfs, rel) : '/' + rel,
  };
}

// cgroup paths as /proc/<pid>/cgroup prints them; the runner's may be under
// /sys/fs/cgroup. The root cgroup holds every process: it names no container.
function within(path: string, cgroup: string): boolean {
  const c = cgroup.replace(/^\/sys\/fs\/cgroup/, '').replace(/\/+$/, '');
  return c !== '' && (path === c || path.startsWith(c + '/'));
}

interface ProcFacts {
  mntNs: number | null;
  cgroups: string[]; // one per hierarchy: v2 has one, a v1 or hybrid host one per controller
  ppid: number | null;
}

// What /proc says about a process now; null when it is gone. Read
// synchronously: procfs answers from memory, and a libuv round trip per
// read was what a denial's latency waited on under load (see source.ts).
function readProcess(proc: string, pid: number): ProcFacts | null {
  // one stat tells a gone process, without the cost of an exception
  if (!statSync(`${proc}/${pid}`, { throwIfNoEntry: false })) return null;
  const status = readStatus(proc, pid);
  // a zombie has exited: its namespaces are released (their numbers free to
  // be handed on), its pid is held only until its parent reaps it
  if (!status || status.exited) return null;
  const { ppid } = status;
  let cgroups: string[] = [];
  try {
    cgroups = cgroupPaths(readFileSync(`${proc}/${pid}/cgroup`, 'utf8'));
  } catch {
    // gone since, or hidden: the namespace and the ancestry still tell
  }
  return { mntNs: mntNsOf(proc, pid), cgroups, ppid };
}

// the namespace's inode, as the runner reports it; reading it needs ptrace
// access. Null for a process gone, without the cost of an exception.
function mntNsOf(proc: string, pid: number): number | null {
  try {
    return statSync(`${proc}/${pid}/ns/mnt`, { throwIfNoEntry: false })?.ino ?? null;
  } catch {
    return null;
  }
}

function readStatus(proc: string, pid: number): { ppid: number; exited: boolean } | null {
  try {
    const text = readFileSync(`${proc}/${pid}/status`, 'utf8');
    const ppid = /^PPid:\s+(\d+)$/m.exec(text);
    return ppid ? { ppid: Number(ppid[1]), exited: /^State:\s+[ZX]/m.test(text) } : null;
  } catch {
    return null;
  }
}

function readPpid(proc: string, pid: number): number | null {
  return readStatus(proc, pid)?.ppid ?? null;
}

// "4:memory:/a/b" → "/a/b"
function cgroupPaths(text: string): string[] {
  const paths = text.split('\n').filter(Boolean).map((l) => l.slice(l.indexOf(':', l.indexOf(':') + 1) + 1));
  return [...new Set(paths)];
}

// The table follows the runner: its container.* events, and runner.ps at the
// start and after every reconnect (events missed while away). No runner
// answering is an empty table, not a reason to wait.
export function followRunner(nc: NatsConnection, containers: Containers, log: Logger): void {
  nc.subscribe(contract.container.started.subject, {
    callback: (err, msg) => {
      if (err) return;
      try {
        const ev = checkEvent(contract.container.started, parseEvent(msg.data)).data;
        containers.started(ev);
        log.debug('container.started: its denials are tied to it', { container: ev.name, pid: ev.pid, mntNs: ev.mntNs, cgroup: ev.cgroup });
      } catch (e) {
        log.warn('container.started is malformed; asking the runner what runs instead', { err: e as Error });
        void ask();
      }
    },
  });
  for (const spec of [contract.container.exited, contract.container.stopped]) {
    nc.subscribe(spec.subject, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const data = checkEvent(spec, parseEvent(msg.data)).data as { name: string; pid?: number };
          containers.ended(data.name, data.pid);
        } catch (e) {
          log.warn(`${spec.subject} is malformed; asking the runner what runs instead`, { err: e as Error });
          void ask();
        }
      },
    });
  }
  const ask = () =>
    containers.refresh(async () => {
      try {
        return checkReply(contract.runner.ps, await request(nc, contract.runner.ps.subject, {}, { timeout: 5000 })).containers;
      } catch (err) {
        if ((err as { code?: string }).code === 'SEALKIT_NO_RESPONDER') log.debug('no runner answers runner.ps; no containers to tie denials to until it starts one');
        else log.warn('runner.ps failed; denials are tied to containers from the container.* events alone', { err: err as Error });
        return null;
      }
    }, log);
  void ask();
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'reconnect') void ask();
  })();
}
