import test from 'ava';
import { bootVm, ensureTestCaseIso } from './helpers/qemu.ts';

// Kernel IMA appraisal really enforces in the node's kernel: with
// ima_appraise=enforce and one policy written at boot, a file whose
// security.ima does not match its content cannot be opened (EACCES) and the
// kernel logs type=1800 cause="invalid-hash". The guest side is the test
// case test/cases/ima-kernel (its own image: the node's never has it).

test('IMA appraisal refuses a tampered file on the container store and through overlayfs', async (t) => {
  t.timeout(20 * 60_000);
  const iso = await ensureTestCaseIso('ima-kernel', (l) => t.log(l));
  const vm = await bootVm({ kernel: iso.kernel, initrd: iso.initrd, append: iso.cmdline });
  let out = '';
  try {
    await vm.waitFor(/IMA-KERNEL (done|skip)/, 8 * 60_000);
    out = vm.console();
  } finally {
    await vm.powerOff();
  }
  const lines = out.split(/\r?\n/).filter((l) => l.includes('IMA-KERNEL')).map((l) => l.slice(l.indexOf('IMA-KERNEL') + 11));
  t.log(lines.join('\n'));
  const has = (s: string) => t.true(lines.some((l) => l.startsWith(s)), `expected "${s}"`);

  has('policy written');
  has('policy file gone after the write'); // one write per boot
  has('second write refused');
  // ext4, named by fsuuid
  has('read ext4-good allowed');
  has("read ext4-bad denied: cat: can't open '/run/imatest/ext4/bad': Permission denied");
  has('read ext4-none denied');
  // overlayfs (how containerd presents a container rootfs), named by fsmagic
  has('read overlay-good allowed');
  has('read overlay-bad denied');
  has('read overlay-none denied');
  // the same tampered file outside the policy's scope is not appraised
  has('read tmpfs-bad-direct allowed');
  t.true(
    lines.some((l) => /kmsg .*audit: type=1800 .*op=appraise_data cause=invalid-hash comm="cat" name="\/run\/imatest\/ext4\/bad" dev="loop\d+"/.test(l)),
    'the kernel logs the denial as type=1800 cause="invalid-hash"',
  );
  t.true(lines.some((l) => /kmsg .*type=1800 .*cause=missing-hash .*name="\/run\/imatest\/merged\/none" dev="overlay"/.test(l)));
});
