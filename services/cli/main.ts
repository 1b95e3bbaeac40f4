import { parseArgs } from 'node:util';
import { SealkitError, asSealkitError } from '../lib/errors.ts';
import { busOptions, type Command } from './commands/common.ts';
import { commands, groups } from './commands/index.ts';

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
  if (wantsHelp(rest)) {
    process.stdout.write(cmd.usage);
    return 0;
  }
  const options = { ...cmd.options, ...(cmd.bus ? busOptions : {}), help: { type: 'boolean' as const, short: 'h' } };
  let parsed;
  try {
    parsed = parseArgs({ args: rest, allowPositionals: true, strict: true, options });
  } catch (err) {
    throw usageError(err, cmd, Object.keys(options));
  }
  return cmd.run(parsed.values, parsed.positionals);
}

// parseArgs' own messages name neither the command nor what it takes.
function usageError(err: unknown, cmd: Command, known: string[]): SealkitError {
  const code = (err as { code?: string }).code ?? '';
  const message = (err as Error).message;
  const opt = /'([^']+)'/.exec(message)?.[1] ?? '';
  const takes = known.filter((k) => k !== 'help').map((k) => `--${k}`).join(', ') || 'no options';
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    return new SealkitError('SEALKIT_BAD_REQUEST', `"${cmd.name}" has no option ${opt.split(/[ =]/)[0]}; it takes ${takes} (see "sealkit ${cmd.name} --help")`);
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    return new SealkitError('SEALKIT_BAD_REQUEST', `"${cmd.name}": ${message.replace(/\.$/, '')} (see "sealkit ${cmd.name} --help")`);
  }
  return asSealkitError(err);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    const e = asSealkitError(err);
    process.stderr.write(`sealkit: ${e.message}${e.code !== 'SEALKIT_INTERNAL' ? ` [${e.code}]` : ''}\n`);
    process.exit(e.code === 'SEALKIT_BAD_REQUEST' ? 2 : 1);
  },
);
