import { SealkitError } from '../../lib/errors.ts';
import { sha256Hex } from '../../lib/digest.ts';
import { parsePolicyYaml } from '../../lib/policy.ts';
import { answerPrefix, checkGroup, encodeFleetPolicy, fleetBucket, groupKey } from '../../lib/fleet.ts';
import { subjects } from '../../lib/subjects.ts';
import { parseEvent, type CloudEvent } from '../../lib/envelope.ts';
import { streamNames, type PolicyApplied, type PolicyAudit } from '../../lib/contract.ts';
import { one, readInput, seconds, timeoutMs, type Command } from './common.ts';
import { signatureOf } from './policy-push.ts';
import { eventOf } from './watch.ts';
import { ChainVerifier } from '../../lib/eventverify.ts';
import { connectHub, eventNode, followHubStream, hubOptions, hubShards, hubUsage, readRegistry } from './fleet-hub.ts';
import { whileElecting } from '../../lib/streams.ts';
import { nuid, type NatsConnection } from 'nats';
import { setTimeout as sleep } from 'node:timers/promises';

// How far back of the push's own clock the acknowledgements are read: the
// hub stamps a sourced event when it stores it, on its clock, not ours.
// Matching by group and sha256 keeps an older push's answers out.
const CLOCK_SLACK_MS = 60_000;
// How often a node still silent is asked itself, and how long one question may take.
const ASK_EVERY_MS = 2_000;
const ASK_TIMEOUT_MS = 1_500;

type Answer = { state: 'applied'; serial: number } | { state: 'refused'; code: string; reason: string };

