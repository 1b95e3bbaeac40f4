import { constants, readSync, statSync, type Stats } from 'node:fs';
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { SealkitError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { FileWaker, KmsgWaker, type Waker } from './wake.ts';

// Where kernel records come from. Two shapes:
// - the /dev/kmsg character device: one record per read(), EAGAIN when
//   caught up, EPIPE when the ring overwrote records we had not read yet;
// - a regular file that grows (a kmsg capture, or auditd's audit.log): one
//   record per complete line; a partial last line waits for its newline.
// Reads are synchronous: a non-blocking device read or a read of a file the
// kernel has just written (page cache) takes microseconds, where a trip
// through the libuv pool per read cost milliseconds on a loaded machine,
// paid on every denial's way out and once per record in a storm.

export interface RawRecord {
  text: string;
  end: number; // byte offset after the record (files); 0 for the device
}

export interface ReadBatch {
  records: RawRecord[];
  overflow: boolean; // the device reported EPIPE: records were lost
}

export interface Source {
  readonly path: string;
  readonly identity: string; // changes when the stream restarts (new boot, new file)
  read(max: number): Promise<ReadBatch>;
  // call onChange whenever there may be more to read (see wake.ts)
  watch(onChange: () => void, log: Logger): void;
  close(): Promise<void>;
}

export async function openSource(path: string, resumeAt?: { identity: string; offset: number }): Promise<Source> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (err) {
    throw new SealkitError('SEALKIT_CONFIG', `cannot open the kernel log ${path}: ${(err as Error).message}; set SEALKIT_KMSG or SEALKIT_AUDIT_LOG to a readable file`);
  }
  if (st.isCharacterDevice()) return KmsgDevice.open(path);
  if (st.isFile()) return FileFollower.open(path, resumeAt);
  throw new SealkitError('SEALKIT_CONFIG', `${path} is neither /dev/kmsg nor a regular file; point SEALKIT_KMSG or SEALKIT_AUDIT_LOG at one`);
}

export async function bootId(): Promise<string> {
  try {
    return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  } catch {
    return 'unknown-boot';
  }
}

class KmsgDevice implements Source {
  private readonly buf = Buffer.alloc(16 * 1024); // a record is at most ~8 KiB with its dictionary
  private waker?: Waker;

  private constructor(
    readonly path: string,
    readonly identity: string,
    private readonly fh: FileHandle,
  ) {}

  static async open(path: string): Promise<KmsgDevice> {
    // a fresh reader starts at the oldest record still in the ring
    const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    return new KmsgDevice(path, `kmsg:${await bootId()}`, fh);
  }

  async read(max: number): Promise<ReadBatch> {
    const records: RawRecord[] = [];
    let overflow = false;
    while (records.length < max) {
      try {
        const bytesRead = readSync(this.fh.fd, this.buf, 0, this.buf.length, null);
        if (bytesRead === 0) break;
        records.push({ text: this.buf.toString('utf8', 0, bytesRead), end: 0 });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') break;
        if (code === 'EPIPE') {
          overflow = true; // the next read returns the oldest record left
          continue;
        }
        throw err;
      }
    }
    return { records, overflow };
  }

  watch(onChange: () => void, log: Logger): void {
    this.waker = new KmsgWaker(this.path, onChange, log);
  }

  async close(): Promise<void> {
    this.waker?.close();
    await this.fh.close();
  }
}

// A kmsg record is at most ~8 KiB with its dictionary, an audit.log line ~9 KiB.
const MAX_LINE = 64 * 1024;

class FileFollower implements Source {
  private offset: number;
  private pending = Buffer.alloc(0);
  private skipping = false; // inside a line longer than MAX_LINE
  private waker?: FileWaker;

  private constructor(
    readonly path: string,
    public identity: string,
    private fh: FileHandle,
    offset: number,
  ) {
    this.offset = offset;
  }

  static async open(path: string, resumeAt?: { identity: string; offset: number }): Promise<FileFollower> {
    const fh = await open(path, 'r');
    const st = await fh.stat();
    const identity = fileIdentity(st);
    const offset = resumeAt && resumeAt.identity === identity && resumeAt.offset <= st.size ? resumeAt.offset : 0;
    return new FileFollower(path, identity, fh, offset);
  }

  async read(max: number): Promise<ReadBatch> {
    await this.reopenIfReplaced();
    const records: RawRecord[] = [];
    const chunk = Buffer.alloc(64 * 1024);
    let readAt = this.offset + this.pending.length;
    let atEnd = false;
    while (records.length < max && !atEnd) {
      const bytesRead = readSync(this.fh.fd, chunk, 0, chunk.length, readAt);
      if (bytesRead === 0) break;
      // a short read is the end of the file for now: what is appended next wakes us
      atEnd = bytesRead < chunk.length;
      readAt += bytesRead;
      this.pending = Buffer.concat([this.pending, chunk.subarray(0, bytesRead)]);
      let nl: number;
      while (records.length < max && (nl = this.pending.indexOf(0x0a)) !== -1) {
        const line = this.pending.toString('utf8', 0, Math.min(nl, MAX_LINE));
        const rest = this.skipping;
        this.skipping = false;
        this.offset += nl + 1;
        this.pending = this.pending.subarray(nl + 1);
        // continuation lines carry the kmsg dictionary, which we do not need
        if (!rest && line.length > 0 && !line.startsWith(' ')) records.push({ text: line, end: this.offset });
      }
      if (records.length < max && this.pending.length > MAX_LINE && this.pending.indexOf(0x0a) === -1) {
        // far longer than any kernel record: its start is the record, the rest
        // up to its newline is dropped instead of held
        const line = this.pending.toString('utf8', 0, MAX_LINE);
        this.offset += this.pending.length;
        this.pending = Buffer.alloc(0);
        if (!this.skipping && !line.startsWith(' ')) records.push({ text: line, end: this.offset });
        this.skipping = true;
      }
    }
    // what was read past the last record returned stays pending; re-read it next time
    if (records.length >= max) this.pending = Buffer.alloc(0);
    return { records, overflow: false };
  }

  // log rotation or a replaced capture: follow the new file from its start
  private async reopenIfReplaced(): Promise<void> {
    let st: Stats;
    try {
      st = statSync(this.path);
    } catch {
      return; // gone for now; keep reading the old handle
    }
    const identity = fileIdentity(st);
    if (identity === this.identity && st.size >= this.offset) return;
    await this.fh.close();
    this.fh = await open(this.path, 'r');
    this.identity = fileIdentity(await this.fh.stat());
    this.offset = 0;
    this.pending = Buffer.alloc(0);
    this.skipping = false;
    this.waker?.rewatch();
  }

  watch(onChange: () => void, log: Logger): void {
    this.waker = new FileWaker(this.path, onChange, log);
  }

  async close(): Promise<void> {
    this.waker?.close();
    await this.fh.close();
  }
}

function fileIdentity(st: Stats): string {
  return `file:${st.dev}:${st.ino}`;
}
