import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../services/lib/config.ts';
import { composeIpePolicy, signIpePolicy } from '../services/ima/ipe.ts';
import { verityDigestOfFile } from '../services/ima/verity.ts';
import { bootKernel, buildInitrd, debianKernel, EXT4_VIRTIO_MODULES, guestInit, NODE_LIBS, nodeInGuest, OVMF_CODE, OVMF_VARS, ovmfWithOwner, ownerCert, results } from '../test/helpers/kernel-vm.ts';
import { fmt, median, MiB, row, sh, type BenchContext, type Row } from './measure.ts';

// The IPE + fs-verity tier's costs, measured where they can be: this host's
// kernel has no fs-verity, so in QEMU (TCG, 2 vCPUs) with Debian's 6.12
// kernel under OVMF, its owner certificate in db, and a store made like the
// node's (ext4 -b 4096 -O verity). In one boot:
//  - labelling a tree the way the ima service does under ipe-verity
//    (security.ima labels, then fs-verity on every file: the compiled
//    services run by Node in the guest) against `fsverity enable` over an
//    identical copy, one process per file, two at a time as the two vCPUs
//    allow; the two copies are labelled in turn, peer first, each cold;
//  - exec of a static binary with fs-verity against the same bytes without,
//    alternated in rounds, then the fs-verity one again under the active
//    owner-signed IPE policy that lists it (the plain one is refused then).
// Absolute times are a TCG guest's (several times a real machine's); the
// ratios are what the rows compare.

const G = 'verity';
const EXECS = 200; // per round
const ROUNDS = 5;
const LIBS = ['/lib/x86_64-linux-gnu/libfsverity.so.0', '/lib/x86_64-linux-gnu/libcrypto.so.3', ...NODE_LIBS];

// centiseconds since boot (busybox date has no %N; each timed span is seconds)
const INIT = `${guestInit({ mounts: 'mount -t securityfs securityfs /sys/kernel/security', modules: EXT4_VIRTIO_MODULES, disk: '/dev/vda' })}
mkdir -p /s; mount -t ext4 /dev/vda /s || { echo "RESULT error cannot mount the store"; poweroff -f; }
cs() { cut -d' ' -f1 /proc/uptime | tr -d .; }
sync; echo 3 > /proc/sys/vm/drop_caches
a=$(cs); find /s/peer -type f -print0 | xargs -0 -n 1 -P 2 fsverity enable --hash-alg=sha256 --block-size=4096 || echo "RESULT error fsverity enable failed"; b=$(cs)
echo "RESULT peer files=$(find /s/peer -type f | wc -l) cs=$((b - a))"
sync; echo 3 > /proc/sys/vm/drop_caches
/s/app/node /s/app/dist/bench/verity-guest.js /s/sealkit 2>&1 | tail -5
fsverity measure /s/x/verity.bb >/dev/null 2>&1 || fsverity enable /s/x/verity.bb
loop() { i=0; while [ $i -lt ${EXECS} ]; do $1; i=$((i + 1)); done; }
r=0; while [ $r -lt ${ROUNDS} ]; do
  a=$(cs); loop /s/x/plain/true; b=$(cs); loop /s/x/verity/true; c=$(cs)
  echo "RESULT exec-round-$r plain_cs=$((b - a)) verity_cs=$((c - b))"
  r=$((r + 1))
done
cat /p/policy.p7b > /sys/kernel/security/ipe/new_policy && echo 1 > /sys/kernel/security/ipe/policies/sealkit/active && echo "RESULT ipe active $(cat /sys/kernel/security/ipe/policies/sealkit/version)"
/s/x/plain/true && echo "RESULT error the plain binary ran under the policy"
r=0; while [ $r -lt ${ROUNDS} ]; do
  a=$(cs); loop /s/x/verity/true; b=$(cs)
  echo "RESULT exec-ipe-round-$r verity_cs=$((b - a))"
  r=$((r + 1))
done
echo "RESULT done"
poweroff -f
`;

const kv = (s: string | undefined): Record<string, number> => Object.fromEntries((s ?? '').split(' ').map((p) => p.split('=')).filter((p) => p.length === 2).map(([k, v]) => [k, Number(v)]));