export const fleetPush: Command = {
  name: 'fleet push',
  summary: 'push a signed policy to a group of nodes through the hub, and wait for each',
  usage: `usage: sealkit fleet push FILE --group G [--sig SIG | --key KEY] [--timeout SEC]

Writes the exact bytes of FILE with their detached signature (SIG, default
FILE.sig, or signed on the fly with --key) to the hub's key of group G
(bucket ${fleetBucket}, key group.G). Every node of G applies it with the
checks of a local push, or refuses it. Then waits for every node the
registry lists in G, and prints one line per node: applied, refused (code
and reason), or no answer. Progress goes to stderr.

Exits 0 only if every node of G applied it within the timeout. A node that
was away applies it when it is back; "sealkit fleet status" shows it then.
A hub electing leaders (a member just came or went) is waited for within
the same timeout.

options:
  --group G        the group of nodes (required)
  --sig SIG        signature file {"keyId", "signature"} (default FILE.sig)
  --key KEY        sign with this .key file instead of reading SIG
  --pusher NAME    who pushes, recorded in each node's policy.applied (default $USER)
  --timeout SEC    how long the whole push may take (default 30)
  -h, --help       this help
${hubUsage}`,
  options: { ...hubOptions, group: { type: 'string' }, sig: { type: 'string' }, key: { type: 'string' }, pusher: { type: 'string' }, timeout: { type: 'string' } },
  async run(o, positionals) {
    const file = one(positionals, 'FILE', 'fleet push');
    if (!o.group) throw new SealkitError('SEALKIT_BAD_REQUEST', 'fleet push needs --group G (the group of nodes to push to; "sealkit fleet status" lists them)');
    const group = checkGroup(o.group as string, '--group');
    const bytes = await readInput(file);
    const policy = parsePolicyYaml(bytes);
    const yaml = bytes.toString('utf8');
    if (!Buffer.from(yaml, 'utf8').equals(bytes)) throw new SealkitError('SEALKIT_POLICY_YAML', `${file} is not UTF-8 text; save it as UTF-8 and sign it again`);
    const sig = await signatureOf(o, file, bytes);
    const ms = timeoutMs(o, 30, 'fleet push');
    const sha256 = sha256Hex(bytes);

    const nc = await connectHub(o);
    const stop = new AbortController();
    // the timeout covers the whole push, waiting out a hub electing leaders included
    const deadline = Date.now() + ms;
    const told = new Set<string>();
    const onWait = (err: Error) => {
      if (told.has(err.message)) return;
      told.add(err.message);
      process.stderr.write(`fleet push: the hub is not answering yet (${err.message}: electing leaders after a member came or went?); trying again until the timeout\n`);
    };
    try {
      const registry = await readRegistry(nc, { deadline, onWait });
      const nodes = registry.filter((n) => n.groups.includes(group)).map((n) => n.node);
      if (!nodes.length) {
        const known = [...new Set(registry.flatMap((n) => n.groups))].sort();
        throw new SealkitError('SEALKIT_BAD_REQUEST', `no enrolled node is in group "${group}"; the registry's groups are [${known.join(', ')}]; enrol nodes with "sealkit fleet enroll --group ${group}" first`, { group });
      }

      const answers = new Map<string, Answer>();
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const progress = () => {
        const applied = [...answers.values()].filter((a) => a.state === 'applied').length;
        const waitingFor = nodes.filter((n) => !answers.has(n));
        process.stderr.write(`fleet push serial ${policy.serial} to ${group}: ${answers.size}/${nodes.length} answered (${applied} applied, ${answers.size - applied} refused)${waitingFor.length ? `; waiting for ${waitingFor.join(', ')}` : ''}\n`);
        if (!waitingFor.length) done();
      };
      // An answer counts only when its node signed it (a node could publish
      // an event naming another); the first authentic answer of a node
      // counts: a refusal repeated at a restart, or an applied record
      // arriving by both paths, is the same answer.
      const verifier = new ChainVerifier(new Map(registry.map((n) => [n.node, n.eventKey])));
      const answer = (ev: CloudEvent, a: Answer) => {
        const node = eventNode(ev);
        if (!node || !nodes.includes(node) || answers.has(node)) return;
        const v = verifier.check(ev);
        if (v.kind === 'forged' || v.kind === 'altered' || v.kind === 'forked') {
          process.stderr.write(`fleet push: an answer naming ${node} is ${v.kind} (${v.reason ?? ''}); not counted\n`);
          return;
        }
        answers.set(node, a);
        progress();
      };
      const applied = (ev: CloudEvent) => {
        const d = ev.data as Partial<PolicyApplied>;
        if (d.via === 'fleet' && d.group === group && d.sha256 === sha256) answer(ev, { state: 'applied', serial: d.serial ?? policy.serial });
      };
      const refused = (ev: CloudEvent) => {
        const d = ev.data as Partial<PolicyAudit>;
        if (d.action === 'fleet' && d.group === group && d.sha256 === sha256) answer(ev, { state: 'refused', code: d.code ?? 'SEALKIT_INTERNAL', reason: d.reason ?? '' });
      };
      // Three paths, the first to bring an answer wins: live, as each node
      // publishes it (while its leaf and the hub member it is on are up),
      // and the hub's streams, which source every node's and bring what the
      // live path missed (a hub member that died mid-push, a node that was
      // cut off) once the hub has it; and the node itself, asked (below).
      for (const [subject, on] of [[subjects.policy.applied, applied], [subjects.audit.policy, refused]] as const) {
        nc.subscribe(subject, {
          callback: (err, m) => {
            const ev = err ? null : eventOf(m);
            if (ev) on(ev);
          },
        });
      }
      const since = new Date(Date.now() - CLOCK_SLACK_MS);
      // every shard of the hub's streams: a group's nodes may be in any
      const [eventShards, auditShards] = await Promise.all([hubShards(nc, 'events', { deadline, onWait }), hubShards(nc, 'audit', { deadline, onWait })]);
      const reading = [
        ...eventShards.map((stream) => followHubStream(nc, stream, subjects.policy.applied, since, stop.signal, deadline, onWait, applied)),
        ...auditShards.map((stream) => followHubStream(nc, stream, subjects.audit.policy, since, stop.signal, deadline, onWait, refused)),
      ].map((p) => p.catch((err: Error) => {
        throw new SealkitError('SEALKIT_UNAVAILABLE', `cannot read the nodes' answers from the hub's streams: ${err.message}; has "sealkit hub config" set the hub up?`);
      }));
      // The third path, for a node still silent a while after the put: ask
      // the node's own JetStream domain, through its leaf, for the last
      // answer it stored. The hub's copy can be late or missing (its
      // sourcing of a node's stream may stall after a hub member dies, and a
      // push repeated with the same bytes makes no new answer): the node
      // has its answer, the hub's stream may not.
      void askNodes(nc, () => nodes.filter((n) => !answers.has(n)), stop.signal, applied, refused);
      await nc.flush();

      // A put retried after a lost answer writes the same bytes again; a
      // node decides each value once, by its sha256.
      const value = encodeFleetPolicy({ yaml, ...sig, pusher: (o.pusher as string | undefined) ?? process.env.USER ?? 'sealkit-cli' });
      try {
        await whileElecting(async () => {
          const kv = await nc.jetstream().views.kv(fleetBucket, { bindOnly: true });
          await kv.put(groupKey(group), value);
        }, deadline, onWait);
      } catch (err) {
        throw new SealkitError('SEALKIT_UNAVAILABLE', `cannot write group "${group}" to ${fleetBucket} on the hub: ${(err as Error).message}; do a majority of the hub's members run?`);
      }
      process.stderr.write(`fleet push serial ${policy.serial} (sha256 ${sha256.slice(0, 12)}…) to group ${group}: waiting for ${nodes.length} node(s) (timeout ${seconds(ms)})…\n`);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([all, new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now())))), Promise.all(reading).then(() => {})]);
      clearTimeout(timer);

      const width = Math.max(...nodes.map((n) => n.length));
      for (const n of nodes) {
        const a = answers.get(n);
        const line = !a ? 'no answer' : a.state === 'applied' ? `applied  serial ${a.serial}` : `refused  ${a.code}  ${a.reason}`;
        process.stdout.write(`${n.padEnd(width)}  ${line}\n`);
      }
      return nodes.every((n) => answers.get(n)?.state === 'applied') ? 0 : 1;
    } finally {
      stop.abort();
      await nc.close();
    }
  },
};

