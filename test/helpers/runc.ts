import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// Debian 12 packages only runc 1.1.5, which IPE's gate refuses; the gate's
// other side is a runc that answers as 1.2 (a script in `dir`: it is only
// asked --version, never starts a container).
export function runc12(dir: string): string {
  const file = join(dir, 'runc-1.2');
  writeFileSync(file, '#!/bin/sh\necho "runc version 1.2.0"\necho "spec: 1.2.0"\n');
  chmodSync(file, 0o755);
  return file;
}
