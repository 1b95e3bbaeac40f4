import { spawn, type ChildProcess } from 'node:child_process';
import { watch, type FSWatcher } from 'node:fs';
import type { Socket } from 'node:net';
import { basename, dirname } from 'node:path';
import type { Logger } from '../lib/log.ts';

// What tells the auditor that the kernel log may have grown, so it reads at
// once instead of on a fixed poll. A wake-up carries nothing: the source's
// own reader still decides what is new (offsets, kmsg sequence numbers), so a
// spurious or missed wake-up can cost time, never a record. The caller keeps a
// slow fallback timer for the wake-ups that do not come.

export interface Waker {
  close(): void;
}

// A regular file: inotify on the file (its writes, whatever path or bind
// mount they came through) and on its directory (rotation: a new file under
// the same name). `rewatch` after the source reopened a replaced file.
export class FileWaker implements Waker {
  private file?: FSWatcher;
  private readonly dir?: FSWatcher;

  constructor(
    private readonly path: string,
    private readonly onChange: () => void,
    private readonly log: Logger,
  ) {
    const name = basename(path);
    this.dir = this.tryWatch(dirname(path), (filename) => {
      if (filename === null || filename === name) onChange();
    });
    this.rewatch();
  }

  rewatch(): void {
    this.file?.close();
    this.file = this.tryWatch(this.path, () => this.onChange());
  }

  close(): void {
    this.file?.close();
    this.dir?.close();
  }

  private tryWatch(target: string, on: (filename: string | null) => void): FSWatcher | undefined {
    try {
      const w = watch(target, { persistent: false }, (_event, filename) => on(filename === null ? null : String(filename)));
      w.on('error', (err) => {
        this.log.warn('inotify watch on the kernel log failed; falling back to the slow timer', { target, err });
        w.close();
      });
      return w;
    } catch (err) {
      this.log.warn('cannot watch the kernel log with inotify; reading it on the slow timer only', { target, err: err as Error });
      return undefined;
    }
  }
}

// How long a failed doorbell waits before it is started again: the slow
// timer covers the gap, and a device that keeps failing must not spin.
const RESPAWN_MS = 1000;

// /dev/kmsg is a character device: inotify never fires for what the kernel
// logs, and Node has no poll(2) for it. A read() that blocks is the kernel's
// own notification, so a `cat` of the device is the doorbell: any bytes on its
// pipe (which libuv polls without a thread) mean "read now". Why not a
// blocking read in the libuv pool: a read parked there is not cancellable, and
// libuv joins its threads at exit, so the process would hang on stop until the
// kernel logged something. A child is killed on stop, holds no pool thread,
// and reads with its own file position, so it never takes a record from the
// auditor's descriptor. On a ring overflow its read fails (EPIPE) and it exits:
// that wakes the auditor too, and it is started again.
export class KmsgWaker implements Waker {
  private child?: ChildProcess;
  private closed = false;
  private respawn?: NodeJS.Timeout;

  constructor(
    private readonly path: string,
    private readonly onChange: () => void,
    private readonly log: Logger,
  ) {
    this.start();
  }

  private start(): void {
    const child = spawn('cat', [this.path], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.child = child;
    child.unref();
    (child.stdout as Socket).unref();
    child.stdout!.on('data', () => this.onChange());
    child.on('error', (err) => {
      this.log.warn('cannot start cat to wait on the kernel log; reading it on the slow timer only', { path: this.path, err });
      this.child = undefined;
    });
    child.on('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = undefined;
      if (this.closed) return;
      this.onChange();
      this.log.debug('the kernel log doorbell ended; starting it again', { path: this.path, code, signal });
      this.respawn = setTimeout(() => this.start(), RESPAWN_MS);
      this.respawn.unref();
    });
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.respawn);
    this.child?.kill();
  }
}
