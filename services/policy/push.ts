import { SealkitError } from '../lib/errors.ts';
import { sha256Hex } from '../lib/digest.ts';
import { MAX_POLICY_BYTES, diffPolicy, parsePolicyYaml, type Policy, type PolicyChange, type SignedPolicy } from '../lib/policy.ts';
import { verifyDetached, type PublicKey } from '../lib/sign.ts';

export interface PushInput {
  yaml: Uint8Array;
  signature?: string;
  keyId?: string;
}

export interface Accepted {
  record: SignedPolicy;
  policy: Policy;
  changes: PolicyChange;
}

// Decide on a push. The order matters: size, then signature over the exact
// bytes, and only then is the YAML parsed, so unauthenticated input never
// reaches the YAML parser; the serial must then increase.
export function decidePush(input: PushInput, trust: PublicKey[], current: Policy | null, highwater: number, now = new Date()): Accepted {
  if (input.yaml.length === 0) {
    throw new SealkitError('SEALKIT_BAD_REQUEST', 'policy push carries no YAML; send the policy file as the message body');
  }
  if (input.yaml.length > MAX_POLICY_BYTES) {
    throw new SealkitError('SEALKIT_POLICY_TOO_LARGE', `policy is ${input.yaml.length} bytes; the limit is ${MAX_POLICY_BYTES}`, { size: input.yaml.length });
  }
  if (!input.signature || !input.keyId) {
    throw new SealkitError('SEALKIT_SIGNATURE_MISSING', 'policy push has no signature; sign it with "sealkit policy sign FILE --key KEY" and push with --sig');
  }
  const key = trust.find((k) => k.id === input.keyId);
  if (!key) {
    throw new SealkitError('SEALKIT_KEY_UNTRUSTED', `policy is signed by "${input.keyId}", which is not in this node's bootstrap trust [${trust.map((k) => k.id).join(', ')}]`, { keyId: input.keyId });
  }
  if (!verifyDetached('sealkit-policy-v1', input.yaml, input.signature, key)) {
    throw new SealkitError('SEALKIT_SIGNATURE_INVALID', `the signature by "${input.keyId}" does not match the pushed bytes; re-sign exactly the file you push`, { keyId: input.keyId });
  }
  const yaml = Buffer.from(input.yaml).toString('utf8');
  if (!Buffer.from(yaml, 'utf8').equals(Buffer.from(input.yaml))) {
    throw new SealkitError('SEALKIT_POLICY_YAML', 'policy is not UTF-8 text; save the file as UTF-8 and sign it again');
  }
  const policy = parsePolicyYaml(yaml);
  const floor = Math.max(highwater, current?.serial ?? 0);
  if (policy.serial <= floor) {
    throw new SealkitError('SEALKIT_POLICY_ROLLBACK', `policy serial ${policy.serial} is not above the serial in force (${floor}); replays and rollbacks are refused — raise "serial:" and sign again`, { serial: policy.serial, current: floor });
  }
  const record: SignedPolicy = {
    yaml,
    signature: input.signature,
    keyId: input.keyId,
    serial: policy.serial,
    sha256: sha256Hex(input.yaml),
    appliedAt: now.toISOString(),
  };
  return { record, policy, changes: diffPolicy(current, policy) };
}
