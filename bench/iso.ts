import { bootVm, ensureIso } from '../test/helpers/qemu.ts';
import { fmt, row, type BenchContext, type Row } from './measure.ts';

// The node image: size of the offline ISO (built by iso/build.ts through the
// test helper, reused when its inputs have not changed) and the time from
// starting QEMU (TCG, no KVM here) to the node's nats-server answering on the
// forwarded port.

const G = 'iso';

export async function iso(ctx: BenchContext): Promise<Row[]> {
  let built: Awaited<ReturnType<typeof ensureIso>>;
  try {
    ctx.log('iso: ensuring the test ISO (builds it when stale)');
    built = await ensureIso((l) => ctx.log(l));
  } catch (err) {
    const note = `ISO not built: ${(err as Error).message.split('\n')[0].slice(0, 200)}`;
    return [row(G, { row: 'ISO size / boot to bus ready', sealkit: 'n/a', peer: '—', ratio: '—', target: '—', status: 'n/a', note })];
  }
  const rows: Row[] = [
    row(G, { row: 'ISO size (iso-bios, kernel + initrd)', sealkit: `${(built.bytes / 1e6).toFixed(1)} MB`, peer: '—', ratio: '—', target: '—', status: 'info', note: built.reused ? undefined : `built in ${built.seconds.toFixed(0)} s` }),
  ];
  ctx.log('iso: booting it in QEMU (TCG)');
  // once seen: the run ended with Node's "unsettled top-level await" (exit 13)
  // right after this line; a held timer lets waitForBus's own deadline decide
  const keep = setInterval(() => {}, 1000);
  ctx.defer(() => clearInterval(keep));
  const vm = await bootVm({ iso: built.iso });
  ctx.defer(async () => void (await vm.powerOff()));
  const busMs = await vm.waitForBus(8 * 60_000);
  const guest = await vm.busReady(60_000).catch(() => undefined);
  rows.push(row(G, {
    row: 'boot to bus ready in QEMU (TCG, -cpu max, 1 GiB): QEMU start → nats INFO on the forwarded port',
    sealkit: fmt.ms(busMs),
    peer: '—',
    ratio: '—',
    target: '—',
    status: 'info',
    note: guest ? `the guest logged "bus ready" ${guest.atSec} s after its kernel started` : undefined,
  }));
  return rows;
}
