import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService } from './helpers/service.ts';
import { assertBuilt, sealkit, sealkitBin } from './helpers/cli.ts';
import { runReadme } from './helpers/readme.ts';
import { makeAdmin } from './helpers/policy.ts';
import { composeIpePolicy } from '../services/ima/ipe.ts';

// sealkit ipe push → ima.ipe: the ima service applies an owner-signed IPE
// policy only where it can be in force, and keeps it for the next boots only
// once applied. This machine's kernel has no IPE and its filesystems no
// fs-verity, so what is shown here is each refusal (a securityfs tree stands
// in for the 6.12 kernel's); the kernel's own checks are ipe-kernel-vm's.

const serial = test.serial;
let s: NatsServer;
const dir = mkdtempSync(join(tmpdir(), 'sealkit-ipe-push-'));
// an admin's checkout: bin/sealkit and the output of sealkit ipe policy
const admin = join(dir, 'admin');
const p7b = join(admin, 'ipe', 'policy.p7b');

test.before(async () => {
  s = await startNats();
  await makeAdmin(s.stateDir); // the ima service follows the node policy: it needs the trust file
  mkdirSync(join(admin, 'bin'), { recursive: true });
  mkdirSync(join(admin, 'ipe'));
  symlinkSync(sealkitBin, join(admin, 'bin', 'sealkit'));
  writeFileSync(p7b, composeIpePolicy({ serial: 3, digests: [] })); // the kernel would judge the signature; none is asked here
});
test.after.always(async () => {
  await s?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

function ipeTree(name: string): string {
  const sfs = join(dir, name);
  mkdirSync(join(sfs, 'ipe', 'policies'), { recursive: true });
  writeFileSync(join(sfs, 'ipe', 'enforce'), '1\n');
  writeFileSync(join(sfs, 'ipe', 'new_policy'), '');
  return sfs;
}

type Push = (cliEnv: Record<string, string>) => Promise<{ code: number | null; stderr: string }>;
const cliPush: Push = (cliEnv) => sealkit(['ipe', 'push', p7b], cliEnv);

async function pushWith(env: Record<string, string>, push = cliPush): Promise<{ code: number | null; stderr: string }> {
  const store = join(dir, `store-${Object.keys(env).length}-${Math.random().toString(16).slice(2)}`);
  mkdirSync(store, { recursive: true });
  const svc = await startService('ima', { SEALKIT_STATE: s.stateDir, SEALKIT_NATS_URL: s.url, SEALKIT_CONTAINER_STORE: store, SEALKIT_NODE: 'node-ipe', ...env });
  try {
    return await push({ SEALKIT_STATE: s.stateDir, SEALKIT_NATS_URL: s.url });
  } finally {
    await svc.stop();
  }
}

const kept = () => existsSync(join(s.stateDir, 'ima', 'ipe', 'policy.p7b'));

serial('a node whose kernel has no IPE refuses the push and keeps nothing', async (t) => {
  const r = await pushWith({ SEALKIT_SECURITYFS: join(dir, 'no-securityfs') });
  t.is(r.code, 1);
  t.regex(r.stderr, /without IPE.*\[SEALKIT_IMA_UNAVAILABLE\]/);
  t.false(kept());
});

serial('with a runc IPE would refuse, the policy is not activated (no container could start)', async (t) => {
  const sfs = ipeTree('runc');
  const r = await pushWith({ SEALKIT_SECURITYFS: sfs });
  t.regex(r.stderr, /memfd.*\[SEALKIT_IPE_RUNTIME\]/);
  t.is(readFileSync(join(sfs, 'ipe', 'new_policy'), 'utf8'), '', 'nothing was written to the kernel');
  t.false(kept());
});

serial('on a store without fs-verity the policy is not activated (the README command)', async (t) => {
  assertBuilt();
  const sfs = ipeTree('verity');
  const r = await pushWith({ SEALKIT_SECURITYFS: sfs, SEALKIT_RUNC: join(dir, 'no-runc') }, (env) => runReadme('bin/sealkit ipe push ipe/policy.p7b', { cwd: admin, env }));
  t.regex(r.stderr, /-O verity.*\[SEALKIT_VERITY_FAILED\]/);
  t.is(readFileSync(join(sfs, 'ipe', 'new_policy'), 'utf8'), '');
  t.false(kept());
});
