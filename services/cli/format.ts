import type { CloudEvent } from '../lib/envelope.ts';

// One line per event for a person at a terminal: time, type, node, then the
// data's scalar fields as key=value (nested objects are summarised).
export function prettyEvent(ev: CloudEvent<unknown>, color = false): string {
  const time = ev.time?.slice(11, 23) ?? '';
  const node = ev.source?.split('/')[2] ?? '';
  const type = ev.type.padEnd(20);
  const fields = flatten(ev.data).map(([k, v]) => `${k}=${v}`).join(' ');
  const line = `${time} ${type} ${node} ${fields}`;
  if (!color) return line;
  const c = ev.type.startsWith('audit.') ? 31 : ev.type.endsWith('rejected') || ev.type.endsWith('failed') ? 33 : 32;
  return `\x1b[2m${time}\x1b[0m \x1b[${c}m${type}\x1b[0m ${node} ${fields}`;
}

function flatten(data: unknown, prefix = '', depth = 0): Array<[string, string]> {
  if (data === null || typeof data !== 'object') return prefix ? [[prefix, scalar(data)]] : [];
  const out: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v === null || v === undefined) continue;
    if (Array.isArray(v)) out.push([key, v.length <= 4 && v.every((x) => typeof x !== 'object') ? v.join(',') : `[${v.length}]`]);
    else if (typeof v === 'object') {
      if (depth < 1) out.push(...flatten(v, key, depth + 1));
      else out.push([key, '{…}']);
    } else out.push([key, scalar(v)]);
  }
  return out;
}

function scalar(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  const t = s.length > 80 ? `${s.slice(0, 77)}…` : s;
  return /[\s"]/.test(t) ? JSON.stringify(t) : t;
}

export function bar(done: number, total: number | undefined, width = 30): string {
  if (!total) return `${mib(done)} MiB`;
  const frac = Math.min(1, done / total);
  const n = Math.round(frac * width);
  return `[${'#'.repeat(n)}${'.'.repeat(width - n)}] ${(frac * 100).toFixed(0).padStart(3)}% ${mib(done)}/${mib(total)} MiB`;
}

const mib = (n: number) => (n / 1048576).toFixed(1);

// Columns padded to their widest cell, two spaces apart, no trailing blanks.
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n') + '\n';
}

// A duration the way ps shows uptime: the two largest units, "45s", "3m12s",
// "2h05m", "3d04h".
export function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const two = (n: number) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${two(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d${two(Math.floor(s / 3600) % 24)}h`;
}
