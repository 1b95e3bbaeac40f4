import { lstat, readFile, stat } from 'node:fs/promises';
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
  processes?: Map<number, Promise<ProcFacts | null>>;
  parents?: Map<number, Promise<number | null>>;
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

  get running(): Workload[] {
    return [...this.runs.values()].filter((w) => w.endedAt === null);
  }

  private get known(): Workload[] {
    const cutoff = this.now() - ENDED_KEPT_MS;
    for (const [name, w] of this.runs) if (w.endedAt !== null && w.endedAt < cutoff) this.runs.delete(name);
    return [...this.runs.values()];
  }

  started(ev: ContainerStarted): void {
    this.runs.set(ev.name, { name: ev.name, image: ev.image, rootfs: ev.rootfs, policySerial: ev.policySerial, pid: ev.pid, mntNs: ev.mntNs, cgroup: ev.cgroup || null, seenAt: this.now(), endedAt: null });
  }

  // pid: the run that ended (container.exited names it); a late event about
  // an earlier run must not end the one started since
  ended(name: string, pid?: number): void {
    const w = this.runs.get(name);
    if (w && w.endedAt === null && (pid === undefined || pid === w.pid)) w.endedAt = this.now();
  }

  // What runs now, as the runner answers runner.ps. Its lines name the image,
  // not the rootfs, the serial nor the namespaces: those come from the
  // image's label manifest and from /proc. A run learnt of after the question was asked is
  // newer than the answer and stays as it is.
  // `ask` fetches runner.ps; a denial that maps to nothing waits for an
  // answer under way (the auditor asks at its start, when containers may
  // already be running and failing)
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

  private async fromPs(entries: PsEntry[], askedAt: number, log: Logger): Promise<void> {
    const now = new Map<string, Workload>();
    for (const e of entries) {
      if (e.state !== 'running' || e.pid === null) continue;
      const m = await this.manifests.ofImage(e.image);
      if (!m) {
        log.warn('runner.ps names a running container whose image has no label manifest here; its denials are tied to it by path only', { container: e.name, image: e.image });
        continue;
      }
      const proc = await readProcess(this.proc, e.pid);
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
    if (found || !this.sync || batch.synced) return found;
    // the runner published container.started before this record was read,
    // and the event may still be on its way (or the answer to runner.ps):
    // once per batch, let what the server sent before now arrive, and look again
    await (batch.synced = this.sync().then(
      () => this.asking,
      () => {},
    ));
    return this.find(d, batch);
  }

  private async find(d: Denied, batch: ProcessBatch): Promise<WorkloadOwner | null> {
    if (this.runs.size === 0) return null;
    const hit = await this.inProcess(d, batch);
    // a live process outside every container: the path is its own, on the host
    if (hit === 'none') return null;
    const rel = d.path.replace(/^\/+/, '');
    if (hit === 'gone') return this.byPath(rel, d.ino, batch);
    const m = await this.manifests.ofRootfs(hit.w.rootfs, batch);
    return m ? inWorkload(hit.w, m, rel, hit.match) : null;
  }

  private async inProcess(d: Denied, batch: ProcessBatch): Promise<InProcess> {
    const w = d.mntNs === null ? undefined : this.known.find((k) => k.mntNs === d.mntNs);
    if (w) return { w, match: 'mnt-ns' };
    if (d.pid === null) return 'gone';
    const procs = (batch.processes ??= new Map());
    let p = procs.get(d.pid);
    if (!p) procs.set(d.pid, (p = readProcess(this.proc, d.pid)));
    const proc = await p;
    return proc ? this.ofProcess(d.pid, proc, batch) : 'gone';
  }

  private async ofProcess(pid: number, proc: ProcFacts, batch: ProcessBatch): Promise<InProcess> {
    const running = this.running;
    const byInit = running.find((w) => w.pid === pid);
    if (byInit) return { w: byInit, match: 'pid' };
    if (proc.mntNs !== null) {
      const w = running.find((k) => k.mntNs === proc.mntNs);
      if (w) return { w, match: 'pid' };
    }
    const w = running.find((k) => k.cgroup !== null && k.cgroup !== '/' && proc.cgroups.some((c) => within(c, k.cgroup!)));
    if (w) return { w, match: 'cgroup' };
    // /proc/<pid>/ns/mnt needs ptrace access, the cgroup may be one the
    // runner did not name: the task's init among the ancestors settles it
    const parents = (batch.parents ??= new Map());
    let at = proc.ppid;
    for (let i = 0; at !== null && at > 1 && running.length > 0 && i < MAX_ANCESTORS; i++) {
      const w = running.find((k) => k.pid === at);
      if (w) return { w, match: 'pid' };
      let next = parents.get(at);
      if (!next) parents.set(at, (next = readPpid(this.proc, at)));
      at = await next;
    }
    return 'none';
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
    if (new Set(found.map((h) => h.m.rootfs)).size > 1 && ino !== null) {
      const same: typeof holders = [];
      for (const h of found) {
        const st = await lstat(join(h.m.rootfs, rel)).catch(() => null);
        if (st?.ino === ino) same.push(h);
      }
      found = same;
    }
    if (found.length !== 1) return null;
    return inWorkload(found[0].w, found[0].m, rel, 'rootfs-path');
  }
}

function inWorkload(w: Workload, m: LabelManifest, rel: string, match: MatchKind): WorkloadOwner {
  const listed = Object.hasOwn(m.files, rel);
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

// cgroup paths as /proc/<pid>/cgroup prints them; the runner's may be under /sys/fs/cgroup
function within(path: string, cgroup: string): boolean {
  const c = cgroup.replace(/^\/sys\/fs\/cgroup/, '').replace(/\/+$/, '');
  return path === c || path.startsWith(c + '/');
}

interface ProcFacts {
  mntNs: number | null;
  cgroups: string[]; // one per hierarchy: v2 has one, a v1 or hybrid host one per controller
  ppid: number | null;
}

// What /proc says about a process now; null when it is gone.
async function readProcess(proc: string, pid: number): Promise<ProcFacts | null> {
  const [ns, cgroups, ppid] = await Promise.all([
    stat(`${proc}/${pid}/ns/mnt`).then((s) => s.ino, () => null),
    readFile(`${proc}/${pid}/cgroup`, 'utf8').then(cgroupPaths, () => null),
    readPpid(proc, pid),
  ]);
  return ppid === null && cgroups === null ? null : { mntNs: ns, cgroups: cgroups ?? [], ppid };
}

async function readPpid(proc: string, pid: number): Promise<number | null> {
  try {
    const m = /^PPid:\s+(\d+)$/m.exec(await readFile(`${proc}/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
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
        containers.started(checkEvent(contract.container.started, parseEvent(msg.data)).data);
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
