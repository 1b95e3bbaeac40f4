// Watchdog thread of a fuzz campaign (see harness.ts). It reads the input
// being run from shared memory; when one runs past the target's timeout, or
// the process grows past the RSS limit, it saves the input and kills the
// process — a hang or a blow-up cannot be caught from the stuck thread.
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { workerData } from 'node:worker_threads';

const { shared, out, target, rssLimitMB } = workerData;
const meta = new Float64Array(shared, 0, 4);
const bytes = new Uint8Array(shared, 64);

function dump(kind, detail) {
  const input = Buffer.from(bytes.subarray(0, meta[2]));
  const id = createHash('sha256').update(input).digest('hex').slice(0, 16);
  writeFileSync(join(out, `${kind}-${id}.bin`), input);
  writeFileSync(join(out, `${kind}-${id}.txt`), `${kind}: ${detail}\n`);
  process.stderr.write(`[${target}] ${kind} ${kind}-${id}.bin: ${detail}\n`);
  process.kill(process.pid, 'SIGKILL');
}

setInterval(() => {
  const rss = process.memoryUsage.rss() / 2 ** 20;
  if (meta[0] === 1 && rss > rssLimitMB) dump('oom', `rss ${Math.round(rss)} MiB > ${rssLimitMB} MiB while running a ${meta[2]}-byte input`);
  if (meta[0] === 1 && Date.now() - meta[1] > meta[3]) dump('hang', `one input ran longer than ${meta[3]} ms (${meta[2]} bytes)`);
}, 100);
