import type { ErrorObject } from 'ajv';
import { SealkitError } from './errors.ts';
import { matchesPolicySchema as validate } from './policy-validate.gen.ts';

// The policy's shape lives in policy.schema.json, the file editors validate
// policy YAML against; the node checks a document against the same file,
// through the validator ajv generates from it ahead of time (make schema:
// compiling it at every process start cost 0.15 s and 7 MB). This module
// turns the first error into the SEALKIT_POLICY_SCHEMA refusal an operator
// reads: the field's path as written in YAML ("images[0].sha256") and what
// to put there, in the words of the editor's hints (patternErrorMessage,
// errorMessage).

export function policySchemaError(path: string, message: string): SealkitError {
  return new SealkitError('SEALKIT_POLICY_SCHEMA', `policy${path ? ` ${path}` : ''}: ${message}`, { path });
}

export function checkPolicySchema(doc: unknown): void {
  if (validate(doc)) return;
  const e = reported(validate.errors ?? [], doc);
  throw policySchemaError(e.path, e.message);
}

interface Reported {
  path: string;
  message: string;
}

// Validation stops at the first failed check, except inside anyOf, where ajv
// lists each alternative's error and then the anyOf's: the error deepest in
// the document is the one the operator's value came closest to matching.
function reported(errors: ErrorObject[], doc: unknown): Reported {
  let best: Reported | undefined;
  let depth = -1;
  for (const e of errors) {
    const r = describe(e, doc);
    const d = r.path.split(/[.[]/).length;
    if (d >= depth) [best, depth] = [r, d];
  }
  return best ?? { path: '', message: 'does not match the schema' };
}

function describe(e: ErrorObject, doc: unknown): Reported {
  const at = yamlPath(e.instancePath, doc);
  const field = (name: string) => (at ? `${at}.${name}` : name);
  const parent = (e.parentSchema ?? {}) as Record<string, unknown>;
  const got = `got ${kind(e.data)}`;
  const hint = (e.keyword === 'pattern' ? parent.patternErrorMessage : undefined) ?? parent.errorMessage;
  const allowed = Object.keys((parent.properties ?? {}) as object);
  const unknown = (name: string) => ({ path: field(name), message: `unknown field; allowed here: ${allowed.join(', ')}` });
  switch (e.keyword) {
    case 'additionalProperties':
      return unknown(e.params.additionalProperty);
    case 'required': {
      // ajv checks required before unknown fields; a field that is missing
      // next to an unknown one is most often that one misspelt
      const misspelt = Object.keys(e.data as object).find((k) => !allowed.includes(k));
      return misspelt !== undefined ? unknown(misspelt) : { path: field(e.params.missingProperty), message: 'is required' };
    }
    case 'pattern':
      return { path: at, message: `"${e.data}" is not valid${hint ? `: ${hint}` : ''}` };
  }
  if (typeof hint === 'string') return { path: at, message: `${hint}, ${got}` };
  switch (e.keyword) {
    case 'type':
      return { path: at, message: `must be ${[e.params.type].flat().map(typeWords).join(' or ')}, ${got}` };
    case 'const':
      return { path: at, message: `must be ${JSON.stringify(e.params.allowedValue)}, ${got}` };
    case 'enum':
      return { path: at, message: `must be one of ${e.params.allowedValues.join(', ')}, ${got}` };
    case 'minimum':
    case 'maximum': {
      const { minimum: min, maximum: max } = parent;
      const range = min === undefined ? `at most ${max}` : max === undefined ? `at least ${min}` : `between ${min} and ${max}`;
      return { path: at, message: `must be ${range}, got ${e.data}` };
    }
    case 'minItems':
      return { path: at, message: e.params.limit === 1 ? 'must not be empty' : `must have at least ${e.params.limit} entries` };
    default:
      return { path: at, message: e.message ?? 'does not match the schema' };
  }
}

function typeWords(t: string): string {
  return ({ object: 'a mapping', array: 'a list', string: 'a string', integer: 'an integer', number: 'a number', boolean: 'true or false', null: 'null' } as Record<string, string>)[t] ?? t;
}

// "/images/0/tag" → "images[0].tag": a segment is an index where the value
// it is taken from is a list.
function yamlPath(pointer: string, doc: unknown): string {
  let path = '';
  let v = doc;
  for (const raw of pointer.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    path = Array.isArray(v) ? `${path}[${seg}]` : path ? `${path}.${seg}` : seg;
    v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[seg] : undefined;
  }
  return path;
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'a mapping' : `${typeof v} ${JSON.stringify(v)}`;
}
