import { readFile, rm, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { readRecords, writeFileAtomic } from '../lib/atomic.ts';
import type { VerifiedImage } from '../lib/contract.ts';

// One file per image.verified event being handled. `importing` survives a
// crash, so the next start resumes the import at once (the un-acked message
// comes back too, later); `done` remembers that the outcome was published, so
// a redelivery after a crash between publish and ack publishes nothing twice.

export interface JournalEntry {
  eventId: string;
  image: VerifiedImage;
  state: 'importing' | 'done';
  startedAt: string;
  doneAt?: string;
}

export class Journal {
  constructor(private readonly dir: string) {}

  private file(eventId: string): string {
    return join(this.dir, `${createHash('sha256').update(eventId).digest('hex').slice(0, 32)}.json`);
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  async get(eventId: string): Promise<JournalEntry | undefined> {
    try {
      return JSON.parse(await readFile(this.file(eventId), 'utf8')) as JournalEntry;
    } catch {
      return undefined;
    }
  }

  async begin(eventId: string, image: VerifiedImage): Promise<void> {
    const e: JournalEntry = { eventId, image, state: 'importing', startedAt: new Date().toISOString() };
    await writeFileAtomic(this.file(eventId), JSON.stringify(e));
  }

  async done(eventId: string): Promise<void> {
    const e = await this.get(eventId);
    if (!e) return;
    await writeFileAtomic(this.file(eventId), JSON.stringify({ ...e, state: 'done', doneAt: new Date().toISOString() }));
  }

  async list(): Promise<JournalEntry[]> {
    const out = await readRecords<JournalEntry>(this.dir);
    return out.sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  }

  // Forget finished imports after a day: by then the message is long acked.
  async prune(maxAgeMs = 24 * 3600_000): Promise<void> {
    const now = Date.now();
    for (const e of await this.list()) {
      if (e.state === 'done' && e.doneAt && now - Date.parse(e.doneAt) > maxAgeMs) await rm(this.file(e.eventId), { force: true });
    }
  }
}
