import { parseArgs } from 'node:util';
import { SealkitError } from '../lib/errors.ts';
import { type Command } from './commands/common.ts';
import { commands, groups } from './commands/index.ts';
import { exitWith, runCommand } from './run.ts';

// The sealkit CLI: one module per command (its usage, its options, its run);
// this file only finds the command and parses its options.
const usage = `sealkit — drive a sealkit node over its bus

usage: sealkit <command> [options]      sealkit <command> --help for its options

commands:
${commands.map((c) => `  ${c.name.padEnd(14)} ${c.summary}`).join('\n')}

Commands that talk to the node take --server URL (default $SEALKIT_NATS_URL or
nats://127.0.0.1:4222) and --creds FILE (default <state>/bus/creds/admin.json;
read-only commands fall back to anonymous access). Commands that wait take
--timeout SECONDS. Signature formats: docs/signatures.md.
`;

function groupUsage(group: string): string {
  const subs = commands.filter((c) => c.name.startsWith(`${group} `));
  return `usage: sealkit ${group} <command> [options]\n\ncommands:\n${subs.map((c) => `  ${c.name.padEnd(14)} ${c.summary}`).join('\n')}\n\n"sealkit ${group} <command> --help" for its options.\n`;
}

const wantsHelp = (args: string[]) => {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((a) => a === '--help' || a === '-h');
};

async function main(argv: string[]): Promise<number> {
  const [first, second] = argv;
  if (!first || first === '--help' || first === '-h' || first === 'help') {
    process.stdout.write(usage);
    return 0;
  }
  if (first.startsWith('-')) throw new SealkitError('SEALKIT_BAD_REQUEST', `"${first}" is not a command; the command comes first, e.g. "sealkit status ${first}" — run "sealkit --help"`);
  let cmd: Command | undefined;
  let rest: string[];
  if (groups.includes(first)) {
    if (!second || second.startsWith('-')) {
      if (!second) {
        process.stderr.write(groupUsage(first));
        return 2;
      }
      if (wantsHelp([second])) {
        process.stdout.write(groupUsage(first));
        return 0;
      }
    }
    cmd = commands.find((c) => c.name === `${first} ${second}`);
    if (!cmd) throw new SealkitError('SEALKIT_BAD_REQUEST', `unknown command "${first} ${second}"; run "sealkit ${first} --help"`);
    rest = argv.slice(2);
  } else {
    cmd = commands.find((c) => c.name === first);
    if (!cmd) throw new SealkitError('SEALKIT_BAD_REQUEST', `unknown command "${first}"; run "sealkit --help"`);
    rest = argv.slice(1);
  }
  return runCommand(cmd, rest);
}

exitWith(main(process.argv.slice(2)));
