import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hubMemberConfig, newHubState } from '../services/lib/hubconf.ts';
import { freePorts, kill, launch, waitForPort } from './helpers/nats.ts';

// nats-server tells every leaf that connects the member's own leaf URL, and
// the node dials it from then on, besides the addresses it was enrolled
// with. A member that listens on another address than the one its nodes
// are given (behind a NAT: --listen) must name the given one, or its nodes
// dial an address they cannot reach, or one around a network they were
// meant to use.

function leafInfo(port: number): Promise<{ leafnode_urls?: string[] }> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port });
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\r\n');
      if (nl < 0) return;
      s.destroy();
      const line = buf.slice(0, nl);
      if (!line.startsWith('INFO ')) reject(new Error(`not an INFO line: ${line}`));
      else resolve(JSON.parse(line.slice(5)) as { leafnode_urls?: string[] });
    });
    s.on('error', reject);
  });
}

test('a hub member tells its leafs the address its nodes were enrolled with, not the one it listens on', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-advertise-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const port = await freePorts(3);
  const leafPort = port + 2;
  // the nodes are given "localhost"; the member binds 127.0.0.1
  const hub = newHubState([{ name: 'hub1', host: 'localhost', port, clusterPort: port + 1, leafPort }]);
  const conf = join(dir, 'hub1.conf');
  await writeFile(conf, hubMemberConfig(hub, 'hub1', { storeDir: join(dir, 'js'), listen: '127.0.0.1' }));
  const proc = await launch(conf);
  t.teardown(() => kill(proc));
  await waitForPort(port);
  const info = await leafInfo(leafPort);
  t.deepEqual(info.leafnode_urls, [`localhost:${leafPort}`]);
});
