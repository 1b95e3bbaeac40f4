import { mkdir, open, readFile, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { readRecords, syncDir, writeFileAtomic } from '../lib/atomic.ts';
import { sha256File, SHA256_HEX } from '../lib/digest.ts';
import type { Sink } from './download.ts';
import { diskFull, isDiskFull } from '../lib/errors.ts';

// The quarantine and the content-addressed cache live side by side under
// <state>/fetcher, on one filesystem, so that admitting a verified file is
// one atomic rename. A cache file is never trusted: every use re-hashes it.
// Beside the content, one small record per image verified into it says which
// image (name, tag, pin) the entries are for, so that collection can name
// what it removes.

export interface HeldImage {
  name: string;
  tag: string;
  sha256: string; // the pin
  source: string;
}

export class Cache {
  readonly quarantineDir: string;
  readonly blobDir: string;
  readonly refDir: string;
  readonly heldDir: string;

  constructor(readonly root: string) {
    this.quarantineDir = join(root, 'quarantine');
    this.blobDir = join(root, 'cache', 'sha256');
    this.refDir = join(root, 'cache', 'oci'); // registry manifest hex → assembled archive hex
    this.heldDir = join(root, 'cache', 'images'); // which images the entries were verified for
  }

  async init(): Promise<void> {
    await mkdir(this.blobDir, { recursive: true });
    await mkdir(this.refDir, { recursive: true });
    await mkdir(this.heldDir, { recursive: true });
    // whatever a crashed run left in quarantine was never verified
    await rm(this.quarantineDir, { recursive: true, force: true });
    await mkdir(this.quarantineDir, { recursive: true });
  }

  path(hex: string): string {
    if (!SHA256_HEX.test(hex)) throw new Error(`not a sha256: ${hex}`);
    return join(this.blobDir, hex);
  }

  /** Re-hash a cached file: 'miss', 'hit', or the digest it has now. */
  async check(hex: string): Promise<{ state: 'miss' } | { state: 'hit'; size: number } | { state: 'corrupt'; actual: string; size: number }> {
    let got: { sha256: string; size: number };
    try {
      got = await sha256File(this.path(hex));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'miss' };
      throw err;
    }
    return got.sha256 === hex ? { state: 'hit', size: got.size } : { state: 'corrupt', actual: got.sha256, size: got.size };
  }

  async remove(hex: string): Promise<void> {
    await rm(this.path(hex), { force: true });
  }

  /** A new quarantine file: bytes are written in blocks of 1 MiB or more. */
  async quarantine(label: string): Promise<QuarantineFile> {
    const path = join(this.quarantineDir, `${label.replace(/[^A-Za-z0-9._-]/g, '_')}.${randomBytes(6).toString('hex')}.part`);
    try {
      return new QuarantineFile(path, await open(path, 'wx', 0o600), this);
    } catch (err) {
      throw isDiskFull(err) ? diskFull(this.quarantineDir, `creating a quarantine file for ${label}`, err) : err;
    }
  }

  async admit(file: QuarantineFile, hex: string): Promise<string> {
    await file.close();
    const dest = this.path(hex);
    await rename(file.path, dest);
    await syncDir(this.blobDir);
    return dest;
  }

  async getRef(manifestHex: string): Promise<string | undefined> {
    try {
      const v = (await readFile(join(this.refDir, manifestHex), 'utf8')).trim();
      return SHA256_HEX.test(v) ? v : undefined;
    } catch {
      return undefined;
    }
  }

  async setRef(manifestHex: string, archiveHex: string): Promise<void> {
    await writeFileAtomic(join(this.refDir, manifestHex), archiveHex + '\n');
  }

  async removeRef(manifestHex: string): Promise<void> {
    await rm(join(this.refDir, manifestHex), { force: true });
  }

  async refs(): Promise<string[]> {
    return (await readdir(this.refDir)).filter((n) => SHA256_HEX.test(n));
  }

  async entries(): Promise<string[]> {
    return (await readdir(this.blobDir)).filter((n) => SHA256_HEX.test(n));
  }

  /** Bytes of a cache file, 0 when it is gone. */
  async size(hex: string): Promise<number> {
    return stat(this.path(hex)).then((s) => s.size, () => 0);
  }

  private heldPath(h: HeldImage): string {
    return join(this.heldDir, `${h.sha256}-${createHash('sha256').update(`${h.name}:${h.tag}`).digest('hex').slice(0, 16)}.json`);
  }

  async hold(h: HeldImage): Promise<void> {
    await writeFileAtomic(this.heldPath(h), JSON.stringify({ name: h.name, tag: h.tag, sha256: h.sha256, source: h.source }));
  }

  held(): Promise<HeldImage[]> {
    return readRecords<HeldImage>(this.heldDir);
  }

  async release(h: HeldImage): Promise<void> {
    await rm(this.heldPath(h), { force: true });
  }
}

