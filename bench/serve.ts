import { readFileSync } from 'node:fs';
import { startHttp } from '../test/helpers/http.ts';

// The loopback HTTP server of the test suite, in its own process so that
// serving bytes does not compete with the code under measurement for its
// event loop. Arguments: /path=file … ; prints the origin, stops on SIGTERM.
const web = await startHttp();
for (const arg of process.argv.slice(2)) {
  const eq = arg.indexOf('=');
  web.route(arg.slice(0, eq), { body: readFileSync(arg.slice(eq + 1)) });
}
process.stdout.write(`${web.origin}\n`);
process.on('SIGTERM', () => void web.close().then(() => process.exit(0)));
