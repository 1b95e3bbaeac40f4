import test from 'ava';
import { bootVm, ensureIso } from './helpers/qemu.ts';
import { sealkit } from './helpers/cli.ts';
import { serviceNames } from '../services/lib/subjects.ts';

// sealkit status against the booted ISO, from the host: on the node every
// service is an OCI bundle in its own pid namespace (pid 1 there), yet
// status shows the pids the node's host sees, and the node's own name and OS.

const minutes = (n: number) => n * 60_000;

test('sealkit status shows the ISO node by name with host pids of its bundles', async (t) => {
  t.timeout(minutes(20));
  const iso = await ensureIso((l) => t.log(l));
  const vm = await bootVm({ iso: iso.iso });
  try {
    await vm.waitForBus(minutes(8));
    // the services start one by one after the bus: ask until all answer
    // (each ask waits for every expected answer, up to its --timeout)
    const url = `nats://127.0.0.1:${vm.busPort}`;
    const deadline = Date.now() + minutes(8);
    let r: { code: number; stdout: string; stderr: string };
    for (;;) {
      r = await sealkit(['status', '--json', '--server', url, '--timeout', '30'], { SEALKIT_STATE: '/nonexistent' }, { timeoutMs: 120_000 });
      if (r.code === 0 || Date.now() > deadline) break;
    }
    t.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const s = JSON.parse(r.stdout) as { node: { name: string; os: { distro: string; release: string }; ima: { ima: boolean } }; services: Array<{ service: string; pid: number; hostPid: boolean }>; missing: string[] };
    t.regex(s.node.name, /^sealkit-[0-9a-f]{6}$/);
    t.is(s.node.os.distro, 'sealkit');
    t.true(s.node.ima.ima, 'nodeinfo sees securityfs');
    t.deepEqual(s.missing, []);
    const pids = s.services.map((x) => x.pid);
    t.true(s.services.every((x) => x.hostPid), JSON.stringify(s.services));
    t.true(pids.every((p) => p > 1));
    t.is(new Set(pids).size, pids.length, 'one process each');
    t.log(`status: node ${s.node.name}, ${s.services.map((x) => `${x.service}=${x.pid}`).join(' ')}`);

    const pretty = await sealkit(['status', '--server', url, '--timeout', '30'], { SEALKIT_STATE: '/nonexistent' }, { timeoutMs: 120_000 });
    t.is(pretty.code, 0, pretty.stderr);
    t.regex(pretty.stdout, /^node: sealkit-[0-9a-f]{6} \(sealkit 0\.1\.0, kernel \S+\)$/m);
  } finally {
    t.is(await vm.powerOff(), 'acpi');
  }
});
