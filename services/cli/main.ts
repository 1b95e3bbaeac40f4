import { parseArgs } from 'node:util';
import { readFile, writeFile, mkdir, access } from 'node:fs/promises';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { connectBus, request, makeHeaders, pingAll } from '../lib/bus.ts';
import { SealkitError, asSealkitError } from '../lib/errors.ts';
import { generateKey, writeKeyFiles, readSecretKey, signDetached, signImage, type SignatureFile } from '../lib/sign.ts';
import { sha256File } from '../lib/digest.ts';
import { parsePolicyYaml } from '../lib/policy.ts';
import { parseEvent } from '../lib/envelope.ts';
import { stateDir, credsPath, natsUrl } from '../lib/config.ts';
import { generateCreds, writeCreds, serverConfig, readCreds } from '../lib/natsconf.ts';
import { ensureStreams, replayStream } from '../lib/streams.ts';
import { subjects, streams } from '../lib/subjects.ts';
import { prettyEvent, bar } from './format.ts';

const PUSH_HEADERS = { signature: 'Sealkit-Signature', keyId: 'Sealkit-Key-Id', pusher: 'Sealkit-Pusher' };

const usage = `sealkit — drive a sealkit node over its bus

usage: sealkit <command> [options]

commands:
  keygen [--id ID] [--out BASE]       create an ed25519 key pair (BASE.key, BASE.pub);
                                      prints the public key for the trust file
  policy sign FILE --key KEY [--out SIG]
                                      sign a policy YAML file (detached signature)
  policy push FILE [--sig SIG | --key KEY]
                                      push a signed policy to the node
  policy show [--yaml]                show the policy in force
  fetch NAME [--json]                 fetch and verify an image named by the policy now,
                                      with a progress bar
  sign-image FILE --name N --tag T --key KEY [--out SIG]
                                      sign an image archive for images[].signatures
  status                              node info, live services, policy serial
  watch SUBJECT [--json] [--replay]   print events like "nats sub" ('audit.*', 'image.*', '>')
  bus config [--state DIR] [--port N] write bus credentials and nats-server.conf (once)
  bus init                            create the JetStream streams and policy bucket

common options:
  --server URL     the node's bus (default $SEALKIT_NATS_URL or nats://127.0.0.1:4222)
  --creds FILE     bus credentials (default <state>/bus/creds/admin.json; read-only
                   commands fall back to anonymous access)
  -h, --help       help for any command
`;

const help: Record<string, string> = {
  keygen: 'sealkit keygen [--id ID] [--out BASE]\n  Writes BASE.key (secret, mode 0600) and BASE.pub. Defaults: --id admin, --out <state>/keys/<id>.\n  Add the printed "- id: …, ed25519: …" entry to the node\'s trust file (bootstrap trust).\n',
  'policy sign': 'sealkit policy sign FILE --key KEY [--out SIG]\n  Signs the exact bytes of FILE with the secret key KEY; writes FILE.sig (JSON {keyId, signature}).\n',
  'policy push': 'sealkit policy push FILE [--sig SIG | --key KEY] [--pusher NAME]\n  Sends FILE with its detached signature (FILE.sig by default, or signs with --key on the fly).\n  Checks the YAML locally first; the node re-checks everything and answers with what changed.\n',
  'policy show': 'sealkit policy show [--yaml]\n  Prints the serial, signer and summary of the policy in force; --yaml prints the document.\n',
  fetch: 'sealkit fetch NAME [--json] [--timeout SECONDS]\n  Asks the node to fetch and verify the policy image NAME now; shows progress; prints the verified digest\n  or the reason it was rejected (exit 1).\n',
  'sign-image': 'sealkit sign-image FILE --name NAME --tag TAG --key KEY [--out SIG]\n  Signs the archive FILE (its SHA-256 and size) as NAME:TAG with the secret key KEY. Writes or adds to SIG\n  (default FILE.sig, served next to the archive so the node finds it at <source>.sig).\n',
  status: 'sealkit status [--json]\n  Node information, the services answering on the bus, and the policy serial.\n',
  watch: "sealkit watch SUBJECT [--json] [--replay]\n  Prints events as they arrive. SUBJECT is a NATS subject with wildcards: 'audit.*', 'image.*', '>'.\n  --json prints each CloudEvent as one JSON line; --replay first prints what the node's streams kept.\n",
  'bus config': 'sealkit bus config [--state DIR] [--port N] [--force]\n  Writes <state>/bus/creds/<user>.json for every bus user and <state>/bus/nats-server.conf.\n  Existing credentials are kept unless --force.\n',
  'bus init': 'sealkit bus init\n  Creates or updates the JetStream streams and the policy KV bucket (admin credentials).\n',
};

