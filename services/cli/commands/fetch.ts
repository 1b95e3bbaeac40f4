import type { NatsConnection, Subscription } from 'nats';
import { request } from '../../lib/bus.ts';
import { parseEvent, type CloudEvent } from '../../lib/envelope.ts';
import { SealkitError, asSealkitError, codes as CODES, isSealkitError } from '../../lib/errors.ts';
import { parsePolicyYaml, type ImagePolicy, type Policy } from '../../lib/policy.ts';
import { subjects } from '../../lib/subjects.ts';
import { checkEvent, checkReply, contract, type EventSpec, type ImportedImage, type Labeled, type PayloadOf, type Progress, type VerifiedImage } from '../../lib/contract.ts';
import { bar } from '../format.ts';
import { busUsage, connect, one, seconds, timeoutMs, waiting, type Command } from './common.ts';

// The stages an image goes through on the node, and the events that end each:
//   fetcher   image.verified  | image.rejected: the image.fetch reply carries either
//   importer  image.imported  | image.import_failed (one per runtime)
//   ima       ima.labeled
// Events are matched by the image they are about (name and sha256), never
// by type alone: another image can be on its way at the same time.

export const fetch: Command = {
  name: 'fetch',
  summary: 'fetch, verify, import and label a policy image now, following it to the end',
  usage: `usage: sealkit fetch NAME [--json] [--timeout SEC]

Asks the node to fetch and verify the policy image NAME now (image.fetch),
then follows it through the node: verified (image.verified), imported into
the runtimes the policy names (image.imported), labelled (ima.labeled).
Stages the policy turns off are not waited for: no import target ends at
verified, ima.mode off ends at imported. Any refusal on the way
(image.rejected, image.import_failed, a timeout) is printed with its code
and reason, and the exit code is 1.

options:
  --json           print {verified, imported, labeled} as one JSON line
  --timeout SEC    for the whole follow (default 300)
  -h, --help       this help
${busUsage}`,
  options: { json: { type: 'boolean' }, timeout: { type: 'string' } },
  bus: true,
  async run(o, positionals) {
    const name = one(positionals, 'NAME', 'fetch');
    const ms = timeoutMs(o, 300, 'fetch');
    const deadline = Date.now() + ms;
    const left = () => Math.max(1, deadline - Date.now());
    const nc = await connect(o, true);
    const follow = new Follow(nc, name, !o.json && process.stderr.isTTY);
    try {
      await nc.flush(); // subscribed before asking, so no outcome is missed
      const policy = await currentPolicy(nc, left());
      const img = policy?.images.find((i) => i.name === name);
      const runtimes = img ? wantedRuntimes(img) : [];
      const labels = policy ? policy.ima.mode !== 'off' : true;

      waiting(`image.verified of ${name}${img ? ` sha256:${img.sha256.slice(0, 12)}…` : ''}`, left());
      let verified: VerifiedImage;
      try {
        verified = checkReply(contract.image.fetch, await request(nc, subjects.image.fetch, { name }, { timeout: left() })).image;
      } catch (err) {
        throw timeoutAs(err, `image.verified of ${name}`, ms);
      }
      follow.endProgress();
      const sha = verified.sha256;
      if (!o.json) process.stdout.write(`verified ${verified.name}:${verified.tag} sha256:${sha} (${verified.size} bytes)${verified.signedBy?.length ? `, signed by ${verified.signedBy.join(', ')}` : ''}\n`);
      const result: { verified: VerifiedImage; imported?: ImportedImage; labeled?: Labeled } = { verified };

      if (runtimes.length === 0) {
        if (!o.json) process.stdout.write(`not imported: policy serial ${policy?.serial} names no import target for ${name}\n`);
      } else {
        waiting(`image.imported of ${name} sha256:${sha.slice(0, 12)}… into ${runtimes.join(' and ')}`, left());
        result.imported = await follow.imported(sha, runtimes, left(), ms);
        if (!o.json) process.stdout.write(`imported into ${result.imported.targets.map((t) => `${t.runtime}${'namespace' in t && t.namespace ? ` (${t.namespace})` : ''} as ${t.ref}`).join(', ')}${result.imported.skipped ? ' (already present)' : ''}\n`);
        if (!labels) {
          if (!o.json) process.stdout.write(`not labelled: policy serial ${policy?.serial} has ima.mode off\n`);
        } else {
          waiting(`ima.labeled of ${name} sha256:${sha.slice(0, 12)}…`, left());
          result.labeled = await follow.labeled(sha, left(), ms);
          if (!o.json) process.stdout.write(`labelled ${result.labeled.files} files in ${result.labeled.rootfs} (container ${result.labeled.container})\n`);
        }
      }
      if (o.json) process.stdout.write(JSON.stringify(result) + '\n');
      return 0;
    } finally {
      follow.close();
      await nc.close();
    }
  },
};

export function wantedRuntimes(img: ImagePolicy): string[] {
  return [...(img.import.containerd ? ['containerd'] : []), ...(img.import.docker ? ['docker'] : [])];
}

