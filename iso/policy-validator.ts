import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import standalone from 'ajv/dist/standalone/index.js';
import { repoRoot } from '../services/lib/config.ts';
import { writeFileAtomic } from '../services/lib/atomic.ts';

// Every service and every CLI call checks policies, and compiling the schema
// with ajv at module load cost 0.15 s and 7 MB per process (more under QEMU
// TCG). So ajv compiles policy.schema.json here, once, into a plain module
// that is committed; test/policy-schema.test.ts regenerates it in memory and
// fails when the committed one no longer matches the schema.

const schemaPath = join(repoRoot, 'services', 'lib', 'policy.schema.json');
export const generatedPath = join(repoRoot, 'services', 'lib', 'policy-validate.gen.ts');

// patternErrorMessage and errorMessage are the hints VS Code and
// yaml-language-server show for a failed check; declared so that strict mode
// knows them. The node's messages reuse them (services/lib/policy-schema.ts).
export const SCHEMA_HINTS = ['patternErrorMessage', 'errorMessage'];

// ownProperties: a field counts only if the mapping itself has it. verbose:
// errors carry their schema, whose hints the node's message reuses. The file
// is checked against the draft-07 meta-schema by the test, not here.
const OPTIONS = { strict: true, allowUnionTypes: true, ownProperties: true, verbose: true, validateSchema: false, keywords: SCHEMA_HINTS };

const HEADER = `// Generated from policy.schema.json by \`make schema\` (iso/policy-validator.ts): do not edit.
// test/policy-schema.test.ts fails when this file no longer matches the schema.
// @ts-nocheck
import type { ValidateFunction } from 'ajv';
import schema0 from './policy.schema.json' with { type: 'json' };
`;

export function policyValidatorSource(): string {
  const text = readFileSync(schemaPath, 'utf8');
  const schema = JSON.parse(text);
  const ajv = new Ajv({ ...OPTIONS, code: { source: true, esm: true, lines: true } });
  const [strict, exportNamed, exportDefault, root, ...body] = standalone.default(ajv, ajv.compile(schema)).split('\n');
  // The root schema is policy.schema.json itself: imported rather than
  // inlined, so that the file editors read ships with the package (tsc emits
  // what is imported) and the errors' parentSchema is that file's content.
  const expected = ['"use strict";', 'export const validate = validate0;', 'export default validate0;', `const schema0 = ${JSON.stringify(schema)};`];
  const got = [strict, exportNamed, exportDefault, root];
  const differs = expected.findIndex((line, i) => line !== got[i]);
  if (differs >= 0) throw new Error(`ajv's standalone code for ${schemaPath} starts differently than expected at line ${differs + 1} (${got[differs]?.slice(0, 80)}); update iso/policy-validator.ts for this ajv version`);
  return `${HEADER}${runtimeRequire(body)}${body.join('\n')}\nexport const matchesPolicySchema = validate0 as ValidateFunction;\n`;
}

// Some keywords (minLength, uniqueItems, a const object) make ajv's code
// require its run-time helpers, which an ES module can only do through
// createRequire; and the installed package must then carry ajv.
function runtimeRequire(body: string[]): string {
  const helpers = body.flatMap((line) => [...line.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]));
  if (helpers.length === 0) return '';
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
  if (!pkg.dependencies?.ajv) throw new Error(`the policy validator now needs ${helpers.join(', ')} at run time: move ajv from devDependencies to dependencies in package.json, then run make schema again`);
  return "import { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n";
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await writeFileAtomic(generatedPath, policyValidatorSource());
  console.log(`wrote ${generatedPath}`);
}
