import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

// runc before 1.2 copies itself into a memfd and re-executes that before
// every container start (CVE-2019-5736); IPE refuses the memfd (neither on
// the initramfs nor fs-verity), so no container could start. Measured with
// Debian's runc 1.1.5 under the 6.12 kernel: "nsexec: could not ensure we
// are a cloned binary: Permission denied" and a 1420 record for
// memfd:runc_cloned:/proc/self/exe (test/ipe-kernel-vm.test.ts).
// A runc that cannot be asked (not in this service's image, say) is not
// known to be safe: the policy is refused then too.

const run = promisify(execFile);

export interface RuntimeCheck {
  runc: string;
  version: string | null; // null: `runc --version` could not be run or read
  selfClones: boolean; // or cannot tell: either way IPE would be unsafe to activate
}

export async function checkRunc(runc = process.env.SEALKIT_RUNC ?? 'runc'): Promise<RuntimeCheck> {
  const out = await run(runc, ['--version']).then((r) => r.stdout, () => null);
  const v = out ? /runc version (\d+)\.(\d+)\.(\d+)/.exec(out) : null;
  if (!v) return { runc, version: null, selfClones: true };
  const [major, minor] = [Number(v[1]), Number(v[2])];
  return { runc, version: `${v[1]}.${v[2]}.${v[3]}`, selfClones: major < 1 || (major === 1 && minor < 2) };
}
