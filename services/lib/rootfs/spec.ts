// OCI runtime config (config.json). ociSpec: one onboot or service entry of
// linuxkit.yml, following what `linuxkit build` writes: LinuxKit's default
// mounts and namespaces, the image's own config (org.mobyproject.config)
// under the YAML's keys, binds as rbind mounts, devices as cgroup rules.
// runtimeSpec: the same defaults for a container started from a labelled
// rootfs in the store, which it must not be able to change.
// The ISO build (iso/) and the services share this module.

export interface Mount {
  destination?: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface Device {
  path?: string;
  type?: string;
  major?: number;
  minor?: number;
  mode?: string;
}

// The subset of LinuxKit's image keys this builder understands; anything
// else in linuxkit.yml is refused by iso/build.ts rather than ignored.
export interface ImageConfig {
  name: string;
  image: string;
  capabilities?: string[];
  'capabilities.add'?: string[];
  ambient?: string[];
  mounts?: Mount[];
  binds?: string[];
  'binds.add'?: string[];
  devices?: Device[];
  tmpfs?: string[];
  command?: string[];
  env?: string[];
  cwd?: string;
  net?: string;
  pid?: string;
  ipc?: string;
  uts?: string;
  readonly?: boolean;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  uid?: number | string;
  gid?: number | string;
  additionalGids?: Array<number | string>;
  noNewPrivileges?: boolean;
  hostname?: string;
  oomScoreAdj?: number;
  rootfsPropagation?: string;
  cgroupsPath?: string;
  sysctl?: Record<string, string>;
  rlimits?: string[];
  runtime?: { mkdir?: string[]; cgroups?: string[]; mounts?: Mount[]; interfaces?: unknown[]; bindNS?: unknown; namespace?: string };
}

export const supportedKeys = new Set([
  'name', 'image', 'capabilities', 'capabilities.add', 'ambient', 'mounts', 'binds', 'binds.add', 'devices', 'tmpfs',
  'command', 'env', 'cwd', 'net', 'pid', 'ipc', 'uts', 'readonly', 'maskedPaths', 'readonlyPaths', 'uid', 'gid',
  'additionalGids', 'noNewPrivileges', 'hostname', 'oomScoreAdj', 'rootfsPropagation', 'cgroupsPath', 'sysctl',
  'rlimits', 'runtime',
]);

// What the image itself brings: its command and environment (from the
// Dockerfile) and its runtime config label.
export interface ImageDefaults {
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  workdir?: string;
  config?: Partial<ImageConfig>;
}

export const defaultPath = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// Docker's default set, which LinuxKit uses when neither the image nor the
// YAML lists capabilities.
const dockerCaps = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

export const allCaps = [
  'CAP_AUDIT_CONTROL', 'CAP_AUDIT_READ', 'CAP_AUDIT_WRITE', 'CAP_BLOCK_SUSPEND', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER',
  'CAP_KILL', 'CAP_LEASE', 'CAP_LINUX_IMMUTABLE', 'CAP_MAC_ADMIN', 'CAP_MAC_OVERRIDE', 'CAP_MKNOD', 'CAP_NET_ADMIN',
  'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_RAW', 'CAP_PERFMON', 'CAP_SETFCAP', 'CAP_SETGID', 'CAP_SETPCAP',
  'CAP_SETUID', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_CHROOT', 'CAP_SYS_MODULE', 'CAP_SYS_NICE', 'CAP_SYS_PACCT',
  'CAP_SYS_PTRACE', 'CAP_SYS_RAWIO', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
];

const defaultMasked = [
  '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats',
  '/proc/sched_debug', '/proc/scsi', '/sys/firmware',
];
const defaultReadonly = ['/proc/asound', '/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

const propagation = new Set(['shared', 'rshared', 'slave', 'rslave', 'private', 'rprivate', 'unbindable', 'runbindable']);

export function mergeConfig(defaults: Partial<ImageConfig> | undefined, entry: ImageConfig): ImageConfig {
  const merged: ImageConfig = { ...(defaults ?? {}), ...entry } as ImageConfig;
  if (entry['binds.add']) merged.binds = [...(merged.binds ?? []), ...entry['binds.add']];
  if (entry['capabilities.add']) merged.capabilities = [...(merged.capabilities ?? dockerCaps), ...entry['capabilities.add']];
  return merged;
}

function capabilities(c: ImageConfig): string[] {
  const listed = c.capabilities ?? dockerCaps;
  const caps = listed.some((x) => x.toLowerCase() === 'all') ? allCaps : listed.map((x) => x.toUpperCase());
  for (const x of caps) {
    if (!allCaps.includes(x)) throw new Error(`${c.name}: unknown capability ${x}`);
  }
  return [...new Set(caps)].sort();
}

function bindMount(spec: string, who: string): Mount {
  const parts = spec.split(':');
  if (parts.length < 2 || parts.length > 3 || !parts[0].startsWith('/') || !parts[1].startsWith('/')) {
    throw new Error(`${who}: bind "${spec}" is not "/source:/destination[:options]"`);
  }
  const options = parts[2] ? parts[2].split(',') : ['rw'];
  if (!options.includes('bind') && !options.includes('rbind')) options.push('rbind');
  if (!options.some((o) => propagation.has(o))) options.push('rprivate');
  return { destination: parts[1], type: 'bind', source: parts[0], options };
}

function tmpfsMount(spec: string): Mount {
  const [destination, opts] = spec.split(':');
  return { destination, type: 'tmpfs', source: 'tmpfs', options: opts ? opts.split(',') : ['nosuid', 'nodev', 'mode=1777'] };
}

function namespace(type: string, value: string | undefined): { type: string; path?: string } | undefined {
  if (value === 'host') return undefined;
  if (value && value.startsWith('/')) return { type, path: value };
  return { type };
}

function rlimit(spec: string): { type: string; soft: number; hard: number } {
  const [name, soft, hard] = spec.split(',');
  const type = name.toUpperCase().startsWith('RLIMIT_') ? name.toUpperCase() : `RLIMIT_${name.toUpperCase()}`;
  const n = (s: string) => (s === 'unlimited' || s === undefined ? 0xffffffffffffffff : Number(s));
  return { type, soft: n(soft), hard: n(hard ?? soft) };
}

export function ociSpec(c: ImageConfig, img: ImageDefaults, kind: 'onboot' | 'service'): Record<string, unknown> {
  const args = c.command ?? [...(img.entrypoint ?? []), ...(img.cmd ?? [])];
  if (args.length === 0) throw new Error(`${c.name}: no command in linuxkit.yml and none in image ${c.image}`);
  const caps = capabilities(c);
  const ambient = (c.ambient ?? []).map((x) => x.toUpperCase());

  const mounts: Mount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'nodev', 'noexec', 'relatime'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
    ...(c.tmpfs ?? []).map(tmpfsMount),
    ...(c.binds ?? []).map((b) => bindMount(b, c.name)),
    ...(c.mounts ?? []),
  ];
  // parents before children; a later entry for the same destination wins
  const byDest = new Map<string, Mount>();
  for (const m of mounts) byDest.set(m.destination!, m);
  const ordered = [...byDest.values()].sort((a, b) => depth(a.destination!) - depth(b.destination!));

  const devices: Array<Record<string, unknown>> = [];
  const rules: Array<Record<string, unknown>> = [{ allow: false, access: 'rwm' }];
  for (const d of c.devices ?? []) {
    if (d.path === 'all') {
      rules.push({ allow: true, type: d.type, access: 'rwm' });
      continue;
    }
    devices.push({ path: d.path, type: d.type, major: d.major, minor: d.minor, fileMode: parseInt(d.mode ?? '0600', 8), uid: 0, gid: 0 });
    rules.push({ allow: true, type: d.type, major: d.major, minor: d.minor, access: 'rwm' });
  }

  const namespaces = [
    namespace('pid', c.pid),
    namespace('network', c.net === 'none' ? undefined : c.net),
    namespace('ipc', c.ipc),
    namespace('uts', c.uts),
    { type: 'mount' },
  ].filter((n): n is { type: string; path?: string } => n !== undefined);

  const linux: Record<string, unknown> = {
    namespaces,
    resources: { devices: rules },
    cgroupsPath: c.cgroupsPath ?? `/${kind === 'onboot' ? 'onboot' : 'services'}/${c.name}`,
    maskedPaths: c.maskedPaths ?? defaultMasked,
    readonlyPaths: c.readonlyPaths ?? defaultReadonly,
  };
  if (devices.length) linux.devices = devices;
  if (c.rootfsPropagation) linux.rootfsPropagation = c.rootfsPropagation;
  if (c.sysctl) linux.sysctl = c.sysctl;

  const spec: Record<string, unknown> = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: Number(c.uid ?? 0), gid: Number(c.gid ?? 0), ...(c.additionalGids ? { additionalGids: c.additionalGids.map(Number) } : {}) },
      args,
      env: [defaultPath, ...(img.env ?? []), ...(c.env ?? [])],
      cwd: c.cwd ?? img.workdir ?? '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: caps, ambient },
      rlimits: (c.rlimits ?? []).map(rlimit),
      noNewPrivileges: c.noNewPrivileges ?? false,
      ...(c.oomScoreAdj !== undefined ? { oomScoreAdj: c.oomScoreAdj } : {}),
    },
    root: { path: 'rootfs', readonly: c.readonly ?? false },
    mounts: ordered,
    linux,
  };
  if (c.uts !== 'host') spec.hostname = c.hostname ?? c.name;
  return spec;
}

