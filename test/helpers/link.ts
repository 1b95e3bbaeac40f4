import { createConnection, createServer, type Server, type Socket } from 'node:net';

// A TCP link that can be cut, between nodes and a server on loopback: what
// a node behind a failing network sees (its connections drop, new ones are
// refused at once) while both ends keep running, then the network is back.

export interface Link {
  port: number; // where clients connect instead of the target
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startLink(targetPort: number, host = '127.0.0.1'): Promise<Link> {
  let down = false;
  const pairs = new Set<[Socket, Socket]>();
  const server: Server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ host, port: targetPort });
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, host, resolve));
  const port = (server.address() as { port: number }).port;
  const cut = () => {
    down = true;
    for (const [a, b] of pairs) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };
  return {
    port,
    cut,
    restore() {
      down = false;
    },
    close() {
      cut();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
