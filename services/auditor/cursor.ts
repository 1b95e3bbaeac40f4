import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../lib/atomic.ts';
import type { StormSnapshot } from './storm.ts';

// What the auditor has handled, written after the events for it are in the
// outbox: the last kmsg sequence number (or the byte offset in a log file)
// plus the storm counts not yet reported, so a restart neither repeats nor
// forgets anything.

export interface Cursor<T> {
  version: 1;
  path: string;
  identity: string; // kmsg:<boot id> or file:<dev>:<ino>; another value means start over
  seq: number | null; // last kmsg record handled
  offset: number; // byte offset after the last record handled (files)
  storm: StormSnapshot<T> | null;
  updatedAt: string;
}

export async function readCursor<T>(file: string): Promise<Cursor<T> | null> {
  try {
    const c = JSON.parse(await readFile(file, 'utf8')) as Cursor<T>;
    return c?.version === 1 && typeof c.identity === 'string' ? c : null;
  } catch {
    return null;
  }
}

export async function writeCursor<T>(file: string, c: Cursor<T>): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(c));
}
