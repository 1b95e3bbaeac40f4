import type { NatsConnection } from 'nats';
import { busError, decode, encode } from '../lib/bus.ts';
import { SealkitError } from '../lib/errors.ts';
import type { VerifierPolicy } from '../lib/policy.ts';

// Verifier plugins answer over the bus: request on the subject the policy
// names, payload the OCI descriptor of what was resolved, reply
// {allow: boolean, reason?}. Fail closed: a deny, a timeout, a malformed reply
// or a required plugin that is not running blocks the image. An optional
// plugin that is absent or silent is noted and does not block.

export interface OciDescriptor {
  mediaType: string;
  digest: string; // sha256:…
  size: number;
  annotations: { name: string; tag: string; source: string };
}

export interface VerifierDecision {
  subject: string;
  decision: 'allow' | 'deny' | 'absent' | 'timeout';
  required: boolean;
  reason?: string;
}

export async function askVerifiers(nc: NatsConnection, verifiers: VerifierPolicy[], d: OciDescriptor, what: string): Promise<VerifierDecision[]> {
  const decisions = await Promise.all(verifiers.map((v) => askOne(nc, v, d)));
  for (const x of decisions) {
    if (x.decision === 'deny') {
      throw new SealkitError('SEALKIT_VERIFIER_DENIED', `${what}: verifier ${x.subject} denied ${d.digest}: ${x.reason ?? 'no reason given'}`, { verifiers: decisions });
    }
  }
  for (const x of decisions) {
    if (!x.required) continue;
    if (x.decision === 'timeout') {
      throw new SealkitError('SEALKIT_VERIFIER_TIMEOUT', `${what}: required verifier ${x.subject} did not answer in time; the image is blocked until it does`, { verifiers: decisions });
    }
    if (x.decision === 'absent') {
      throw new SealkitError('SEALKIT_VERIFIER_ABSENT', `${what}: required verifier ${x.subject} is not running (no responders); start the plugin or mark it required: false`, { verifiers: decisions });
    }
  }
  return decisions;
}

async function askOne(nc: NatsConnection, v: VerifierPolicy, d: OciDescriptor): Promise<VerifierDecision> {
  const base = { subject: v.subject, required: v.required };
  let reply: { allow?: unknown; reason?: unknown };
  try {
    const msg = await nc.request(v.subject, encode(d), { timeout: v.timeoutMs });
    reply = decode(msg.data, `reply of ${v.subject}`);
  } catch (err) {
    const e = err instanceof SealkitError ? err : busError(err, v.subject);
    if (e.code === 'SEALKIT_NO_RESPONDER') return { ...base, decision: 'absent', reason: 'no plugin answers on this subject' };
    if (e.code === 'SEALKIT_TIMEOUT') return { ...base, decision: 'timeout', reason: `no answer within ${v.timeoutMs} ms` };
    return { ...base, decision: 'deny', reason: `unusable reply: ${e.message}` };
  }
  if (typeof reply?.allow !== 'boolean') return { ...base, decision: 'deny', reason: 'malformed reply: expected {allow: boolean, reason?}' };
  const reason = typeof reply.reason === 'string' ? reply.reason.slice(0, 500) : undefined;
  return { ...base, decision: reply.allow ? 'allow' : 'deny', ...(reason ? { reason } : {}) };
}
