// Every subject sealkit uses. Audit subjects have exactly two tokens so that
// `nats sub 'audit.*'` sees all of them; node, container and image travel in
// the payload and in headers, never as extra tokens.

export const subjects = {
  audit: {
    denial: 'audit.denial',
    tamper: 'audit.tamper',
    rejected: 'audit.rejected',
    policy: 'audit.policy',
    lost: 'audit.lost',
    spoof: 'audit.spoof', // lines forged into /dev/kmsg by userspace that mimic kernel audit records
  },
  policy: {
    push: 'policy.push', // request
    get: 'policy.get', // request
    applied: 'policy.applied',
  },
  image: {
    fetch: 'image.fetch', // request
    progress: 'image.progress',
    verified: 'image.verified',
    rejected: 'image.rejected',
    imported: 'image.imported',
    importFailed: 'image.import_failed',
  },
  ima: {
    labeled: 'ima.labeled',
    labelFailed: 'ima.label_failed',
    enforcing: 'ima.enforcing',
    verify: 'ima.verify', // request
    status: 'ima.status', // request
  },
  node: {
    info: 'node.info',
    infoGet: 'node.info.get', // request
    heartbeat: 'node.heartbeat',
  },
  // every service answers a ping (request-many) with who it is
  ping: 'sealkit.ping',
  // verifier plugins answer on subjects under verify.> named by the policy
  verifyPrefix: 'verify.',
} as const;

// Events kept by JetStream. Request subjects are deliberately absent: a stream
// that captured a request subject would answer the requester with a PubAck.
export const streams = {
  audit: { name: 'SEALKIT_AUDIT', subjects: ['audit.*'] },
  events: {
    name: 'SEALKIT_EVENTS',
    subjects: [
      subjects.policy.applied,
      subjects.image.verified,
      subjects.image.rejected,
      subjects.image.imported,
      subjects.image.importFailed,
      subjects.ima.labeled,
      subjects.ima.labelFailed,
      subjects.ima.enforcing,
      subjects.node.info,
    ],
  },
} as const;

export const policyBucket = 'sealkit-policy';
export const policyKey = 'current';

export const serviceNames = ['policy', 'fetcher', 'importer', 'ima', 'auditor', 'nodeinfo'] as const;
export type ServiceName = (typeof serviceNames)[number];
