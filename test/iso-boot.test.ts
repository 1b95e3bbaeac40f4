import test from 'ava';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, ErrorCode, type NatsConnection } from 'nats';
import { bootVm, ensureIso } from './helpers/qemu.ts';
import { sealkit } from './helpers/cli.ts';
import { repoRoot } from '../iso/build.ts';
import { streams } from '../services/lib/subjects.ts';

// The offline ISO boots in QEMU (TCG, 1 GiB), its nats-server answers on the
// forwarded port with the generated configuration, sealkit status from the
// host shows the node by name with the host pids of its bundles (on the node
// every service is an OCI bundle in its own pid namespace, pid 1 there), and
// the node powers off cleanly from the ACPI button. One boot for all of it:
// a boot under TCG is minutes of the suite.

const minutes = (n: number) => n * 60_000;

test('the ISO boots, its bus answers on the forwarded port, and sealkit status shows the node with host pids of its bundles', async (t) => {
  t.timeout(minutes(20));
  const iso = await ensureIso((l) => t.log(l));
  t.log(`ISO ${(iso.bytes / 1e6).toFixed(1)} MB, ${iso.reused ? 'reused' : `built in ${iso.seconds.toFixed(0)} s`}`);
  const manifest = JSON.parse(await readFile(iso.manifest, 'utf8')) as { skipped: string[]; images: { services: Array<{ name: string }> } };
  if (manifest.skipped.length) t.log(`left out of the image: ${manifest.skipped.join('; ')}`);

  const vm = await bootVm({ iso: iso.iso });
  let nc: NatsConnection | undefined;
  try {
    const busMs = await vm.waitForBus(minutes(8));
    t.log(`boot to bus answering on 127.0.0.1:${vm.busPort}: ${(busMs / 1000).toFixed(1)} s`);
    const ready = await vm.busReady(minutes(2));
    t.log(`guest: bus ready ${ready.atSec} s after the kernel started; memory used ${ready.usedMiB} of ${ready.totalMiB} MiB`);

    // anonymous clients are the read-only monitor user of the generated config
    nc = await connect({ servers: `127.0.0.1:${vm.busPort}`, name: 'iso-boot-test', reconnect: false });
    t.is(nc.info?.server_name, 'sealkit-node');
    t.true(nc.info?.jetstream, 'JetStream is on');
    const rtt = await nc.rtt();
    t.log(`round trip through QEMU: ${rtt} ms`);

    // the status stream reports the server's -ERR with its code
    const denied = new Promise<string | undefined>((resolve) => {
      void (async () => {
        for await (const s of nc!.status()) {
          if (s.type === 'error') resolve(String(s.data));
        }
      })();
      setTimeout(() => resolve(undefined), 5000);
    });
    nc.publish('audit.denial', new TextEncoder().encode('{}'));
    await nc.flush();
    t.is(await denied, ErrorCode.PermissionsViolation, 'an anonymous client must not be able to publish audit events');

    if (existsSync(join(repoRoot, 'dist', 'services', 'cli', 'main.js'))) {
      const jsm = await nc.jetstreamManager();
      const info = await jsm.streams.info(streams.audit.name);
      t.deepEqual(info.config.subjects, [...streams.audit.subjects], 'the onboot step bus-init created the audit stream');
    }

    const { totalMiB, usedMiB, running } = await vm.settled(minutes(3));
    t.log(`guest after 60 s: memory used ${usedMiB} of ${totalMiB} MiB; running: ${running.join(' ')}`);
    t.true(running.includes('nats-server'), 'nats-server runs as a service');
    // whether each sealkit service stays up is for the end-to-end tests
    const down = manifest.images.services.map((s) => s.name).filter((n) => !running.includes(n));
    if (down.length) t.log(`in the image but not running at that moment: ${down.join(', ')}`);

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
    await nc?.close();
    const console = vm.console();
    const how = await vm.powerOff();
    t.log(`power off: ${how}`);
    t.is(how, 'acpi', 'the node powers off from the ACPI button');
    t.regex(console, /sealkit: onboot done/);
    const restarts = console.match(/sealkit: \S+ stopped; restarting[^\n]*(\n  \|[^\n]*)*/g) ?? [];
    t.deepEqual(restarts, [], 'no service stops and restarts while the node boots and settles');
  }
});
