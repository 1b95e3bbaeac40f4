// The memory bench's peer: a bare node process that imports nats.js and
// connects to the same server as the services, then idles.
import { connect } from 'nats';

const nc = await connect({ servers: process.env.SEALKIT_NATS_URL, user: process.env.PEER_USER, pass: process.env.PEER_PASS, name: 'bench-peer' });
console.log(JSON.stringify({ msg: 'started' }));
process.on('SIGTERM', () => void nc.drain().then(() => process.exit(0)));