// Every ASK_EVERY_MS, each node in waiting() is asked for the last
// policy.applied and audit.policy in its own streams: a message get in its
// domain, through its leaf, answered on a subject under the node's answer
// prefix (the only replies its leaf may send; a reply to a plain inbox would
// not cross). An answer is checked like any other: by group, sha256 and the
// node's signature. A node that is away does not answer; asking it again
// costs one request.
async function askNodes(nc: NatsConnection, waiting: () => string[], signal: AbortSignal, applied: (ev: CloudEvent) => void, refused: (ev: CloudEvent) => void): Promise<void> {
  const ask = async (node: string, stream: string, subject: string, on: (ev: CloudEvent) => void) => {
    try {
      const m = await nc.request(`$JS.${node}.API.STREAM.MSG.GET.${stream}`, JSON.stringify({ last_by_subj: subject }), {
        timeout: ASK_TIMEOUT_MS,
        noMux: true,
        reply: `${answerPrefix(node)}.${nuid.next()}`,
      });
      const r = m.json<{ message?: { data?: string }; error?: unknown }>();
      if (r.message?.data) on(parseEvent(Buffer.from(r.message.data, 'base64')));
    } catch {
      // away, electing, or nothing stored yet: the other paths and the next round
    }
  };
  while (!signal.aborted) {
    await sleep(ASK_EVERY_MS, undefined, { signal }).catch(() => {});
    if (signal.aborted || nc.isClosed()) return;
    await Promise.all(waiting().flatMap((node) => [ask(node, streamNames.events, subjects.policy.applied, applied), ask(node, streamNames.audit, subjects.audit.policy, refused)]));
  }
}
