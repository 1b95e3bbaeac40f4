import { closeSync, openSync } from 'node:fs';

// Whether this host lets the test write into the real /dev/kmsg (root only):
// the tests that need it skip elsewhere.
export const canWriteKmsg = (() => {
  try {
    closeSync(openSync('/dev/kmsg', 'w'));
    return true;
  } catch {
    return false;
  }
})();
