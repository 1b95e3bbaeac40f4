import type { NatsConnection } from 'nats';
import { checkEvent, contract, type LogsReply } from '../../lib/contract.ts';
import { SealkitError, asSealkitError } from '../../lib/errors.ts';
import { askLogs, askPs } from '../runner.ts';
import { busUsage, connect, one, seconds, server, timeoutMs, type Command } from './common.ts';
import { eventOf } from './watch.ts';

const DEFAULT_BYTES = 64 * 1024;
// One reply carries at most this much: a reply must fit the bus's message
// size (nats-server's max_payload, 1 MiB by default) after JSON escaping.
const CHUNK = 256 * 1024;
// How often --follow asks for more once it has caught up: a person reading
// sees a line within half a second, and the runner answers two small
// requests a second.
const POLL_MS = 500;

export const logs: Command = {
  name: 'logs',
  summary: "a container's output (stdout and stderr); --follow for what comes next",
  usage: `usage: sealkit logs NAME [--follow] [--bytes N] [--timeout SEC]

Prints the end of the log the runner keeps for container NAME (its stdout and
stderr, in the order written). With --follow, keeps printing what the
container writes next, asking the runner every ${POLL_MS} ms, until Ctrl-C
(exit 0); it ends by itself, exit 0, when NAME is removed from the node, and
with exit 1 when the bus stays unreachable longer than --timeout. A log
truncated or rotated under --follow is printed again from its start, and
stderr says so. A workload's output is the operator's to read: this needs
the admin bus credentials.

options:
  -f, --follow     keep printing what the container writes next
  --bytes N        how much of the end of the log to print first (default ${DEFAULT_BYTES}; 0: none)
  --timeout SEC    how long to wait for each answer of the runner (default 5)
  -h, --help       this help
${busUsage}`,
  options: { follow: { type: 'boolean', short: 'f' }, bytes: { type: 'string' }, timeout: { type: 'string' } },
  bus: true,
  async run(o, positionals) {
    const name = one(positionals, 'container NAME', 'logs');
    const bytes = byteCount(o.bytes as string | undefined);
    const ms = timeoutMs(o, 5, 'logs');
    const url = server(o);
    // "sealkit logs web | head" closes the pipe early: that ends the command, it is not a failure
    process.stdout.on('error', (err: NodeJS.ErrnoException) => process.exit(err.code === 'EPIPE' ? 0 : 1));
    const nc = await connect(o, true);
    try {
      const log = new Reader(nc, name, ms, url);
      const next = await log.tail(bytes);
      return o.follow ? await follow(nc, log, next, ms, url) : 0;
    } finally {
      if (!nc.isClosed()) await nc.close();
    }
  },
};

function byteCount(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_BYTES;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n)) throw new SealkitError('SEALKIT_BAD_REQUEST', `logs: --bytes "${raw}" is not a number of bytes; e.g. --bytes 1048576 for the last MiB`);
  return n;
}

// Reads byte ranges of one container's log from the runner and prints them.
class Reader {
  constructor(
    private readonly nc: NatsConnection,
    readonly name: string,
    private readonly ms: number,
    private readonly url: string,
  ) {}

  // The last `bytes` of the log as it is now; returns where it ended.
  async tail(bytes: number): Promise<number> {
    let reply = await this.ask({ max: Math.min(bytes, CHUNK) });
    if (bytes > CHUNK && reply.from > 0) reply = await this.ask({ from: Math.max(0, reply.size - bytes), max: CHUNK });
    write(reply.data);
    // what was written while this read is the follower's, not the tail's
    return this.until(reply.next, reply.size);
  }

  // Everything from `from` up to at least `end`; returns where it ended.
  async until(from: number, end: number): Promise<number> {
    let at = from;
    while (at < end) {
      const reply = await this.ask({ from: at, max: CHUNK });
      write(reply.data);
      if (reply.next <= at) break; // the runner has no more to give (yet)
      at = reply.next;
    }
    return at;
  }

  ask(range: { from?: number; max: number }): Promise<LogsReply> {
    return askLogs(this.nc, { name: this.name, ...range }, this.ms, this.url);
  }
}

const write = (data: string) => {
  if (data) process.stdout.write(data);
};

const say = (line: string) => process.stderr.write(`sealkit: ${line}\n`);

