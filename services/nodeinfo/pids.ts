import { readFile, readdir, readlink } from 'node:fs/promises';
import type { PingReply } from '../lib/bus.ts';

// A service on the ISO runs as an OCI bundle in its own pid namespace, where
// it is pid 1. Its pid as the host sees it is what an operator can act on
// (kill, /proc, the auditor's records): nodeinfo runs in the host's pid
// namespace and finds the process whose NSpid ends with the pid the service
// reported, in the pid namespace (or, when the kernel will not show that to
// an unprivileged reader, the cgroup) the service reported.
export async function hostPid(reply: Pick<PingReply, 'pid' | 'pidNs' | 'cgroup'>, proc = '/proc'): Promise<number | null> {
  const own = await readlink(`${proc}/self/ns/pid`).catch(() => null);
  if (!reply.pidNs || (own && reply.pidNs === own)) return reply.pid;
  const found: number[] = [];
  for (const entry of await readdir(proc).catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`${proc}/${entry}/status`, 'utf8').catch(() => '');
    const ns = /^NSpid:\s+(.+)$/m.exec(status)?.[1].trim().split(/\s+/).map(Number);
    if (!ns || ns.length < 2 || ns[ns.length - 1] !== reply.pid) continue;
    const pidNs = await readlink(`${proc}/${entry}/ns/pid`).catch(() => null);
    if (pidNs !== null) {
      if (pidNs === reply.pidNs) found.push(ns[0]);
      continue;
    }
    const cgroup = await readFile(`${proc}/${entry}/cgroup`, 'utf8').catch(() => null);
    if (cgroup !== null && reply.cgroup && cgroup.trim() === reply.cgroup) found.push(ns[0]);
  }
  // the thread group leader is listed once; more than one match is not an answer
  return found.length === 1 ? found[0] : null;
}

export interface ServiceView {
  service: string;
  pid: number; // in the host's pid namespace when known, else as reported
  hostPid: boolean; // false: only the service's own view was available
  uptimeSec: number;
}

export async function serviceViews(alive: PingReply[]): Promise<ServiceView[]> {
  return Promise.all(
    alive.map(async (a) => {
      const host = await hostPid(a);
      return { service: a.service, pid: host ?? a.pid, hostPid: host !== null, uptimeSec: a.uptimeSec };
    }),
  );
}

// The ping replies a node.info.get request names, checked: anyone may ask.
export function pingRepliesIn(data: Uint8Array): PingReply[] | null {
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch {
    return null;
  }
  const list = (body as { services?: unknown } | null)?.services;
  if (!Array.isArray(list)) return null;
  const str = (v: unknown, max: number) => typeof v === 'string' && v.length <= max;
  return list.slice(0, 64).filter((r): r is PingReply =>
    !!r && str(r.service, 64) && Number.isInteger(r.pid) && r.pid > 0 && (r.pidNs === undefined || str(r.pidNs, 64)) && (r.cgroup === undefined || str(r.cgroup, 4096)) && Number.isFinite(r.uptimeSec));
}
