import { contract, specs, streamNames, verifyPrefix, type Stream } from './contract.ts';

// The subject strings of the bus contract (contract.ts), by the same path:
// subjects.image.verified is contract.image.verified.subject.

type Subjects<T> = { readonly [K in keyof T]: T[K] extends { subject: infer S } ? S : Subjects<T[K]> };

function subjectsOf<T extends object>(t: T): Subjects<T> {
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, 'subject' in v ? v.subject : subjectsOf(v)])) as Subjects<T>;
}

export const subjects = { ...subjectsOf(contract), verifyPrefix } as const;

// What each stream keeps. Audit events are kept by one wildcard, so that an
// audit subject of a plugin is kept too (two tokens, by design); the events
// stream names its subjects one by one.
function kept(stream: Stream): string[] {
  return specs.filter((s) => s.stream === stream).map((s) => s.subject);
}
export const streams = {
  audit: { name: streamNames.audit, subjects: ['audit.*'] },
  events: { name: streamNames.events, subjects: kept('events') },
} as const;

export { serviceNames, policyBucket, policyKey, type ServiceName } from './contract.ts';