async function main(argv: string[]): Promise<number> {
  const [cmd, sub] = argv;
  if (!cmd || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    process.stdout.write(usage);
    return 0;
  }
  const twoWord = ['policy', 'bus'].includes(cmd);
  const name = twoWord ? `${cmd} ${sub ?? ''}`.trim() : cmd;
  const rest = argv.slice(twoWord ? 2 : 1);
  const { values: o, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      server: { type: 'string' },
      creds: { type: 'string' },
      id: { type: 'string' },
      out: { type: 'string' },
      key: { type: 'string' },
      sig: { type: 'string' },
      pusher: { type: 'string' },
      json: { type: 'boolean' },
      yaml: { type: 'boolean' },
      replay: { type: 'boolean' },
      state: { type: 'string' },
      port: { type: 'string' },
      force: { type: 'boolean' },
      name: { type: 'string' },
      tag: { type: 'string' },
      timeout: { type: 'string' },
    },
  });
  if (o.help) {
    const h = help[name];
    if (!h) throw new SealkitError('SEALKIT_BAD_REQUEST', `unknown command "${name}"; run "sealkit --help"`);
    process.stdout.write(h);
    return 0;
  }
  if (o.state) process.env.SEALKIT_STATE = o.state;
  const server = o.server ?? natsUrl();

  switch (name) {
    case 'keygen': {
      const id = o.id ?? 'admin';
      const base = o.out ?? join(stateDir(), 'keys', id);
      if (await exists(`${base}.key`)) {
        throw new SealkitError('SEALKIT_BAD_REQUEST', `${base}.key exists; choose another --out or remove it first (keys are never overwritten)`);
      }
      const key = generateKey(id);
      const { secretPath, publicPath } = await writeKeyFiles(key, base);
      process.stdout.write(`secret key: ${secretPath} (keep it off the node)\npublic key: ${publicPath}\ntrust entry:\n  - id: ${key.id}\n    ed25519: ${key.ed25519}\n`);
      return 0;
    }
    case 'policy sign': {
      const file = one(positionals, 'FILE', name);
      if (!o.key) throw new SealkitError('SEALKIT_BAD_REQUEST', 'policy sign needs --key KEY (a .key file from "sealkit keygen")');
      const bytes = await readInput(file);
      parsePolicyYaml(bytes); // refuse to sign something the node would refuse
      const key = await readSecretKey(o.key);
      const out = o.sig ?? o.out ?? `${file}.sig`;
      await writeFile(out, JSON.stringify({ keyId: key.id, signature: signDetached('sealkit-policy-v1', bytes, key) }) + '\n');
      process.stdout.write(`signed ${file} with ${key.id}: ${out}\n`);
      return 0;
    }
    case 'policy push': {
      const file = one(positionals, 'FILE', name);
      const bytes = await readInput(file);
      const policy = parsePolicyYaml(bytes);
      let sig: { keyId: string; signature: string };
      if (o.key) {
        const key = await readSecretKey(o.key);
        sig = { keyId: key.id, signature: signDetached('sealkit-policy-v1', bytes, key) };
      } else {
        const sigFile = o.sig ?? `${file}.sig`;
        sig = await readSig(sigFile);
      }
      const nc = await connect(server, o.creds, true);
      try {
        const reply = await request<{ serial: number; changes: Record<string, unknown> }>(nc, subjects.policy.push, bytes, {
          timeout: 10_000,
          headers: makeHeaders({ [PUSH_HEADERS.signature]: sig.signature, [PUSH_HEADERS.keyId]: sig.keyId, [PUSH_HEADERS.pusher]: o.pusher ?? process.env.USER ?? 'sealkit-cli' }),
        });
        if (o.json) process.stdout.write(JSON.stringify(reply) + '\n');
        else process.stdout.write(`policy serial ${policy.serial} applied\n${describeChanges(reply.changes)}`);
      } finally {
        await nc.close();
      }
      return 0;
    }
    case 'policy show': {
      const nc = await connect(server, o.creds, false);
      try {
        const rec = await request<{ serial: number; keyId: string; appliedAt: string; sha256: string; yaml: string; summary: Record<string, unknown> }>(nc, subjects.policy.get, {}, { timeout: 5000 });
        if (o.yaml) process.stdout.write(rec.yaml);
        else if (o.json) process.stdout.write(JSON.stringify(rec) + '\n');
        else process.stdout.write(`serial ${rec.serial}, signed by ${rec.keyId}, applied ${rec.appliedAt}, sha256 ${rec.sha256}\n${JSON.stringify(rec.summary, null, 2)}\n`);
      } finally {
        await nc.close();
      }
      return 0;
    }
    case 'fetch': {
      const image = one(positionals, 'NAME', name);
      const nc = await connect(server, o.creds, true);
      const showBar = !o.json && process.stderr.isTTY;
      const progress = nc.subscribe(subjects.image.progress, {
        callback: (_e, m) => {
          if (!showBar) return;
          try {
            const d = parseEvent(m.data).data as { name: string; bytes: number; total: number | null; rate: number };
            if (d.name === image) process.stderr.write(`\r${image} ${bar(d.bytes, d.total ?? undefined)} ${(d.rate / 1048576).toFixed(1)} MiB/s  `);
          } catch {
            // not an event
          }
        },
      });
      try {
        const reply = await request<{ image: Record<string, unknown> }>(nc, subjects.image.fetch, { name: image }, { timeout: Number(o.timeout ?? 3600) * 1000 });
        if (showBar) process.stderr.write('\n');
        if (o.json) process.stdout.write(JSON.stringify(reply.image) + '\n');
        else {
          const i = reply.image as { name: string; tag: string; sha256: string; size: number; archive?: { path: string }; signedBy?: string[] };
          process.stdout.write(`verified ${i.name}:${i.tag} sha256:${i.sha256} (${i.size} bytes)${i.signedBy?.length ? `, signed by ${i.signedBy.join(', ')}` : ''}\n`);
        }
      } finally {
        progress.unsubscribe();
        await nc.close();
      }
      return 0;
    }
    case 'sign-image': {
      const file = one(positionals, 'FILE', name);
      if (!o.name || !o.tag || !o.key) throw new SealkitError('SEALKIT_BAD_REQUEST', 'sign-image needs --name, --tag and --key; see "sealkit sign-image --help"');
      const key = await readSecretKey(o.key);
      const { sha256, size } = await sha256File(file).catch((err) => {
        throw new SealkitError('SEALKIT_BAD_REQUEST', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      });
      const out = o.out ?? `${file}.sig`;
      let existing: SignatureFile | undefined;
      if (await exists(out)) existing = JSON.parse(await readFile(out, 'utf8')) as SignatureFile;
      const signed = signImage({ name: o.name, tag: o.tag, sha256, size }, [key], existing);
      await writeFile(out, JSON.stringify(signed, null, 2) + '\n');
      process.stdout.write(`signed ${o.name}:${o.tag} sha256:${sha256} (${size} bytes) with ${key.id}: ${out} (${signed.signatures.length} signature(s))\n`);
      return 0;
    }
    case 'status': {
      const nc = await connect(server, o.creds, false);
      try {
        const [info, alive, policy] = await Promise.all([
          request<Record<string, unknown>>(nc, subjects.node.infoGet, {}, { timeout: 5000 }).catch((e) => ({ error: asSealkitError(e).toWire() })),
          pingAll(nc, 500),
          request<{ serial: number; keyId: string }>(nc, subjects.policy.get, {}, { timeout: 3000 }).catch((e) => ({ error: asSealkitError(e).toWire() })),
        ]);
        if (o.json) {
          process.stdout.write(JSON.stringify({ node: info, services: alive, policy }) + '\n');
          return 0;
        }
        const n = info as { node?: string; os?: { distro?: string; kernel?: string }; ima?: Record<string, unknown>; error?: { message: string } };
        process.stdout.write(n.error ? `node: ${n.error.message}\n` : `node: ${n.node} (${n.os?.distro}, kernel ${n.os?.kernel})\nima: ${JSON.stringify(n.ima)}\n`);
        process.stdout.write(`services: ${alive.length ? alive.map((s) => `${s.service}(pid ${s.pid}, up ${s.uptimeSec}s)`).join(' ') : 'none answering'}\n`);
        const p = policy as { serial?: number; keyId?: string; error?: { message: string } };
        process.stdout.write(p.error ? `policy: ${p.error.message}\n` : `policy: serial ${p.serial} signed by ${p.keyId}\n`);
      } finally {
        await nc.close();
      }
      return 0;
    }
    case 'watch': {
      const subject = one(positionals, 'SUBJECT', name);
      const nc = await connect(server, o.creds, false);
      const print = (data: Uint8Array) => {
        try {
          const ev = parseEvent(data);
          process.stdout.write((o.json ? JSON.stringify(ev) : prettyEvent(ev, process.stdout.isTTY)) + '\n');
        } catch {
          process.stdout.write(`${Buffer.from(data).toString('utf8')}\n`);
        }
      };
      // Ctrl-C may land in the middle of --replay: closing the connection
      // then fails the replay, which is the user's doing, not an error.
      let stopping = false;
      const stop = () => {
        stopping = true;
        setTimeout(() => process.exit(0), 2000).unref();
        void nc.close().finally(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      const seen = new Set<string>();
      try {
        if (o.replay) await replay(nc, subject, (d) => print(d), seen, () => stopping);
        if (stopping) return 0;
        const sub = nc.subscribe(subject);
        for await (const m of sub) {
          const id = m.headers?.get('Nats-Msg-Id');
          if (id && seen.has(id)) continue;
          print(m.data);
        }
      } catch (err) {
        if (!stopping) throw err;
      }
      return 0;
    }
    case 'bus config': {
      const state = stateDir();
      const dir = join(state, 'bus');
      let creds = generateCreds();
      if (!o.force && (await exists(join(dir, 'creds', 'admin.json')))) {
        const kept: typeof creds = {};
        for (const user of Object.keys(creds)) {
          kept[user] = (await exists(join(dir, 'creds', `${user}.json`))) ? await readCreds(join(dir, 'creds', `${user}.json`)) : creds[user];
        }
        creds = kept;
      }
      await writeCreds(join(dir, 'creds'), creds);
      const conf = serverConfig({ creds, storeDir: join(dir, 'jetstream'), port: o.port ? Number(o.port) : 4222 });
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'nats-server.conf'), conf, { mode: 0o600 });
      process.stdout.write(`bus credentials: ${join(dir, 'creds')}\nnats-server config: ${join(dir, 'nats-server.conf')}\n`);
      return 0;
    }
    case 'bus init': {
      const nc = await connect(server, o.creds, true);
      try {
        await ensureStreams(nc);
      } finally {
        await nc.close();
      }
      process.stdout.write(`streams ${streams.audit.name}, ${streams.events.name} and the policy bucket are ready on ${server}\n`);
      return 0;
    }
    default:
      throw new SealkitError('SEALKIT_BAD_REQUEST', `unknown command "${name}"; run "sealkit --help"`);
  }
}

