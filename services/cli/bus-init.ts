import { busInit } from './commands/bus-init.ts';
import { exitWith, runCommand } from './run.ts';

// `sealkit bus init` alone, for the ISO's onboot step (pkg/bus-init): the
// whole CLI loads every command's modules (yaml, the policy schema: 140
// CommonJS modules against 66), which a TCG guest takes seconds over.
exitWith(runCommand(busInit, process.argv.slice(2)));
