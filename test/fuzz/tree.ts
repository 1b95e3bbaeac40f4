import { posix } from 'node:path';
import type { SafeHeader } from '../../services/lib/archive/tar-guard.ts';
import { check } from './harness.ts';

// The oracle for the tar guard: replays the admitted entries of one tar on
// a model tree and checks that none of them can reach outside the root —
// names relative and normalized, nothing written through an admitted
// symlink, relative symlink targets inside the root, absolute ones only
// when allowed, hardlinks only to regular files admitted earlier, no device
// nodes or fifos.

export class TreeModel {
  private readonly symlinks = new Set<string>();
  private readonly files = new Set<string>();
  entries = 0;
  bytes = 0;

  constructor(private readonly allowAbsoluteSymlinks: boolean) {}

  admit(h: SafeHeader): void {
    this.entries++;
    const name = h.name;
    check(typeof name === 'string' && !name.includes('\0'), `admitted name with NUL: ${JSON.stringify(name)}`);
    check(!name.startsWith('/'), `admitted absolute name ${JSON.stringify(name)}`);
    const parts = name === '' ? [] : name.split('/');
    check(parts.every((p) => p !== '' && p !== '.' && p !== '..'), `admitted name that is not normalized or climbs: ${JSON.stringify(name)}`);
    const type = h.type ?? 'file';
    check(name !== '' || type === 'directory', `admitted a ${type} entry that names the root itself`);
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      check(!this.symlinks.has(prefix), `admitted ${JSON.stringify(name)}, written through the admitted symlink ${JSON.stringify(prefix)}`);
    }
    this.bytes += h.size ?? 0;
    switch (type) {
      case 'file':
      case 'contiguous-file':
        this.symlinks.delete(name);
        this.files.add(name);
        return;
      case 'directory':
        this.symlinks.delete(name);
        return;
      case 'symlink': {
        const target = h.linkname ?? '';
        check(target !== '' && !target.includes('\0'), `admitted symlink ${JSON.stringify(name)} with target ${JSON.stringify(target)}`);
        if (target.startsWith('/')) check(this.allowAbsoluteSymlinks, `admitted symlink ${JSON.stringify(name)} to the absolute ${JSON.stringify(target)}`);
        else {
          // lexical resolution from the link's directory, never above the root
          const stack: string[] = parts.slice(0, -1);
          for (const p of target.split('/')) {
            if (p === '' || p === '.') continue;
            if (p === '..') {
              check(stack.length > 0, `admitted symlink ${JSON.stringify(name)} -> ${JSON.stringify(target)} leaves the root`);
              stack.pop();
            } else stack.push(p);
          }
        }
        this.symlinks.add(name);
        this.files.delete(name);
        return;
      }
      case 'link': {
        const target = h.linkname ?? '';
        const t = posix.normalize(target);
        check(!target.startsWith('/') && t !== '..' && !t.startsWith('../'), `admitted hardlink ${JSON.stringify(name)} to ${JSON.stringify(target)} outside the root`);
        check(this.files.has(t.replace(/\/+$/, '')), `admitted hardlink ${JSON.stringify(name)} to ${JSON.stringify(target)}, not a file admitted earlier`);
        this.files.add(name);
        return;
      }
      default:
        check(false, `admitted a ${type} entry ${JSON.stringify(name)}`);
    }
  }
}
