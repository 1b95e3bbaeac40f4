import { decode, serve } from '../lib/bus.ts';
import { CollectSchedule, collectGraceMs } from '../lib/collect.ts';
import { trustPath } from '../lib/config.ts';
import { SealkitError } from '../lib/errors.ts';
import { PolicyFollower } from '../lib/policy-follow.ts';
import { runService } from '../lib/service.ts';
import { readTrust } from '../lib/sign.ts';
import { subjects } from '../lib/subjects.ts';
import { Fetcher } from './fetcher.ts';

// The fetcher process: follow the verified policy, fetch what it pins, and
// answer image.fetch {name} with {ok, image} or {error}.
await runService('fetcher', async ({ nc, events, log, state }) => {
  const trust = await readTrust(trustPath());
  const fetcher = new Fetcher({ dir: state, nc, events, log });
  await fetcher.init();
  const follower = new PolicyFollower(nc, trust, log);
  // in the background: a long download must not hold up the next policy
  follower.onChange((policy) => void fetcher.onPolicy(policy));
  const collection = new CollectSchedule({ graceMs: collectGraceMs(), policy: () => follower.policy, collect: (p) => fetcher.collect(p), turn: (fn) => fetcher.alone(fn), log });
  follower.onChange(() => collection.soon());

  serve(
    nc,
    subjects.image.fetch,
    async (msg) => {
      const req = decode<{ name?: unknown }>(msg.data, 'image.fetch request');
      if (typeof req?.name !== 'string') throw new SealkitError('SEALKIT_BAD_REQUEST', 'image.fetch needs {"name": "<image name from the policy>"}');
      const policy = follower.policy ?? (await follower.refresh());
      if (!policy) throw new SealkitError('SEALKIT_POLICY_NONE', 'no policy is in force; push one with "sealkit policy push" first');
      const img = policy.images.find((i) => i.name === req.name);
      if (!img) {
        throw new SealkitError('SEALKIT_IMAGE_UNKNOWN', `image "${req.name}" is not in policy serial ${policy.serial}; known: ${policy.images.map((i) => i.name).join(', ') || 'none'}`);
      }
      return { ok: true, image: await fetcher.fetch(img, policy, true) };
    },
    { log },
  );
  await follower.start();
  collection.soon();
  return { stop: () => collection.stop() };
});
