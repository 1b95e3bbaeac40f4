import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFilesAtomic } from '../lib/atomic.ts';
import { SealkitError } from '../lib/errors.ts';
import { verifySignedPolicy, type Policy, type SignedPolicy } from '../lib/policy.ts';
import type { PublicKey } from '../lib/sign.ts';

// The policy on disk: every accepted record under history/<serial>.json and
// the one in force as current.json, each written atomically. highwater holds
// the highest serial ever accepted, so a validly signed but older policy
// copied over current.json is refused as a rollback, not obeyed.

export interface Loaded {
  record: SignedPolicy;
  policy: Policy;
}

export interface LoadReport {
  loaded: Loaded | null;
  problems: Array<{ file: string; code: string; reason: string }>;
}

export class PolicyStore {
  private floor?: number; // the highwater, once read or written

  constructor(readonly dir: string) {}

  private get currentPath() {
    return join(this.dir, 'current.json');
  }
  private get highwaterPath() {
    return join(this.dir, 'highwater');
  }
  private historyPath(serial: number) {
    return join(this.dir, 'history', `${String(serial).padStart(12, '0')}.json`);
  }

  // history first, highwater last: whatever prefix of the three a crash
  // keeps, the floor is never above every record on disk, so a push that was
  // never answered can be sent again. One batch of syncs (writeFilesAtomic):
  // three synced writes one after another were most of a push's round trip.
  async save(rec: SignedPolicy): Promise<void> {
    const bytes = JSON.stringify(rec, null, 2) + '\n';
    await writeFilesAtomic([
      { path: this.historyPath(rec.serial), data: bytes, mode: 0o600 },
      { path: this.currentPath, data: bytes, mode: 0o600 },
      { path: this.highwaterPath, data: `${rec.serial}\n`, mode: 0o600 },
    ]);
    this.floor = rec.serial;
  }

  // Read once, then kept: this process is the file's only writer.
  async highwater(): Promise<number> {
    if (this.floor !== undefined) return this.floor;
    let n = 0;
    try {
      n = Number.parseInt(await readFile(this.highwaterPath, 'utf8'), 10);
    } catch {
      // none yet
    }
    return (this.floor = Number.isInteger(n) ? n : 0);
  }

  // Re-verify what is on disk before using it. A bad current.json falls back
  // to the newest good history entry; every problem found is reported.
  async load(trust: PublicKey[]): Promise<LoadReport> {
    const problems: LoadReport['problems'] = [];
    const floor = await this.highwater();
    const tryFile = async (file: string): Promise<Loaded | null> => {
      let raw: string;
      try {
        raw = await readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
        problems.push({ file, code: 'SEALKIT_POLICY_CORRUPT', reason: `unreadable: ${(err as Error).message}` });
        return null;
      }
      try {
        let rec: SignedPolicy;
        try {
          rec = JSON.parse(raw) as SignedPolicy;
        } catch {
          throw new SealkitError('SEALKIT_POLICY_CORRUPT', `${file} is not a JSON policy record`);
        }
        const policy = verifySignedPolicy(rec, trust, file);
        return { record: rec, policy };
      } catch (err) {
        const e = err as SealkitError;
        problems.push({ file, code: e.code ?? 'SEALKIT_POLICY_CORRUPT', reason: e.message });
        return null;
      }
    };

    const current = await tryFile(this.currentPath);
    if (current && current.policy.serial >= floor) return { loaded: current, problems };
    if (current) {
      problems.push({
        file: this.currentPath,
        code: 'SEALKIT_POLICY_ROLLBACK',
        reason: `${this.currentPath} holds serial ${current.policy.serial}, older than the highest accepted serial ${floor}`,
      });
    }
    let names: string[] = [];
    try {
      names = (await readdir(join(this.dir, 'history'))).filter((n) => n.endsWith('.json')).sort().reverse();
    } catch {
      // no history yet
    }
    for (const name of names) {
      const h = await tryFile(join(this.dir, 'history', name));
      if (h) return { loaded: h, problems };
    }
    return { loaded: null, problems };
  }
}
