import test from 'ava';
import { commands, groups } from '../services/cli/commands/index.ts';
import { sealkit } from './helpers/cli.ts';

// Every command parses its own options: help at every level, and an option
// another command takes is an error naming the option and the command.

test('sealkit --help, -h and no arguments list every command', async (t) => {
  for (const args of [['--help'], ['-h'], ['help']]) {
    const r = await sealkit(args);
    t.is(r.code, 0, r.stderr);
    for (const c of commands) t.true(r.stdout.includes(`  ${c.name} `), `${args[0]} lists ${c.name}`);
  }
  const bare = await sealkit([]);
  t.is(bare.code, 0);
  t.regex(bare.stdout, /usage: sealkit <command>/);
});

test('every group answers --help with its commands, and no subcommand is a usage error', async (t) => {
  t.deepEqual(groups.sort(), ['bus', 'fleet', 'hub', 'ipe', 'policy']);
  for (const g of groups) {
    for (const flag of ['--help', '-h']) {
      const r = await sealkit([g, flag]);
      t.is(r.code, 0, `${g} ${flag}: ${r.stderr}`);
      for (const c of commands.filter((x) => x.name.startsWith(`${g} `))) t.true(r.stdout.includes(c.name), `${g} ${flag} lists ${c.name}`);
    }
    const bare = await sealkit([g]);
    t.is(bare.code, 2);
    t.regex(bare.stderr, new RegExp(`usage: sealkit ${g} <command>`));
  }
});

test('every command prints its own usage for --help and -h, even without its arguments', async (t) => {
  for (const c of commands) {
    for (const flag of ['--help', '-h']) {
      const r = await sealkit([...c.name.split(' '), flag]);
      t.is(r.code, 0, `${c.name} ${flag}: ${r.stderr}`);
      t.is(r.stdout, c.usage);
      t.true(r.stdout.startsWith(`usage: sealkit ${c.name}`));
    }
  }
});

test('an option the command does not take is refused, naming the option and the command', async (t) => {
  const r = await sealkit(['status', '--tag', 'x']);
  t.is(r.code, 2);
  t.regex(r.stderr, /"status" has no option --tag/);
  t.regex(r.stderr, /SEALKIT_BAD_REQUEST/);
  t.is(r.stdout, '');
  // each command refuses an option that only some other command has
  const all = new Set(commands.flatMap((c) => Object.keys(c.options)));
  for (const c of commands) {
    const foreign = [...all].find((o) => !(o in c.options) && !['server', 'creds'].includes(o));
    if (!foreign) continue;
    const x = await sealkit([...c.name.split(' '), `--${foreign}`, '1']);
    t.is(x.code, 2, `${c.name} --${foreign}`);
    t.true(x.stderr.includes(`"${c.name}" has no option --${foreign}`), `${c.name} --${foreign}: ${x.stderr}`);
  }
});

test('unknown commands and misplaced options are usage errors that say what to run', async (t) => {
  const unknown = await sealkit(['frobnicate']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown command "frobnicate"; run "sealkit --help"/);
  const sub = await sealkit(['policy', 'frob']);
  t.is(sub.code, 2);
  t.regex(sub.stderr, /unknown command "policy frob"; run "sealkit policy --help"/);
  const first = await sealkit(['--json', 'status']);
  t.is(first.code, 2);
  t.regex(first.stderr, /the command comes first/);
  const timeout = await sealkit(['status', '--timeout', 'soon']);
  t.is(timeout.code, 2);
  t.regex(timeout.stderr, /--timeout "soon" is not a positive number/);
});
