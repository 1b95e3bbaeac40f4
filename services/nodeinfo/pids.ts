import { readFile, readdir, readlink } from 'node:fs/promises';
import type { PingReply } from '../lib/contract.ts';

// A service on the ISO runs as an OCI bundle in its own pid namespace, where
// it is pid 1. Its pid as the host sees it is what an operator can act on
// (kill, /proc, the auditor's records): nodeinfo runs in the host's pid
// namespace and finds the process whose NSpid ends with the pid the service
// reported, in the pid namespace (or, when the kernel will not show that to
// an unprivileged reader, the cgroup) the service reported.

interface Proc {
  nspid: number[]; // host view first
  pidNs: string | null; // null: not readable (the target holds capabilities this process lacks)
  cgroup: string | null;
}

type Reply = Pick<PingReply, 'pid' | 'pidNs' | 'cgroup'>;

// Every process in a pid namespace below this one: read once per question.
async function nestedProcs(proc: string): Promise<Proc[]> {
  const out: Proc[] = [];
  for (const entry of await readdir(proc).catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`${proc}/${entry}/status`, 'utf8').catch(() => '');
    const nspid = /^NSpid:\s+(.+)$/m.exec(status)?.[1].trim().split(/\s+/).map(Number);
    if (!nspid || nspid.length < 2) continue;
    const pidNs = await readlink(`${proc}/${entry}/ns/pid`).catch(() => null);
    const cgroup = pidNs === null ? await readFile(`${proc}/${entry}/cgroup`, 'utf8').then((c) => c.trim(), () => null) : null;
    out.push({ nspid, pidNs, cgroup });
  }
  return out;
}

function match(reply: Reply, procs: Proc[]): number | null {
  const found = procs
    .filter((p) => p.nspid[p.nspid.length - 1] === reply.pid && (p.pidNs !== null ? p.pidNs === reply.pidNs : !!reply.cgroup && p.cgroup === reply.cgroup))
    .map((p) => p.nspid[0]);
  // more than one match is not an answer
  return found.length === 1 ? found[0] : null;
}

export async function hostPid(reply: Reply, proc = '/proc'): Promise<number | null> {
  return (await hostPids([reply], proc))[0];
}

export async function hostPids(replies: Reply[], proc = '/proc'): Promise<Array<number | null>> {
  const own = await readlink(`${proc}/self/ns/pid`).catch(() => null);
  const same = (r: Reply) => !r.pidNs || (own !== null && r.pidNs === own);
  const procs = replies.every(same) ? [] : await nestedProcs(proc);
  return replies.map((r) => (same(r) ? r.pid : match(r, procs)));
}

export interface ServiceView {
  service: string;
  pid: number; // in the host's pid namespace when known, else as reported
  hostPid: boolean; // false: only the service's own view was available
  uptimeSec: number;
}

export async function serviceViews(alive: PingReply[]): Promise<ServiceView[]> {
  const host = await hostPids(alive);
  return alive.map((a, i) => ({ service: a.service, pid: host[i] ?? a.pid, hostPid: host[i] !== null, uptimeSec: a.uptimeSec }));
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
