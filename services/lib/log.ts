// One root logger per process, JSON lines to stdout (pino's shape: level,
// time, msg, bindings), child loggers per concern.

export type Level = 'debug' | 'info' | 'warn' | 'error';
const rank: Record<Level, number> = { debug: 20, info: 30, warn: 40, error: 50 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(bindings: Record<string, unknown>): Logger;
}

export function createLogger(
  bindings: Record<string, unknown>,
  opts: { level?: Level; write?: (line: string) => void } = {},
): Logger {
  const min = rank[opts.level ?? ((process.env.SEALKIT_LOG_LEVEL as Level | undefined) ?? 'info')] ?? rank.info;
  const write = opts.write ?? ((line: string) => process.stdout.write(line + '\n'));
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (rank[level] < min) return;
    const record: Record<string, unknown> = { level: rank[level], time: Date.now(), ...bindings, msg };
    if (fields) Object.assign(record, fields);
    write(safeStringify(record));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (more) => createLogger({ ...bindings, ...more }, { level: opts.level, write }),
  };
}

function errorFields(err: Error): Record<string, unknown> {
  const code = (err as { code?: unknown }).code;
  return { message: err.message, ...(code !== undefined ? { code } : {}), stack: err.stack };
}

// A log call must never throw: a cycle becomes "[Circular]", a BigInt its
// decimal string, an Error its message/code/stack, and a field whose toJSON
// or getter throws is replaced by a note instead of losing the whole line.
export function safeStringify(record: Record<string, unknown>): string {
  try {
    return JSON.stringify(record, replacer());
  } catch {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(record)) {
      try {
        out[k] = JSON.parse(JSON.stringify(record[k], replacer()) ?? 'null');
      } catch (err) {
        out[k] = `[Unserializable: ${(err as Error).message}]`;
      }
    }
    return JSON.stringify(out);
  }
}

// Tracks the chain of objects above the value being written (JSON.stringify
// calls the replacer with the holder as `this`), so a shared object is
// written twice and only a real cycle is cut.
function replacer(): (this: unknown, key: string, value: unknown) => unknown {
  const ancestors: unknown[] = [];
  return function (this: unknown, _key: string, value: unknown): unknown {
    if (typeof value === 'bigint') return value.toString();
    if (typeof value === 'function' || typeof value === 'symbol') return undefined;
    if (value instanceof Error) value = errorFields(value);
    if (value === null || typeof value !== 'object') return value;
    while (ancestors.length > 0 && ancestors[ancestors.length - 1] !== this) ancestors.pop();
    if (ancestors.includes(value)) return '[Circular]';
    ancestors.push(value);
    return value;
  };
}

// A logger that discards everything: for pure cores exercised in tests.
export const silentLogger: Logger = createLogger({}, { write: () => {} });
