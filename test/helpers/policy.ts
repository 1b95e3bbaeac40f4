import { join } from 'node:path';
import { writeFile, mkdir } from 'node:fs/promises';
import YAML from 'yaml';
import type { NatsConnection } from 'nats';
import { generateKey, signDetached, type SecretKeyFile } from '../../services/lib/sign.ts';
import { sha256Hex } from '../../services/lib/digest.ts';
import { makeEvent } from '../../services/lib/envelope.ts';
import { encode, makeHeaders, request } from '../../services/lib/bus.ts';
import { policyBucket, policyKey, subjects } from '../../services/lib/subjects.ts';
import type { SignedPolicy } from '../../services/lib/policy.ts';

// An operator in a test: an admin key in the node's bootstrap trust, and
// signed policies delivered either through the real policy service
// (pushPolicy) or straight into the KV bucket when that service is not the
// subject of the test (putPolicy).

export interface Admin {
  key: SecretKeyFile;
  trustPath: string;
}

export async function makeAdmin(stateDir: string, id = 'admin'): Promise<Admin> {
  const key = generateKey(id);
  await mkdir(stateDir, { recursive: true });
  const trustPath = join(stateDir, 'trust.yaml');
  await writeFile(trustPath, YAML.stringify({ keys: [{ id: key.id, ed25519: key.ed25519 }] }));
  return { key, trustPath };
}

export function policyYaml(doc: Record<string, unknown>): string {
  return YAML.stringify({ apiVersion: 'sealkit/v1', kind: 'NodePolicy', ...doc });
}

export function signPolicy(yaml: string | Uint8Array, key: SecretKeyFile): { keyId: string; signature: string } {
  const bytes = typeof yaml === 'string' ? Buffer.from(yaml) : yaml;
  return { keyId: key.id, signature: signDetached('sealkit-policy-v1', bytes, key) };
}

// Through the policy service, as `sealkit policy push` does.
export async function pushPolicy(nc: NatsConnection, yaml: string | Uint8Array, key: SecretKeyFile | null, sig = key ? signPolicy(yaml, key) : undefined) {
  const bytes = typeof yaml === 'string' ? Buffer.from(yaml) : yaml;
  return request<{ serial: number; sha256: string; changes: Record<string, unknown> }>(nc, subjects.policy.push, bytes, {
    timeout: 10_000,
    headers: makeHeaders({ 'Sealkit-Signature': sig?.signature, 'Sealkit-Key-Id': sig?.keyId, 'Sealkit-Pusher': 'test' }),
  });
}

// Straight into the KV bucket with the admin user, then policy.applied, the
// way the policy service publishes an accepted push.
export async function putPolicy(adminNc: NatsConnection, yaml: string, key: SecretKeyFile): Promise<SignedPolicy> {
  const serial = (YAML.parse(yaml) as { serial: number }).serial;
  const rec: SignedPolicy = {
    yaml,
    ...signPolicy(yaml, key),
    serial,
    sha256: sha256Hex(yaml),
    appliedAt: new Date().toISOString(),
  };
  const kv = await adminNc.jetstream().views.kv(policyBucket);
  await kv.put(policyKey, encode(rec));
  await adminNc.jetstream().publish(subjects.policy.applied, encode(makeEvent('policy', subjects.policy.applied, { serial, sha256: rec.sha256 })));
  return rec;
}