async function connect(server: string, creds: string | undefined, needAdmin: boolean): Promise<NatsConnection> {
  const file = creds ?? credsPath('admin');
  const haveCreds = await exists(file);
  if (needAdmin && !haveCreds) {
    throw new SealkitError('SEALKIT_CONFIG', `this command needs the admin bus credentials; none at ${file} (pass --creds FILE, or run "sealkit bus config")`);
  }
  try {
    return await connectBus({ name: 'sealkit-cli', servers: server, ...(haveCreds ? { user: 'admin', credsFile: file } : {}), waitOnFirstConnect: false });
  } catch (err) {
    throw new SealkitError('SEALKIT_UNAVAILABLE', `cannot reach the bus at ${server}: ${(err as Error).message}; is the node up (make dev / make run)?`);
  }
}

// Print what the streams kept for SUBJECT, oldest first, before live events.
async function replay(nc: NatsConnection, subject: string, print: (d: Uint8Array) => void, seen: Set<string>, stopping: () => boolean): Promise<void> {
  const names = subject.startsWith('audit.') ? [streams.audit.name] : subject === '>' ? [streams.audit.name, streams.events.name] : [streams.events.name];
  for (const stream of names) {
    if (stopping()) return;
    try {
      await replayStream(nc, stream, subject, (data, id) => {
        if (id) seen.add(id);
        print(data);
      });
    } catch (err) {
      if (stopping()) return;
      process.stderr.write(`replay of ${stream} unavailable: ${(err as Error).message}\n`);
    }
  }
}