const BLOCK = 1 << 20;

// Writes go behind the download: up to WRITES_IN_FLIGHT blocks are written
// at explicit offsets while the next bytes arrive and are hashed, so the
// receiving thread does not wait on the disk; memory stays bounded.
const WRITES_IN_FLIGHT = 8;

// Every WRITEBACK_EVERY bytes an fdatasync runs in the background (one at a
// time): the disk writes while the download goes on, instead of the whole
// file waiting in the page cache for the fsync at the end.
const WRITEBACK_EVERY = 32 << 20;

export class QuarantineFile implements Sink {
  readonly copies = true;
  // Chunks are copied into blocks that are used again once written: fresh
  // memory for every MiB of a download cost more in page faults than the copy.
  private block?: Buffer;
  private filled = 0;
  private readonly spare: Buffer[] = [];
  private closing?: Promise<void>;
  private offset = 0;
  private syncedTo = 0;
  private writeback?: Promise<void>;
  private readonly inFlight = new Set<Promise<unknown>>();
  private failure: unknown;

  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly cache: Cache,
  ) {}

  write(chunk: Buffer): Promise<void> | void {
    if (this.failure) return Promise.reject(this.failure);
    for (let at = 0; at < chunk.length; ) {
      this.block ??= this.spare.pop() ?? Buffer.allocUnsafe(BLOCK);
      const n = chunk.copy(this.block, this.filled, at);
      this.filled += n;
      at += n;
      if (this.filled === BLOCK) this.flush();
    }
    if (this.inFlight.size >= WRITES_IN_FLIGHT) return this.room();
  }

  private async room(): Promise<void> {
    while (this.inFlight.size >= WRITES_IN_FLIGHT) await Promise.race(this.inFlight);
    if (this.failure) throw this.failure;
  }

  private flush(): void {
    const block = this.block;
    if (!block || this.filled === 0) return;
    const length = this.filled;
    this.block = undefined;
    this.filled = 0;
    const at = this.offset;
    this.offset += length;
    const end = this.offset;
    const w: Promise<unknown> = this.writeAll(block, length, at).then(
      () => {
        this.inFlight.delete(w);
        this.spare.push(block);
        this.startWriteback(end);
      },
      (err) => {
        this.inFlight.delete(w);
        // the download loop passes SealkitErrors on as they are: name the disk, not the connection
        this.failure ??= isDiskFull(err) ? diskFull(this.path, 'writing a download into quarantine (the part written is discarded)', err) : err;
      },
    );
    this.inFlight.add(w);
  }

  private async writeAll(block: Buffer, length: number, at: number): Promise<void> {
    for (let done = 0; done < length; ) {
      const { bytesWritten } = await this.fh.write(block, done, length - done, at + done);
      if (bytesWritten === 0) throw new Error(`writing ${this.path} made no progress at byte ${at + done}`);
      done += bytesWritten;
    }
  }

  private startWriteback(upTo: number): void {
    if (this.writeback || this.closing || upTo - this.syncedTo < WRITEBACK_EVERY) return;
    this.syncedTo = upTo;
    this.writeback = this.fh.datasync().then(
      () => (this.writeback = undefined),
      () => (this.writeback = undefined), // the fsync in close() reports it
    );
  }

  /** Every byte given to write() is in the file (not yet durable): it may be read now. */
  async written(): Promise<void> {
    this.flush();
    await Promise.all(this.inFlight);
    if (this.failure) throw this.failure;
  }

  /** written(), then fsync and close: the file is durable. */
  close(): Promise<void> {
    this.closing ??= this.finish();
    return this.closing;
  }

  private async finish(): Promise<void> {
    try {
      await this.written();
      await this.writeback;
      await this.fh.sync();
    } catch (err) {
      throw isDiskFull(err) ? diskFull(this.path, 'writing a download into quarantine (the part written is discarded)', err) : err;
    } finally {
      await this.fh.close();
    }
  }

  async discard(): Promise<void> {
    if (this.closing) await this.closing.catch(() => {});
    else {
      this.closing = Promise.resolve();
      await Promise.allSettled([...this.inFlight, this.writeback]);
      await this.fh.close().catch(() => {});
    }
    await rm(this.path, { force: true });
    void this.cache;
  }
}
