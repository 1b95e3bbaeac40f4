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
    if (fields) {
      for (const [k, v] of Object.entries(fields)) record[k] = v instanceof Error ? errorFields(v) : v;
    }
    write(JSON.stringify(record));
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

// A logger that discards everything: for pure cores exercised in tests.
export const silentLogger: Logger = createLogger({}, { write: () => {} });
