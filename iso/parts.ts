import { existsSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import YAML from 'yaml';
import type { ImageConfig, ImageDefaults } from '../services/lib/rootfs/spec.ts';

// Where an image named in linuxkit.yml comes from when there is no Docker:
// linuxkit/<name> images from iso/parts/<name>/, the project's own images
// from the pkg/ directory whose build.yml names them. Each has an
// offline.yml saying which build-host files stand in for the image.

export interface OfflineFile {
  source: string;
  path: string;
  mode?: string;
}

export interface Recipe {
  image: string;
  dir: string; // the part's or package's directory
  base?: 'node' | 'busybox';
  binaries: string[]; // "/host/path" or "/host/path:/path/in/rootfs"
  files: OfflineFile[];
  modules: string[];
  defaults: ImageDefaults;
}

const recipeKeys = new Set(['base', 'binaries', 'files', 'config', 'modules']);

export function imageRepo(ref: string): { org: string; name: string; tag: string } {
  const at = ref.split('@')[0];
  const colon = at.lastIndexOf(':');
  const repo = colon > at.lastIndexOf('/') ? at.slice(0, colon) : at;
  const tag = colon > at.lastIndexOf('/') ? at.slice(colon + 1) : 'latest';
  const [org, name] = repo.includes('/') ? [repo.slice(0, repo.lastIndexOf('/')), repo.slice(repo.lastIndexOf('/') + 1)] : ['library', repo];
  return { org, name, tag };
}

async function packageDirs(repo: string, roots: string[]): Promise<Map<string, string>> {
  const dirs = new Map<string, string>();
  for (const root of roots) {
    const pkg = join(repo, root);
    if (!existsSync(pkg)) continue;
    for (const d of readdirSync(pkg).sort()) {
      const f = join(pkg, d, 'build.yml');
      if (!existsSync(f)) continue;
      const b = YAML.parse(await readFile(f, 'utf8')) as { org?: string; image?: string };
      if (b?.image) dirs.set(`${b.org ?? 'linuxkit'}/${b.image}`, join(pkg, d));
    }
  }
  return dirs;
}

// The final stage's ENTRYPOINT, CMD, ENV and WORKDIR (JSON forms only, as
// LinuxKit packages write them).
export function dockerfileDefaults(text: string, where: string): ImageDefaults {
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  let start = 0;
  lines.forEach((l, i) => {
    if (/^\s*FROM\s/i.test(l)) start = i;
  });
  const d: ImageDefaults = {};
  for (const l of lines.slice(start)) {
    const m = l.match(/^\s*(ENTRYPOINT|CMD|ENV|WORKDIR)\s+(.*)$/i);
    if (!m) continue;
    const [, op, rest] = m;
    const json = () => {
      try {
        const v = JSON.parse(rest);
        if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
      } catch {
        /* fall through */
      }
      throw new Error(`${where}: ${op} must use the JSON form ["...", ...] for the offline build`);
    };
    switch (op.toUpperCase()) {
      case 'ENTRYPOINT':
        d.entrypoint = json();
        d.cmd = undefined; // an ENTRYPOINT resets an inherited CMD
        break;
      case 'CMD':
        d.cmd = json();
        break;
      case 'WORKDIR':
        d.workdir = rest.trim();
        break;
      case 'ENV':
        for (const kv of rest.trim().match(/(\S+?)=("[^"]*"|\S+)/g) ?? []) {
          const i = kv.indexOf('=');
          d.env = [...(d.env ?? []), `${kv.slice(0, i)}=${kv.slice(i + 1).replace(/^"|"$/g, '')}`];
        }
        break;
    }
  }
  return d;
}

// pkgRoots: the folders whose */build.yml name the project's images
export async function resolveImage(repo: string, ref: string, pkgRoots = ['pkg']): Promise<Recipe> {
  const { org, name } = imageRepo(ref);
  let dir: string | undefined;
  let defaults: ImageDefaults = {};
  if (org === 'linuxkit') {
    dir = join(repo, 'iso', 'parts', name);
  } else {
    dir = (await packageDirs(repo, pkgRoots)).get(`${org}/${name}`);
    if (!dir) throw new Error(`image ${ref}: no ${pkgRoots.map((r) => `${r}/*/build.yml`).join(' or ')} has org "${org}" and image "${name}"`);
    const dockerfile = join(dir, 'Dockerfile');
    if (existsSync(dockerfile)) defaults = dockerfileDefaults(await readFile(dockerfile, 'utf8'), dockerfile);
  }
  const file = join(dir, 'offline.yml');
  if (!existsSync(file)) throw new Error(`image ${ref}: ${file} is missing, so the offline build cannot stand in for it`);
  const r = (YAML.parse(await readFile(file, 'utf8')) ?? {}) as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (!recipeKeys.has(k)) throw new Error(`${file}: unknown key "${k}" (known: ${[...recipeKeys].join(', ')})`);
  }
  if (r.base !== undefined && r.base !== 'node' && r.base !== 'busybox') throw new Error(`${file}: base must be node or busybox`);
  return {
    image: ref,
    dir,
    base: r.base as Recipe['base'],
    binaries: (r.binaries as string[] | undefined) ?? [],
    files: (r.files as OfflineFile[] | undefined) ?? [],
    modules: (r.modules as string[] | undefined) ?? [],
    defaults: { ...defaults, config: r.config as Partial<ImageConfig> | undefined },
  };
}