export async function verity(ctx: BenchContext): Promise<Row[]> {
  const k = debianKernel(/^6\.12\.\S+-amd64$/);
  const missing = [!k && 'a Debian 6.12 kernel', ...[OVMF_CODE, OVMF_VARS, '/usr/bin/virt-fw-vars', '/usr/bin/fsverity', '/usr/bin/busybox', ...LIBS].filter((f) => !existsSync(f)),
    !existsSync(join(repoRoot, 'dist/bench/verity-guest.js')) && 'dist/bench/verity-guest.js (make build)'].filter(Boolean);
  if (missing.length || !k) return [row(G, { row: 'IPE + fs-verity in the 6.12 guest', sealkit: '—', peer: '—', ratio: '—', target: '—', status: 'FAIL', note: `missing ${missing.join(', ')}: run make deps build` })];

  const sources = ctx.quick ? ['/usr/lib/python3'] : ['/usr/lib/python3', '/usr/lib/python3.11'];
  const s = join(ctx.tmp, 's');
  for (const d of ['sealkit', 'peer', 'x/plain', 'x/verity']) mkdirSync(join(s, d), { recursive: true });
  ctx.log(`verity: copying ${sources.join(' ')} twice, the compiled services and Node into the store`);
  for (const d of ['sealkit', 'peer']) await sh('cp', ['-a', ...sources, join(s, d)]);
  nodeInGuest(s, repoRoot);
  // busybox picks its applet by the name it is run as
  await sh('cp', ['/usr/bin/busybox', join(s, 'x/plain.bb')]);
  await sh('cp', ['/usr/bin/busybox', join(s, 'x/verity.bb')]);
  symlinkSync('../plain.bb', join(s, 'x/plain/true'));
  symlinkSync('../verity.bb', join(s, 'x/verity/true'));
  const du = Number((await sh('du', ['-sb', s])).split('\t')[0]);
  const img = join(ctx.tmp, 's.img');
  await sh('mkfs.ext4', ['-q', '-b', '4096', '-O', 'verity', '-d', s, img, `${Math.ceil((du * 1.4) / MiB) + 128}M`]);
  const tree = kv((await sh('sh', ['-c', `find '${join(s, 'sealkit')}' -type f | wc -l | sed 's/^/files=/'; du -sb '${join(s, 'sealkit')}' | cut -f1 | sed 's/^/bytes=/'`])).replace('\n', ' '));

  // the owner's certificate in db, and a policy listing the fs-verity binary
  const p = join(ctx.tmp, 'p');
  mkdirSync(p);
  const owner = ownerCert(p, 'owner');
  writeFileSync(join(p, 'policy.txt'), composeIpePolicy({ serial: 1, digests: [await verityDigestOfFile(join(s, 'x/verity.bb'))] }));
  await signIpePolicy(join(p, 'policy.txt'), owner.cert, owner.key, join(p, 'policy.p7b'));
  const ovmf = ovmfWithOwner(ctx.tmp, owner.cert);

  const files: Record<string, string> = { '/usr/bin/fsverity': '/usr/bin/fsverity', [join(p, 'policy.p7b')]: '/p/policy.p7b' };
  for (const l of LIBS) files[l] = l;
  const initrd = buildInitrd(ctx.tmp, { init: INIT, modulesDir: k.modules, modules: EXT4_VIRTIO_MODULES, files });

  ctx.log(`verity: booting ${k.version} under OVMF (TCG in one host thread, 2 vCPUs) on a ${(du / MiB).toFixed(0)} MiB store`);
  const load = loadavg()[0];
  const out = await bootKernel(['-m', '2048', '-smp', '2', ...ovmf,
    '-kernel', k.kernel, '-initrd', initrd, '-append', 'console=ttyS0 panic=-1 loglevel=1',
    '-drive', `file=${img},format=raw,if=virtio`], 40 * 60_000);
  const r = results(out);
  if (r.error || r.done === undefined) throw new Error(`the guest did not finish: ${r.error ?? ''} ${out.slice(-1500).replace(/\s+/g, ' ')}`);

  const peer = kv(r.peer);
  const ours = kv(r.sealkit);
  if (ours.files !== tree.files || peer.files !== tree.files) throw new Error(`file counts differ: tree ${tree.files}, sealkit ${ours.files}, peer ${peer.files}`);
  const oursMs = ours.label_ms + ours.verity_ms;
  const peerMs = peer.cs * 10;
  const rounds = Object.entries(r).filter(([key]) => key.startsWith('exec-round-')).map(([, v]) => kv(v));
  const ipeRounds = Object.entries(r).filter(([key]) => key.startsWith('exec-ipe-round-')).map(([, v]) => kv(v));
  const us = (cs: number) => (cs * 10_000) / EXECS; // µs per exec
  const plain = median(rounds.map((x) => us(x.plain_cs)));
  const verityExec = median(rounds.map((x) => us(x.verity_cs)));
  const ipeExec = median(ipeRounds.map((x) => us(x.verity_cs)));
  const what = `${tree.files} files, ${(tree.bytes / MiB).toFixed(0)} MiB (${sources.join(' + ')})`;
  const note = `${k.version} in QEMU TCG, 2 vCPUs, host load ${load.toFixed(1)}`;
  return [
    row(G, {
      row: `label + fs-verity enable a tree in the guest, ${what}`,
      sealkit: fmt.ms(oursMs),
      peer: fmt.ms(peerMs),
      ratio: `${fmt.x(peerMs / oursMs)} faster`,
      target: '—',
      status: 'info',
      note: `sealkit = security.ima labels ${ours.label_ms} ms + fs-verity ${ours.verity_ms} ms (the ima service's code, run by Node in the guest); peer = \`fsverity enable\` per file, 2 at a time; ${note}`,
    }),
    row(G, {
      row: `exec of a static binary with fs-verity vs without (median of ${ROUNDS} rounds of ${EXECS})`,
      sealkit: `${verityExec.toFixed(0)} µs`,
      peer: `${plain.toFixed(0)} µs`,
      ratio: fmt.x(verityExec / plain),
      target: '—',
      status: 'info',
      note,
    }),
    row(G, {
      row: 'exec of the fs-verity binary under the active IPE policy vs a plain one without a policy',
      sealkit: `${ipeExec.toFixed(0)} µs`,
      peer: `${plain.toFixed(0)} µs`,
      ratio: fmt.x(ipeExec / plain),
      target: '—',
      status: 'info',
      note: `${r.ipe ?? 'policy not active'}; the plain binary is refused then; ${note}`,
    }),
  ];
}