// The policy in force decides which stages apply; without one the fetcher
// refuses anyway, with its own reason.
async function currentPolicy(nc: NatsConnection, ms: number): Promise<Policy | null> {
  try {
    const rec = checkReply(contract.policy.get, await request(nc, subjects.policy.get, {}, { timeout: Math.min(ms, 10_000) }));
    return parsePolicyYaml(rec.yaml);
  } catch (err) {
    const e = asSealkitError(err);
    if (e.code === 'SEALKIT_POLICY_NONE') return null;
    throw new SealkitError(e.code, `cannot read the policy in force to know what to follow: ${e.message}`);
  }
}

function timeoutAs(err: unknown, what: string, ms: number): SealkitError {
  const e = asSealkitError(err);
  if (e.code === 'SEALKIT_TIMEOUT') return new SealkitError('SEALKIT_TIMEOUT', `no ${what} within ${seconds(ms)}; raise --timeout for a large image, or look at the service's log`);
  return e;
}

// Events the follow reads, checked against the contract as they arrive.
const followed = [contract.image.progress, contract.image.imported, contract.image.importFailed, contract.ima.labeled, contract.ima.labelFailed];
const is = <S extends EventSpec>(ev: CloudEvent<unknown>, spec: S): ev is CloudEvent<PayloadOf<S>> => ev.type === spec.subject;

class Follow {
  private readonly events: CloudEvent<unknown>[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly subs: Subscription[];
  private barShown = false;
  private malformed?: SealkitError; // the last event that failed the contract: named if the follow times out

  constructor(nc: NatsConnection, private readonly name: string, private readonly showBar: boolean) {
    this.subs = followed.map((spec) =>
      nc.subscribe(spec.subject, {
        callback: (err, m) => {
          if (err) return;
          let ev: CloudEvent<unknown>;
          try {
            ev = checkEvent(spec, parseEvent(m.data));
          } catch (e) {
            if (isSealkitError(e)) this.malformed = e; // else not an event at all
            return;
          }
          if (is(ev, contract.image.progress)) return this.progress(ev.data);
          this.events.push(ev);
          for (const w of [...this.waiters]) w();
        },
      }),
    );
  }

  private progress(d: Progress): void {
    if (!this.showBar || d.name !== this.name) return;
    this.barShown = true;
    process.stderr.write(`\r${this.name} ${bar(d.bytes, d.total ?? undefined)} ${(d.rate / 1048576).toFixed(1)} MiB/s  `);
  }

  endProgress(): void {
    if (this.barShown) process.stderr.write('\n');
    this.barShown = false;
  }

  // Resolves with what `pick` returns for an event, or rejects with what it throws.
  private until<T>(pick: (ev: CloudEvent<unknown>) => T | undefined, ms: number, what: string, total: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = () => {
        try {
          for (const ev of this.events) {
            const v = pick(ev);
            if (v !== undefined) return done(() => resolve(v));
          }
        } catch (err) {
          done(() => reject(err));
        }
      };
      const timedOut = () => {
        const ignored = this.malformed ? `; an event was ignored: ${this.malformed.message}` : '';
        return new SealkitError('SEALKIT_TIMEOUT', `no ${what} within ${seconds(total)}; raise --timeout, or look at the log of the service that owns that step${ignored}`);
      };
      const timer = setTimeout(() => done(() => reject(timedOut())), ms);
      const done = (f: () => void) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        f();
      };
      this.waiters.add(check);
      check();
    });
  }

  imported(sha: string, runtimes: string[], ms: number, total: number): Promise<ImportedImage> {
    const mine = (d: { name: string; sha256: string }) => d.name === this.name && d.sha256 === sha;
    return this.until(
      (ev) => {
        if (is(ev, contract.image.importFailed) && mine(ev.data)) {
          const f = ev.data;
          throw new SealkitError(f.code in CODES ? f.code : 'SEALKIT_IMPORT_FAILED', `import of ${f.name}:${f.tag} into ${f.runtime} failed: ${f.reason}`, { code: f.code, runtime: f.runtime });
        }
        if (is(ev, contract.image.imported) && mine(ev.data)) {
          const d = ev.data;
          // a runtime missing from the targets has an import_failed of its own on the way
          if (runtimes.every((r) => d.targets.some((t) => t.runtime === r))) return d;
        }
        return undefined;
      },
      ms,
      `image.imported of ${this.name} sha256:${sha.slice(0, 12)}…`,
      total,
    );
  }

  labeled(sha: string, ms: number, total: number): Promise<Labeled> {
    const mine = (d: { image: { name: string; digest: string } }) => d.image.name === this.name && d.image.digest === sha;
    return this.until(
      (ev) => {
        if (is(ev, contract.ima.labelFailed) && mine(ev.data)) {
          const f = ev.data;
          throw new SealkitError(f.code in CODES ? f.code : 'SEALKIT_INTERNAL', `labelling ${this.name} failed: ${f.reason}`, { code: f.code });
        }
        return is(ev, contract.ima.labeled) && mine(ev.data) ? ev.data : undefined;
      },
      ms,
      `ima.labeled of ${this.name} sha256:${sha.slice(0, 12)}…`,
      total,
    );
  }

  close(): void {
    this.endProgress();
    for (const s of this.subs) s.unsubscribe();
    this.waiters.clear();
  }
}
