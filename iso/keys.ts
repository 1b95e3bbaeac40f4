// Creates what the node image needs from the build host's state dir, when it
// is missing: the bootstrap trust (and the admin key it names), one bus
// credential per user, and the node's nats-server config. Existing keys,
// trust and credentials are never replaced (an image built later must still
// accept the same admin key); the config is regenerated from the credentials.
//
//   node --import tsx iso/keys.ts        (make keys)
//   SEALKIT_STATE=/elsewhere node --import tsx iso/keys.ts
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import YAML from 'yaml';
import { stateDir } from '../services/lib/config.ts';
import { generateKey, writeKeyFiles, readSecretKey } from '../services/lib/sign.ts';
import { busUsers, generateCreds, writeCreds, readCreds, serverConfig, type BusCreds } from '../services/lib/natsconf.ts';
import { writeFileAtomic } from '../services/lib/atomic.ts';
import { ensureEventKey } from '../services/lib/eventsig.ts';
import { nodeName } from '../services/lib/envelope.ts';

export interface NodeKeys {
  state: string;
  created: string[];
}

// The guest's nats-server: all interfaces (QEMU forwards the host's port to
// 10.0.2.15:4222), JetStream on the node's RAM-backed /var (a limit, not a
// reservation: it must cover the streams' max_bytes, see services/lib/streams.ts).
export const guestNats = { host: '0.0.0.0', port: 4222, storeDir: '/var/lib/nats', serverName: 'sealkit-node', maxFileStore: '1GB' };

export async function ensureNodeKeys(state = stateDir(), adminId = process.env.SEALKIT_ADMIN_KEY_ID ?? 'admin'): Promise<NodeKeys> {
  const created: string[] = [];

  // The image needs only the trust file. Its admin key may live elsewhere
  // (an operator's machine): a key is made here only when there is neither a
  // trust file nor a key, where `sealkit keygen` would put it.
  const trust = join(state, 'trust.yaml');
  const adminBase = join(state, 'keys', adminId);
  if (!existsSync(trust)) {
    if (!existsSync(`${adminBase}.key`)) {
      await writeKeyFiles(generateKey(adminId), adminBase);
      created.push(`${adminBase}.key`, `${adminBase}.pub`);
    }
    const key = await readSecretKey(`${adminBase}.key`);
    await writeFileAtomic(trust, YAML.stringify({ keys: [{ id: key.id, ed25519: key.ed25519 }] }));
    created.push(trust);
  }

  const credsDir = join(state, 'bus', 'creds');
  const missing = busUsers.filter((u) => !existsSync(join(credsDir, `${u}.json`)));
  if (missing.length > 0) {
    const fresh = generateCreds();
    await writeCreds(credsDir, Object.fromEntries(missing.map((u) => [u, fresh[u]])));
    created.push(...missing.map((u) => join(credsDir, `${u}.json`)));
  }
  const creds: Record<string, BusCreds> = {};
  for (const u of busUsers) creds[u] = await readCreds(join(credsDir, `${u}.json`));

  // the node's event-signing key (services make it on first start otherwise)
  const events = await ensureEventKey(state, nodeName());
  if (events.created) created.push(events.path);

  const conf = join(state, 'iso', 'nats-server.conf');
  const text = serverConfig({ creds, ...guestNats });
  const old = existsSync(conf) ? await readFile(conf, 'utf8') : undefined;
  if (old !== text) {
    await writeFileAtomic(conf, text, 0o600);
    created.push(conf);
  }
  return { state, created };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { state, created } = await ensureNodeKeys();
  if (created.length === 0) console.log(`keys: everything is in place in ${state}`);
  for (const f of created) console.log(`keys: wrote ${f}`);
}