function describeChanges(c: Record<string, unknown>): string {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(c ?? {})) {
    if (k === 'serial') continue;
    const parts = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => (Array.isArray(x) ? x.length > 0 : x !== null))
      .map(([kk, x]) => `${kk}: ${Array.isArray(x) ? x.join(', ') : x}`);
    if (parts.length) lines.push(`  ${k}: ${parts.join('; ')}`);
  }
  return lines.length ? lines.join('\n') + '\n' : '  (no changes besides the serial)\n';
}

function one(positionals: string[], what: string, cmd: string): string {
  if (positionals.length !== 1) throw new SealkitError('SEALKIT_BAD_REQUEST', `${cmd} takes one ${what}; see "sealkit ${cmd} --help"`);
  return positionals[0];
}

async function readInput(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

async function readSig(file: string): Promise<{ keyId: string; signature: string }> {
  let raw: string;
  try {
    raw = await readFile(file, 'utf8');
  } catch {
    throw new SealkitError('SEALKIT_SIGNATURE_MISSING', `no signature file ${file}; create it with "sealkit policy sign FILE --key KEY", or pass --key`);
  }
  try {
    const s = JSON.parse(raw) as { keyId?: unknown; signature?: unknown };
    if (typeof s.keyId === 'string' && typeof s.signature === 'string') return { keyId: s.keyId, signature: s.signature };
  } catch {
    // fall through
  }
  throw new SealkitError('SEALKIT_SIGNATURE_INVALID', `${file} is not a sealkit signature file ({keyId, signature}); sign again with "sealkit policy sign"`);
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}


main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    const e = asSealkitError(err);
    const code = (err as { code?: string }).code;
    // parseArgs errors carry Node's own codes; they are usage errors
    const msg = code?.startsWith('ERR_PARSE_ARGS') ? `${(err as Error).message}; run "sealkit --help"` : e.message;
    process.stderr.write(`sealkit: ${msg}${e.code !== 'SEALKIT_INTERNAL' ? ` [${e.code}]` : ''}\n`);
    process.exit(code?.startsWith('ERR_PARSE_ARGS') || e.code === 'SEALKIT_BAD_REQUEST' ? 2 : 1);
  },
);
