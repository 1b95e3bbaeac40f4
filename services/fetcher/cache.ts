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

  /** A new quarantine file: bytes are written in 1 MiB blocks. */
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
// receiving thread does not wait on the disk. Each chunk is copied into a
// 1 MiB block taken from the file's pool and given back once written: the
// reader's buffer can be reused at once, and no fresh memory is touched per
// read (a copy into new memory for every read cost more CPU than hashing it).
const WRITES_IN_FLIGHT = 8;

export class QuarantineFile implements Sink {
  readonly copies = true;
  private readonly main: Region;
  private readonly regions: Region[] = [];
  private readonly pool: Buffer[] = [];
  private closed = false;
  private readonly inFlight = new Set<Promise<unknown>>();
  private failure: unknown;

  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly cache: Cache,
  ) {
    this.main = this.region(0);
  }

  /** A promise only when the caller must wait (writes in flight at the limit). */
  write(chunk: Buffer): Promise<void> | void {
    return this.main.write(chunk);
  }

  /** A sink writing from `start` on, beside others: for a file whose layout is planned in advance. */
  region(start: number): Region {
    const r = new Region(this, start);
    this.regions.push(r);
    return r;
  }

  /** Set the length; what no region writes reads as zeros. */
  async truncate(size: number): Promise<void> {
    await this.fh.truncate(size);
  }

  block(): Buffer {
    return this.pool.pop() ?? Buffer.allocUnsafeSlow(BLOCK);
  }

  /** Write `n` bytes of `block` at `at`; the block returns to the pool once written. */
  put(block: Buffer, n: number, at: number): { written: Promise<unknown>; wait?: Promise<void> } {
    if (this.failure) throw this.failure;
    const w: Promise<unknown> = this.fh.write(block, 0, n, at).then(
      () => {
        this.inFlight.delete(w);
        this.pool.push(block);
      },
      (err) => {
        this.inFlight.delete(w);
        // the download loop passes SealkitErrors on as they are: name the disk, not the connection
        this.failure ??= isDiskFull(err) ? diskFull(this.path, 'writing a download into quarantine (the part written is discarded)', err) : err;
      },
    );
    this.inFlight.add(w);
    if (this.inFlight.size < WRITES_IN_FLIGHT) return { written: w };
    return {
      written: w,
      wait: Promise.race(this.inFlight).then(() => {
        if (this.failure) throw this.failure;
      }),
    };
  }

  check(): void {
    if (this.failure) throw this.failure;
  }

  /** Every byte handed to a region is in the file (not yet synced). */
  async written(): Promise<void> {
    for (const r of this.regions) await r.done();
    await Promise.all(this.inFlight);
    if (this.failure) throw this.failure;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.written();
      await this.fh.sync();
    } catch (err) {
      throw isDiskFull(err) ? diskFull(this.path, 'writing a download into quarantine (the part written is discarded)', err) : err;
    } finally {
      await this.fh.close();
    }
  }

  async discard(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await Promise.allSettled(this.inFlight);
      await this.fh.close().catch(() => {});
    }
    await rm(this.path, { force: true });
    void this.cache;
  }
}

// Bytes copied into 1 MiB blocks, each written at its place in the file.
export class Region implements Sink {
  readonly copies = true;
  private block?: Buffer;
  private used = 0;
  private offset = 0;
  private readonly writes = new Set<Promise<unknown>>();

  constructor(
    private readonly file: QuarantineFile,
    private readonly start: number,
  ) {}

  write(chunk: Buffer): Promise<void> | void {
    let at = 0;
    while (at < chunk.length) {
      this.block ??= this.file.block();
      const n = chunk.copy(this.block, this.used, at);
      this.used += n;
      at += n;
      if (this.used === this.block.length) {
        const wait = this.flush();
        if (wait) return at < chunk.length ? wait.then(() => this.write(chunk.subarray(at))) : wait;
      }
    }
  }

  private flush(): Promise<void> | void {
    if (this.used === 0) return;
    const block = this.block!;
    const n = this.used;
    const at = this.start + this.offset;
    this.offset += n;
    this.block = undefined;
    this.used = 0;
    const { written, wait } = this.file.put(block, n, at);
    this.writes.add(written);
    void written.then(() => this.writes.delete(written));
    return wait;
  }

  /** Every byte handed to this region is in the file (not yet synced). */
  async done(): Promise<void> {
    await this.flush();
    await Promise.all(this.writes);
    this.file.check();
  }
}
