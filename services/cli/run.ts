import { parseArgs } from 'node:util';
import { SealkitError, asSealkitError } from '../lib/errors.ts';
import { busOptions, type Command } from './commands/common.ts';

// One command, its arguments after its name: its --help, its options parsed.
// Apart from main.ts so that an entry for one command (bus-init.ts) loads
// that command's modules only.
const wantsHelp = (args: string[]) => {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((a) => a === '--help' || a === '-h');
};

export async function runCommand(cmd: Command, rest: string[]): Promise<number> {
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

export function exitWith(run: Promise<number>): void {
  run.then(
    (code) => process.exit(code),
    (err) => {
      const e = asSealkitError(err);
      process.stderr.write(`sealkit: ${e.message}${e.code !== 'SEALKIT_INTERNAL' ? ` [${e.code}]` : ''}\n`);
      process.exit(e.code === 'SEALKIT_BAD_REQUEST' ? 2 : 1);
    },
  );
}
