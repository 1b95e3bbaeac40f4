import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { LogsReply, LogsRequest } from '../lib/contract.ts';

// runner.logs: byte ranges of <state>/runner/logs/<name>.log, the file
// containerd's shim appends the container's stdout and stderr to. A reply
// ends on a whole UTF-8 character; `next` is where the following one starts.

export const DEFAULT_LOG_BYTES = 64 * 1024;
// well under the bus's max_payload once JSON-escaped
export const MAX_LOG_BYTES = 1024 * 1024;

export function logFile(dir: string, name: string): string {
  return join(dir, `${name}.log`);
}

// names of the containers that have a log (also those no longer in the policy)
export async function loggedNames(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.log')).map((n) => n.slice(0, -'.log'.length));
}

export async function readLog(dir: string, req: LogsRequest): Promise<LogsReply> {
  const max = Math.min(req.max ?? DEFAULT_LOG_BYTES, MAX_LOG_BYTES);
  const fh = await open(logFile(dir, req.name), 'r').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (!fh) return { name: req.name, from: 0, next: 0, size: 0, data: '' };
  try {
    const size = (await fh.stat()).size;
    const from = Math.min(req.from ?? Math.max(0, size - max), size);
    const buf = Buffer.alloc(Math.min(max, size - from));
    const { bytesRead } = await fh.read(buf, 0, buf.length, from);
    const whole = wholeChars(buf.subarray(0, bytesRead));
    return { name: req.name, from, next: from + whole.length, size, data: whole.toString('utf8') };
  } finally {
    await fh.close();
  }
}

// without a trailing partial UTF-8 sequence (at most 3 bytes of one)
function wholeChars(b: Buffer): Buffer {
  for (let back = 1; back <= Math.min(3, b.length); back++) {
    const byte = b[b.length - back];
    if ((byte & 0xc0) === 0x80) continue; // a continuation byte: look further back
    const need = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return need > back ? b.subarray(0, b.length - back) : b;
  }
  return b;
}
