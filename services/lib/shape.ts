// Checks for what arrives off the bus: each returns the value it was given,
// now typed, or throws a ShapeError naming the field (`data.archive.sha256`)
// and what is wrong with it. The bus contract (contract.ts) wraps that into
// a SealkitError naming the subject as well.

export type Check<T> = (value: unknown, at: string) => T;

export class ShapeError extends Error {
  constructor(
    readonly at: string,
    readonly problem: string,
  ) {
    super(`${at} ${problem}`);
    this.name = 'ShapeError';
  }
}

export function fail(at: string, problem: string): never {
  throw new ShapeError(at, problem);
}

function shown(v: unknown): string {
  if (v === undefined) return 'missing';
  const s = JSON.stringify(v) ?? String(v);
  return `${Array.isArray(v) ? 'a list' : v === null ? 'null' : typeof v} ${s.length > 60 ? `${s.slice(0, 57)}…` : s}`;
}

export const string: Check<string> = (v, at) => (typeof v === 'string' ? v : fail(at, `must be a string, is ${shown(v)}`));

export const number: Check<number> = (v, at) => (typeof v === 'number' && Number.isFinite(v) ? v : fail(at, `must be a number, is ${shown(v)}`));

export const count: Check<number> = (v, at) => (Number.isSafeInteger(v) && (v as number) >= 0 ? (v as number) : fail(at, `must be a whole number ≥ 0, is ${shown(v)}`));

export const boolean: Check<boolean> = (v, at) => (typeof v === 'boolean' ? v : fail(at, `must be true or false, is ${shown(v)}`));

export function matching(re: RegExp, what: string): Check<string> {
  return (v, at) => (typeof v === 'string' && re.test(v) ? v : fail(at, `must be ${what}, is ${shown(v)}`));
}

export function oneOf<const T extends readonly (string | number)[]>(...values: T): Check<T[number]> {
  return (v, at) => (values.includes(v as T[number]) ? (v as T[number]) : fail(at, `must be one of ${values.join(', ')}; is ${shown(v)}`));
}

export function nullable<T>(check: Check<T>): Check<T | null> {
  return (v, at) => (v === null ? null : check(v, at));
}

export function list<T>(check: Check<T>): Check<T[]> {
  return (v, at) => {
    if (!Array.isArray(v)) fail(at, `must be a list, is ${shown(v)}`);
    v.forEach((x, i) => check(x, `${at}[${i}]`));
    return v as T[];
  };
}

// A field that may be absent; present, it must pass `check`.
export interface Optional<T> {
  optional: Check<T>;
}
export function optional<T>(check: Check<T>): Optional<T> {
  return { optional: check };
}

type Field = Check<unknown> | Optional<unknown>;
type Present<S> = { [K in keyof S as S[K] extends Optional<unknown> ? never : K]: S[K] extends Check<infer T> ? T : never };
type Maybe<S> = { [K in keyof S as S[K] extends Optional<unknown> ? K : never]?: S[K] extends Optional<infer T> ? T : never };
export type Shape<S> = Present<S> & Maybe<S>;

// An object with these fields; fields not named are let through, so a newer
// publisher may add some. `also` checks what spans fields.
export function object<S extends Record<string, Field>>(fields: S, also?: (v: Shape<S>, at: string) => void): Check<Shape<S>> {
  return (v, at) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(at, `must be an object, is ${shown(v)}`);
    const o = v as Record<string, unknown>;
    for (const [k, f] of Object.entries(fields)) {
      if (typeof f === 'function') f(o[k], `${at}.${k}`);
      else if (o[k] !== undefined) f.optional(o[k], `${at}.${k}`);
    }
    also?.(o as Shape<S>, at);
    return o as Shape<S>;
  };
}

// An object whose fields no sealkit service reads: its type is documented,
// its fields are not checked.
export function opaque<T>(): Check<T> {
  return (v, at) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as T) : fail(at, `must be an object, is ${shown(v)}`));
}

export function union<A, B>(a: Check<A>, b: Check<B>, tag: string, tags: [string, string]): Check<A | B> {
  return (v, at) => {
    const t = (v as Record<string, unknown> | null)?.[tag];
    if (t === tags[0]) return a(v, at);
    if (t === tags[1]) return b(v, at);
    return fail(`${at}.${tag}`, `must be ${tags.join(' or ')}, is ${shown(t)}`);
  };
}
