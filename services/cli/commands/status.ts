import type { NatsConnection } from 'nats';
import { pingAll, request } from '../../lib/bus.ts';
import type { PingReply } from '../../lib/contract.ts';
import { asSealkitError, type WireError } from '../../lib/errors.ts';
import { serviceNames, subjects } from '../../lib/subjects.ts';
import { askPs } from '../runner.ts';
import { busUsage, connect, none, seconds, server, timeoutMs, waiting, type Command } from './common.ts';

// The kernel's initial pid namespace has this fixed inode on every Linux
// (PROC_PID_INIT_INO): a pid reported from it is the host's view.
const INIT_PID_NS = 'pid:[4026531836]';

interface NodeInfo {
  node?: string;
  os?: { distro?: string; release?: string; kernel?: string; hostname?: string };
  ima?: Record<string, unknown>;
  services?: Array<{ service: string; pid: number; hostPid: boolean; uptimeSec: number }>;
  error?: WireError;
}

export const status: Command = {
  name: 'status',
  summary: 'node name and info, the services answering (host pids), policy serial',
  usage: `usage: sealkit status [--json] [--timeout SEC]

Asks the node who it is (node.info.get), which services answer sealkit.ping
which policy is in force, and how many of its containers run (runner.ps;
"sealkit ps" for each). Every service the node runs (${serviceNames.join(', ')})
must answer: the ones that do not are named, and the exit code is 1.
Process ids are as the host sees them (nodeinfo maps them out of each
service's own pid namespace).

options:
  --json           print {node, services, missing, policy, containers} as JSON
  --timeout SEC    how long to wait for the services to answer (default 5)
  -h, --help       this help
${busUsage}`,
  options: { json: { type: 'boolean' }, timeout: { type: 'string' } },
  bus: true,
  async run(o, positionals) {
    none(positionals, 'status');
    const ms = timeoutMs(o, 5, 'status');
    const nc = await connect(o, false);
    let info: NodeInfo;
    let alive: PingReply[];
    let policy: { serial?: number; keyId?: string; error?: WireError };
    let containers: { running?: number; total?: number; error?: WireError };
    try {
      if (!o.json) waiting(`${serviceNames.length} services to answer sealkit.ping`, ms);
      const policyP = request<{ serial: number; keyId: string }>(nc, subjects.policy.get, {}, { timeout: ms }).catch((e) => ({ error: asSealkitError(e).toWire() }));
      const containersP = askPs(nc, ms, server(o)).then((cs) => ({ running: cs.filter((c) => c.state === 'running').length, total: cs.length }), (e) => ({ error: asSealkitError(e).toWire() }));
      alive = await ping(nc, ms);
      // nodeinfo maps the pids of exactly the services that answered
      info = await request<NodeInfo>(nc, subjects.node.infoGet, { services: alive }, { timeout: ms }).catch((e) => ({ error: asSealkitError(e).toWire() }));
      policy = await policyP;
      containers = await containersP;
    } finally {
      await nc.close();
    }
    const node = info.node ?? alive[0]?.node ?? null;
    const services = alive.map((a) => {
      const seen = info.services?.find((s) => s.service === a.service);
      const hostPid = seen?.hostPid ? seen.pid : a.pidNs === undefined || a.pidNs === INIT_PID_NS ? a.pid : null;
      return { service: a.service, node: a.node, pid: hostPid ?? a.pid, hostPid: hostPid !== null, uptimeSec: a.uptimeSec, version: a.version };
    });
    const missing = serviceNames.filter((n) => !alive.some((a) => a.service === n));
    if (o.json) {
      process.stdout.write(JSON.stringify({ node: { ...info, name: node }, services, missing, policy, containers }) + '\n');
      return missing.length ? 1 : 0;
    }
    const os = info.os ? [info.os.distro && info.os.distro !== 'unknown' ? `${info.os.distro} ${info.os.release ?? ''}`.trim() : null, info.os.kernel ? `kernel ${info.os.kernel}` : null].filter(Boolean).join(', ') : '';
    process.stdout.write(`node: ${node ?? '(no answer)'}${os ? ` (${os})` : ''}${info.error ? ` — node.info.get: ${info.error.message} [${info.error.code}]` : ''}\n`);
    if (info.ima) process.stdout.write(`ima: ${JSON.stringify(info.ima)}\n`);
    process.stdout.write('services:\n');
    for (const s of services) process.stdout.write(`  ${s.service.padEnd(9)} pid ${s.pid}${s.hostPid ? '' : ' (in its own pid namespace; nodeinfo could not map it)'}, up ${s.uptimeSec}s\n`);
    for (const m of missing) process.stdout.write(`  ${m.padEnd(9)} NOT ANSWERING (no reply to sealkit.ping within ${seconds(ms)})\n`);
    process.stdout.write(policy.error ? `policy: ${policy.error.message} [${policy.error.code}]\n` : `policy: serial ${policy.serial} signed by ${policy.keyId}\n`);
    // the runner's absence is already named among the services
    const noRunner = containers.error?.code === 'SEALKIT_NO_RESPONDER';
    process.stdout.write(containers.error ? `containers: ${noRunner ? '(the runner is not answering)' : `${containers.error.message} [${containers.error.code}]`}\n` : `containers: ${containers.running} running of ${containers.total}\n`);
    if (missing.length) process.stderr.write(`sealkit: ${missing.length} of ${serviceNames.length} services do not answer: ${missing.join(', ')}\n`);
    return missing.length ? 1 : 0;
  },
};

// Every service answers sealkit.ping; stop as soon as all expected did.
const ping = (nc: NatsConnection, ms: number) => pingAll(nc, ms, serviceNames.length);
