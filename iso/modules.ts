import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

// Kernel modules the initrd must carry, with everything they depend on
// (modules.dep), in an order insmod can load them: dependencies first.

const norm = (name: string) => name.replace(/-/g, '_');
const modName = (path: string) => norm(basename(path).replace(/\.ko(\.(xz|zst|gz))?$/, ''));

export async function moduleClosure(moduleDir: string, wanted: string[]): Promise<string[]> {
  const dep = await readFile(join(moduleDir, 'modules.dep'), 'utf8');
  const byName = new Map<string, { path: string; deps: string[] }>();
  for (const line of dep.split('\n')) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const path = line.slice(0, i);
    const deps = line.slice(i + 1).trim().split(/\s+/).filter(Boolean);
    byName.set(modName(path), { path, deps });
  }
  const builtin = new Set(
    (await readFile(join(moduleDir, 'modules.builtin'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(modName),
  );

  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string, chain: string[]) => {
    if (seen.has(name)) return;
    const m = byName.get(name);
    if (!m) {
      if (builtin.has(name)) return; // built into the kernel: nothing to load
      throw new Error(`kernel module ${name} (wanted by ${chain.join(' <- ') || 'iso/parts/kernel/offline.yml'}) is not in ${moduleDir}`);
    }
    seen.add(name);
    for (const d of m.deps) visit(modName(d), [name, ...chain]);
    order.push(m.path);
  };
  for (const w of wanted) visit(norm(w), []);
  return order;
}
