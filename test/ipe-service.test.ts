import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService } from './helpers/service.ts';
import { assertBuilt, sealkit, sealkitBin } from './helpers/cli.ts';
import { runReadme } from './helpers/readme.ts';
import { makeAdmin } from './helpers/policy.ts';
import { runc12 } from './helpers/runc.ts';
import { EventLog } from './helpers/events.ts';
import { contract } from '../services/lib/contract.ts';
import { composeIpePolicy } from '../services/ima/ipe.ts';

// The ima service on an IPE node. sealkit ipe push → ima.ipe: it applies an owner-signed IPE
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
  const r = await pushWith({ SEALKIT_SECURITYFS: sfs, SEALKIT_RUNC: runc12(dir) }, (env) => runReadme('bin/sealkit ipe push ipe/policy.p7b', { cwd: admin, env }));
  t.regex(r.stderr, /-O verity.*\[SEALKIT_VERITY_FAILED\]/);
  t.is(readFileSync(join(sfs, 'ipe', 'new_policy'), 'utf8'), '');
  t.false(kept());
});

serial('IPE switched off on a node with an owner policy is audit.tamper at once, and ima.enforcing says why', async (t) => {
  const sfs = ipeTree('switched');
  const pol = join(sfs, 'ipe', 'policies', 'sealkit');
  mkdirSync(pol);
  writeFileSync(join(pol, 'active'), '1\n');
  writeFileSync(join(pol, 'version'), '0.0.3\n');
  writeFileSync(join(pol, 'policy'), composeIpePolicy({ serial: 3, digests: [] }));
  // the owner gave this node a policy: IPE is its tier
  mkdirSync(join(s.stateDir, 'ima', 'ipe'), { recursive: true });
  writeFileSync(join(s.stateDir, 'ima', 'ipe', 'policy.p7b'), readFileSync(p7b));
  t.teardown(() => rmSync(join(s.stateDir, 'ima', 'ipe'), { recursive: true, force: true }));
  const monitor = await s.connectAs(null);
  const log = new EventLog(monitor, [contract.audit.tamper.subject, contract.ima.enforcing.subject]);
  const store = join(dir, 'store-switched');
  mkdirSync(store);
  const svc = await startService('ima', { SEALKIT_STATE: s.stateDir, SEALKIT_NATS_URL: s.url, SEALKIT_CONTAINER_STORE: store, SEALKIT_NODE: 'node-ipe', SEALKIT_SECURITYFS: sfs, SEALKIT_IPE_CHECK_MS: '200' });
  t.teardown(async () => {
    log.close();
    await svc.stop();
    await monitor.close();
  });
  const first = await log.wait('ima.enforcing');
  t.like(first.data, { mode: 'ipe-verity', kernel: { ipeEnforce: true, ipePolicy: '0.0.3' } });
  t.false(log.of('audit.tamper').some((e) => e.data.kind === 'ipe-enforce-off'));

  writeFileSync(join(sfs, 'ipe', 'enforce'), '0\n'); // what root's echo 0 > …/ipe/enforce leaves
  const tamper = await log.wait((e) => e.type === 'audit.tamper' && e.data.kind === 'ipe-enforce-off');
  t.like(tamper.data, { scope: 'node', mechanism: 'ipe-verity', action: 'reported' });
  const after = await log.wait((e) => e.type === 'ima.enforcing' && e.data.kernel.ipeEnforce === false);
  t.not(after.data.mode, 'ipe-verity');
  t.regex(after.data.why, /^IPE is in permissive mode/);
});