interface End {
  code: number;
  error?: SealkitError;
}

// Asks from `next` until stopped: Ctrl-C or SIGTERM, the container's removal,
// or the bus lost for longer than a request may take.
async function follow(nc: NatsConnection, log: Reader, start: number, ms: number, url: string): Promise<number> {
  let next = start;
  // set from callbacks (signals, the bus, the removal event), read by the loop
  const ended: { end: End | null; removed: string | null } = { end: null, removed: null };
  let wake = () => {};
  const finish = (e: End) => {
    ended.end ??= e;
    wake();
  };
  // a request in flight is abandoned, not waited for
  const onSignal = () => {
    finish({ code: 0 });
    void nc.close();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  // the runner announces a removal: what was still written is printed, then it ends
  const stopped = contract.container.stopped;
  nc.subscribe(stopped.subject, {
    callback: (err, m) => {
      const ev = err ? null : eventOf(m);
      if (!ev) return;
      try {
        const data = checkEvent(stopped, ev).data;
        if (data.name === log.name && data.reason === 'removed') {
          ended.removed = data.detail || 'removed from the policy';
          wake();
        }
      } catch {
        // a malformed event is the auditor's business, not the follower's
      }
    },
  });
  watchBus(nc, ms, url, log.name, finish);
  await nc.flush();
  process.stderr.write(`following ${log.name} from byte ${next} on ${url}; Ctrl-C stops\n`);

  let runnerAway = false;
  while (!ended.end) {
    if (ended.removed) {
      await log.until(next, Number.MAX_SAFE_INTEGER).catch(() => next);
      say(`${log.name} was removed from the node (${ended.removed}); stopped following`);
      return 0;
    }
    let caughtUp = false;
    try {
      const reply = await log.ask({ from: next, max: CHUNK });
      if (runnerAway) say(`the runner answers again; following ${log.name}`);
      runnerAway = false;
      if (reply.size < next || reply.from < next) {
        say(`the log of ${log.name} was truncated or rotated (it has ${reply.size} bytes, ${next} were printed); printing it from its start`);
        next = 0;
        if (reply.from !== 0) continue;
      }
      write(reply.data);
      next = reply.next;
      caughtUp = reply.next >= reply.size;
    } catch (err) {
      if (ended.end) break;
      const e = asSealkitError(err);
      if (e.code === 'SEALKIT_NO_RESPONDER' || e.code === 'SEALKIT_TIMEOUT') {
        // a runner restarted by the node's supervisor comes back on its own
        if (!runnerAway) say(`${e.message}; still following ${log.name}, Ctrl-C stops`);
        runnerAway = true;
        caughtUp = true;
      } else if (!(await listed(nc, log.name, ms, url))) {
        say(`${log.name} is no longer on the node (removed from the policy); stopped following`);
        return 0;
      } else throw e;
    }
    if (caughtUp && !ended.end && !ended.removed) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, POLL_MS);
      });
    }
  }
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  if (ended.end?.error) throw ended.end.error;
  return ended.end?.code ?? 0;
}

async function listed(nc: NatsConnection, name: string, ms: number, url: string): Promise<boolean> {
  try {
    return (await askPs(nc, ms, url)).some((c) => c.name === name);
  } catch {
    return true; // cannot tell: the logs error stands
  }
}

// The connection reconnects for ever; a follower gives up when the bus stays
// away longer than a request may take, or is closed.
function watchBus(nc: NatsConnection, ms: number, url: string, name: string, finish: (e: { code: number; error: SealkitError }) => void): void {
  let gone: NodeJS.Timeout | undefined;
  const lost = (why: string) => finish({ code: 1, error: new SealkitError('SEALKIT_UNAVAILABLE', `${why}; stopped following ${name} (run "sealkit logs ${name} --follow" again once the node is up)`) });
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' && !gone) gone = setTimeout(() => lost(`lost the bus at ${url} and it did not come back within ${seconds(ms)}`), ms);
      if (s.type === 'reconnect') {
        clearTimeout(gone);
        gone = undefined;
      }
    }
  })();
  void nc.closed().then((err) => {
    clearTimeout(gone);
    lost(`the bus at ${url} closed the connection${err ? `: ${err.message}` : ''}`);
  });
}