function depth(p: string): number {
  return p.split('/').filter(Boolean).length;
}

// A container run from a rootfs the ima service unpacked and labelled: the
// rootfs is mounted read-only at its path in the store, so nothing the
// container does changes what its manifest vouches for. A process that needs
// to write gets a mount for it (tmpfs, or a bind of a volume).
export interface RunSpec {
  name: string; // container name: hostname and cgroup
  rootfs: string; // absolute path: containerPaths(layout, container).rootfs
  args: string[];
  env?: string[]; // after PATH
  cwd?: string;
  user?: { uid: number; gid: number; additionalGids?: number[] };
  mounts?: Mount[]; // after the defaults; one for the same destination replaces it
  capabilities?: string[]; // Docker's default set when not given
  net?: string; // 'host', or a network namespace path; a new empty one when not given
  resources?: { memoryBytes?: number; cpus?: number; pids?: number }; // cgroup limits; none when not given
}

// The CFS period a cpus limit is a quota of (the kernel's and runc's default).
const CPU_PERIOD_US = 100_000;

export function runtimeSpec(r: RunSpec): Record<string, unknown> {
  if (!r.rootfs.startsWith('/')) throw new Error(`${r.name}: rootfs "${r.rootfs}" is not an absolute path; give the rootfs directory in the container store`);
  if (r.args.length === 0) throw new Error(`${r.name}: no command to run; give the process args`);
  const spec = ociSpec({
    name: r.name,
    image: r.rootfs,
    command: r.args,
    env: r.env,
    cwd: r.cwd,
    uid: r.user?.uid,
    gid: r.user?.gid,
    additionalGids: r.user?.additionalGids,
    mounts: r.mounts,
    capabilities: r.capabilities,
    net: r.net,
    readonly: true,
    cgroupsPath: `/sealkit/${r.name}`,
  }, {}, 'service');
  spec.root = { path: r.rootfs, readonly: true };
  const linux = spec.linux as { resources: Record<string, unknown> };
  const { memoryBytes, cpus, pids } = r.resources ?? {};
  // swap as large as memory: the limit holds for memory and swap together
  if (memoryBytes !== undefined) linux.resources.memory = { limit: memoryBytes, swap: memoryBytes };
  if (cpus !== undefined) linux.resources.cpu = { quota: Math.max(1000, Math.round(cpus * CPU_PERIOD_US)), period: CPU_PERIOD_US };
  if (pids !== undefined) linux.resources.pids = { limit: pids };
  return spec;
}
