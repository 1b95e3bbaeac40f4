import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';

// Whether the OCI runtime that starts containers copies itself into a memfd
// and re-executes that copy before each start (CVE-2019-5736): IPE refuses
// the memfd (neither on the initramfs nor fs-verity), so with such a runtime
// no container could start under an IPE policy. Measured under the 6.12
// kernel: Debian's runc 1.1.5 always does ("nsexec: could not ensure we are
// a cloned binary: Permission denied", a 1420 record for
// memfd:runc_cloned:/proc/self/exe; test/ipe-kernel-vm.test.ts); Debian's
// crun 1.8.1 does not when its binary is on a read-only mount and
// _LIBCONTAINER_CLONED_BINARY=1 is in its environment (the container cannot
// write the binary then), which is how the ISO's init runs it.
//
// On the node the init that sets the runtime up says so in a file
// (SEALKIT_RUNTIME_ENV, /run/sealkit/runtime.env): the ima containers do not
// have the runtime's binary or its libraries. Elsewhere runc is asked
// (SEALKIT_RUNC). A runtime that cannot be asked is not known to be safe.

const run = promisify(execFile);

export interface RuntimeCheck {
  runtime: string;
  version: string | null; // null: the runtime could not be asked
  selfClones: boolean; // or cannot tell: either way IPE would be unsafe to activate
  why: string;
}

export async function checkRuntime(envFile = process.env.SEALKIT_RUNTIME_ENV): Promise<RuntimeCheck> {
  if (!envFile) return checkRunc();
  const text = await readFile(envFile, 'utf8').catch(() => null);
  if (text === null) return { runtime: envFile, version: null, selfClones: true, why: `${envFile}, where the node's init says which runtime it set up, cannot be read, so whether the runtime copies itself into a memfd before each container start cannot be told` };
  const env = parseEnvFile(text);
  const runtime = env.SEALKIT_RUNTIME ?? envFile;
  const version = env.SEALKIT_RUNTIME_VERSION || null;
  const named = version ? `${runtime} ${version}` : runtime;
  if (env.SEALKIT_RUNTIME_CLONE === 'none') return { runtime, version, selfClones: false, why: `${named} runs from a read-only mount and does not copy itself before a container start (${envFile})` };
  return { runtime, version, selfClones: true, why: `${named} copies itself into a memfd before each container start (${envFile}: SEALKIT_RUNTIME_CLONE=${env.SEALKIT_RUNTIME_CLONE ?? 'unset'}), which IPE refuses: no container could start` };
}

export async function checkRunc(runc = process.env.SEALKIT_RUNC ?? 'runc'): Promise<RuntimeCheck> {
  const out = await run(runc, ['--version']).then((r) => r.stdout, () => null);
  const v = out ? /runc version (\d+)\.(\d+)\.(\d+)/.exec(out) : null;
  if (!v) return { runtime: runc, version: null, selfClones: true, why: `"${runc} --version" gave no runc version here, so whether the runtime re-executes itself from a memfd (runc before 1.2 does, and IPE refuses that) cannot be told` };
  const [major, minor] = [Number(v[1]), Number(v[2])];
  const version = `${v[1]}.${v[2]}.${v[3]}`;
  const selfClones = major < 1 || (major === 1 && minor < 2);
  return { runtime: runc, version, selfClones, why: selfClones ? `${runc} ${version} re-executes itself from a memfd before each container start, which IPE refuses: no container could start` : `${runc} ${version} does not re-execute itself from a memfd` };
}

// KEY=value lines, # comments; values are not quoted.
function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) out[m[1]] = m[2].trim();
  }
  return out;
}
