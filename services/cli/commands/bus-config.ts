import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { SealkitError } from '../../lib/errors.ts';
import { stateDir } from '../../lib/config.ts';
import { generateCreds, readCreds, serverConfig, writeCreds } from '../../lib/natsconf.ts';
import { writeFileAtomic } from '../../lib/atomic.ts';
import { exists, none, type Command } from './common.ts';

export const busConfig: Command = {
  name: 'bus config',
  summary: 'write bus credentials and nats-server.conf (once)',
  usage: `usage: sealkit bus config [--state DIR] [--port N] [--force]

Writes <state>/bus/creds/<user>.json for every bus user and
<state>/bus/nats-server.conf. Existing credentials are kept unless --force.

options:
  --state DIR   state directory (default $SEALKIT_STATE or ./state of the checkout)
  --port N      the port nats-server listens on (default 4222)
  --force       new credentials for every user
  -h, --help    this help
`,
  options: { state: { type: 'string' }, port: { type: 'string' }, force: { type: 'boolean' } },
  async run(o, positionals) {
    none(positionals, 'bus config');
    if (o.state) process.env.SEALKIT_STATE = o.state as string;
    const port = o.port === undefined ? 4222 : Number(o.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new SealkitError('SEALKIT_BAD_REQUEST', `bus config: --port "${o.port}" is not a TCP port (1-65535)`);
    const dir = join(stateDir(), 'bus');
    let creds = generateCreds();
    if (!o.force && (await exists(join(dir, 'creds', 'admin.json')))) {
      const kept: typeof creds = {};
      for (const user of Object.keys(creds)) {
        const file = join(dir, 'creds', `${user}.json`);
        kept[user] = (await exists(file)) ? await readCreds(file) : creds[user];
      }
      creds = kept;
    }
    await writeCreds(join(dir, 'creds'), creds);
    await mkdir(dir, { recursive: true });
    await writeFileAtomic(join(dir, 'nats-server.conf'), serverConfig({ creds, storeDir: join(dir, 'jetstream'), port }), 0o600);
    process.stdout.write(`bus credentials: ${join(dir, 'creds')}\nnats-server config: ${join(dir, 'nats-server.conf')}\n`);
    return 0;
  },
};
