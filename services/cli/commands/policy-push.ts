import { readFile } from 'node:fs/promises';
import { makeHeaders, request } from '../../lib/bus.ts';
import { SealkitError } from '../../lib/errors.ts';
import { readSecretKey, signDetached } from '../../lib/sign.ts';
import { parsePolicyYaml, type PolicyChange } from '../../lib/policy.ts';
import { checkReply, contract, writeHeaders } from '../../lib/contract.ts';
import { busUsage, connect, one, readInput, server, timeoutMs, waiting, type Command, type Values } from './common.ts';

export const policyPush: Command = {
  name: 'policy push',
  summary: 'push a signed policy to the node',
  usage: `usage: sealkit policy push FILE [--sig SIG | --key KEY] [--pusher NAME] [--json]

Sends the exact bytes of FILE on policy.push with its detached signature
(SIG, default FILE.sig, as "sealkit policy sign" or docs/signatures.md writes
it; or signed on the fly with --key). Checks the YAML locally first; the node
re-checks everything and answers with what changed, or refuses with a code.

options:
  --sig SIG        signature file {"keyId", "signature"} (default FILE.sig)
  --key KEY        sign with this .key file instead of reading SIG
  --pusher NAME    who pushes, recorded in policy.applied / audit.policy (default $USER)
  --json           print the node's reply as JSON
  --timeout SEC    how long to wait for the policy service's answer (default 10)
  -h, --help       this help
${busUsage}`,
  options: { sig: { type: 'string' }, key: { type: 'string' }, pusher: { type: 'string' }, json: { type: 'boolean' }, timeout: { type: 'string' } },
  bus: true,
  async run(o, positionals) {
    const file = one(positionals, 'FILE', 'policy push');
    const bytes = await readInput(file);
    const policy = parsePolicyYaml(bytes);
    const sig = await signatureOf(o, file, bytes);
    const ms = timeoutMs(o, 10, 'policy push');
    const nc = await connect(o, true);
    try {
      waiting(`the policy service to answer policy.push of serial ${policy.serial} on ${server(o)}`, ms);
      const push = contract.policy.push;
      const reply = checkReply(push, await request(nc, push.subject, bytes, {
        timeout: ms,
        headers: makeHeaders(writeHeaders(push, { signature: sig.signature, keyId: sig.keyId, pusher: (o.pusher as string | undefined) ?? process.env.USER ?? 'sealkit-cli' })),
      }));
      if (o.json) process.stdout.write(JSON.stringify(reply) + '\n');
      else process.stdout.write(`policy serial ${reply.serial} applied\n${describeChanges(reply.changes)}`);
    } finally {
      await nc.close();
    }
    return 0;
  },
};

// --key signs the exact bytes now; otherwise --sig (default FILE.sig) is
// the signature "sealkit policy sign" wrote.
export async function signatureOf(o: Values, file: string, bytes: Uint8Array): Promise<{ keyId: string; signature: string }> {
  if (o.key) {
    const key = await readSecretKey(o.key as string);
    return { keyId: key.id, signature: signDetached('sealkit-policy-v1', bytes, key) };
  }
  return readSig((o.sig as string | undefined) ?? `${file}.sig`);
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
  throw new SealkitError('SEALKIT_SIGNATURE_INVALID', `${file} is not a sealkit signature file ({"keyId", "signature"}, see docs/signatures.md); sign again with "sealkit policy sign"`);
}

function describeChanges(c: PolicyChange): string {
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
