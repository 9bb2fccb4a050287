import { posix } from 'node:path';
import { CREDENTIAL_PATHS_UNDER_HOME } from '../../policy/sensitive-paths.js';
import type { ConfiguredServer, JsonPath, PackageDependency } from './parse.js';
import type { ServerKind, Severity } from './schema.js';

// What kind of server an entry runs, from its name and the package or program it starts (never from
// path arguments: a filesystem server rooted at ~/projects/shell-scripts is not a shell server), and
// seed 002's risk level for that kind.

/** Seed 002's approved-server table, plus the kinds it implies (shell, database), our gateway, and unknown → medium. */
export const KIND_RISK: Readonly<Record<ServerKind, Severity>> = {
  shell: 'critical',
  database: 'high',
  filesystem: 'high',
  github: 'medium',
  git: 'medium',
  fetch: 'medium',
  time: 'low',
  memory: 'low',
  sdk: 'low',
  gateway: 'low',
  unknown: 'medium',
};

/** Checked in this order: the first kind with a matching word wins, most dangerous first. */
const KIND_WORDS: [ServerKind, ReadonlySet<string>][] = [
  ['shell', new Set(['shell', 'terminal', 'exec', 'execute', 'executor', 'command', 'commands', 'commander', 'bash', 'zsh', 'powershell', 'pwsh', 'cmd'])],
  [
    'database',
    new Set([
      'database',
      'db',
      'postgres',
      'postgresql',
      'pg',
      'mysql',
      'mariadb',
      'sqlite',
      'sqlite3',
      'mongo',
      'mongodb',
      'redis',
      'mssql',
      'sqlserver',
      'oracle',
      'supabase',
      'neon',
      'clickhouse',
      'snowflake',
      'bigquery',
      'dynamodb',
      'cassandra',
      'duckdb',
    ]),
  ],
  ['filesystem', new Set(['filesystem', 'fs', 'files', 'file'])],
  ['github', new Set(['github'])],
  ['git', new Set(['git'])],
  ['fetch', new Set(['fetch'])],
  ['time', new Set(['time'])],
  ['memory', new Set(['memory'])],
];

/** Programs that start another program: their own name says nothing about the server. */
const LAUNCHERS: ReadonlySet<string> = new Set([
  'npx',
  'npm',
  'pnpm',
  'pnpx',
  'yarn',
  'bunx',
  'bun',
  'deno',
  'node',
  'uvx',
  'uv',
  'pipx',
  'python',
  'python3',
  'py',
  'docker',
  'podman',
  'sh',
  'bash',
  'zsh',
  'cmd',
  'cmd.exe',
  'powershell',
  'powershell.exe',
  'pwsh',
  'env',
]);

const DB_SCHEME = /^(jdbc:)?(postgres|postgresql|mysql|mariadb|mongodb|mongodb\+srv|redis|rediss|mssql|sqlserver|oracle|cockroachdb|clickhouse|snowflake|sqlite|file):\/\//i;

export function isPathLike(value: string): boolean {
  return /^(\/|~([/\\]|$)|\.{1,2}([/\\]|$)|[A-Za-z]:([\\/]|$)|\$HOME\b|\$\{HOME\}|%USERPROFILE%|%HOMEPATH%)/.test(value);
}

function wordsOf(text: string): string[] {
  return text
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
}

/** Tokens of the name, the program (unless a launcher) and the non-path, non-URL arguments. */
function identifyingWords(name: string, command: string | undefined, args: readonly string[]): string[] {
  const words = wordsOf(name);
  if (command) {
    const program = posix.basename(command.replaceAll('\\', '/')).toLowerCase();
    if (!LAUNCHERS.has(program) && !LAUNCHERS.has(program.replace(/\.(exe|cmd|bat)$/, ''))) words.push(...wordsOf(program.replace(/\.(exe|cmd|bat|js|mjs|py)$/, '')));
  }
  // `bash -c "npx -y @x/server-y /dir"` carries the real command in one argument.
  for (const token of args.flatMap((a) => a.split(/\s+/))) {
    if (!token || token.startsWith('-') || isPathLike(token) || /^[a-z][a-z0-9+.-]*:\/\//i.test(token) || token.includes('=')) continue;
    words.push(...wordsOf(token));
  }
  return words;
}

function kindOfWords(words: readonly string[]): ServerKind | undefined {
  for (const [kind, set] of KIND_WORDS) if (words.some((w) => set.has(w))) return kind;
  return undefined;
}

export function classifyServer(server: ConfiguredServer): ServerKind {
  const kind = kindOfWords(identifyingWords(server.name, server.command, server.args));
  if (kind) return kind;
  const values = [...server.args, ...Object.values(server.env)];
  if (values.some((v) => DB_SCHEME.test(v.trim()))) return 'database';
  return 'unknown';
}

export function classifyPackage(pkg: PackageDependency): ServerKind {
  if (pkg.name === '@modelcontextprotocol/sdk' || /^@modelcontextprotocol\/(inspector|create-server)$/.test(pkg.name)) return 'sdk';
  return kindOfWords(wordsOf(pkg.name.replace(/^@modelcontextprotocol\//, ''))) ?? 'unknown';
}

/** `--read-only`, a name like filesystem_read_only, READ_ONLY=true, or docker mounts that are all `:ro`. */
export function isReadOnly(server: ConfiguredServer): boolean {
  const flags = server.args.some((a) => /^--?(read[-_]?only|ro)$/i.test(a) || /^--?read[-_]?only=(true|1|yes)$/i.test(a));
  const nameWords = wordsOf(server.name).join(' ');
  const named = /\bread ?only\b|\breadonly\b/.test(nameWords);
  const env = Object.entries(server.env).some(([k, v]) => /^(READ_?ONLY|.*_READ_?ONLY)$/i.test(k) && /^(true|1|yes)$/i.test(v.trim()));
  const mounts = dockerMounts(server.args);
  const mountsReadOnly = mounts.length > 0 && mounts.every((m) => m.readOnly);
  return flags || named || env || mountsReadOnly;
}

export interface DirectoryArg {
  path: string;
  at: JsonPath;
}

interface Mount {
  source: string;
  readOnly: boolean;
  index: number;
}

/** `-v SRC:DST[:ro]`, `--volume=...` and `--mount type=bind,src=...,readonly` of a docker-style command. */
function dockerMounts(args: readonly string[]): Mount[] {
  const out: Mount[] = [];
  args.forEach((a, i) => {
    let spec: string | undefined;
    let index = i;
    if (a === '-v' || a === '--volume' || a === '--mount') {
      spec = args[i + 1];
      index = i + 1;
    } else if (a.startsWith('--volume=') || a.startsWith('--mount=')) spec = a.slice(a.indexOf('=') + 1);
    if (spec === undefined) return;
    if (a.startsWith('--mount')) {
      const fields = new Map(spec.split(',').map((kv) => [kv.split('=')[0] ?? '', kv.split('=').slice(1).join('=')] as const));
      const source = fields.get('source') ?? fields.get('src');
      if (source !== undefined) out.push({ source, readOnly: fields.has('readonly') || fields.get('ro') === 'true', index });
      return;
    }
    // Windows sources have a drive colon (C:\x:/data:ro); split on the colon that starts the target.
    const m = /^((?:[A-Za-z]:)?[^:]*):([^:]+)(?::([a-z,]+))?$/.exec(spec);
    if (m?.[1] !== undefined) out.push({ source: m[1], readOnly: (m[3] ?? '').split(',').includes('ro'), index });
  });
  return out;
}

/** Directories a server is given: path-like arguments, docker mount sources and directory-named env values. */
export function directoryArgs(server: ConfiguredServer): DirectoryArg[] {
  const out: DirectoryArg[] = [];
  server.args.forEach((a, i) => {
    const value = a.includes('=') && a.startsWith('-') ? a.slice(a.indexOf('=') + 1) : a;
    if (isPathLike(value)) out.push({ path: value, at: ['args', i] });
  });
  for (const m of dockerMounts(server.args)) if (isPathLike(m.source)) out.push({ path: m.source, at: ['args', m.index] });
  for (const [k, v] of Object.entries(server.env)) {
    if (!/(DIR|DIRS|DIRECTORY|DIRECTORIES|ROOT|ROOTS|PATH|PATHS|WORKSPACE)$/i.test(k) || /^PATH$/i.test(k)) continue;
    for (const part of v.split(/[,;]|(?<!^[A-Za-z]):(?=[/~$%])/)) if (isPathLike(part.trim())) out.push({ path: part.trim(), at: ['env', k] });
  }
  return out;
}

export type RootFinding = { severity: Severity; why: string };

/** System directories, with anything under them (the gateway refuses to start only on the directories themselves). */
const SENSITIVE_SYSTEM = ['/etc', '/usr', '/bin', '/sbin', '/boot', '/System'];

/**
 * Whether a directory gives a server the whole filesystem (critical), the whole home directory or a
 * sensitive one (high). `sensitive` also checks the credential paths of src/policy/sensitive-paths.ts
 * (~/.ssh, ~/.netrc, ...) and system folders like /etc (for file servers).
 */
export function rootDirectory(raw: string, home: string, sensitive: boolean): RootFinding | undefined {
  let p = raw.trim().replaceAll('\\', '/');
  const homeNorm = home.replaceAll('\\', '/').replace(/\/+$/, '');
  p = p.replace(/^(\$HOME|\$\{HOME\}|%USERPROFILE%|%HOMEPATH%)(?=\/|$)/i, '~');
  if (homeNorm && (p === homeNorm || p.startsWith(`${homeNorm}/`))) p = `~${p.slice(homeNorm.length)}`;
  if (/^[A-Za-z]:\/Users\/[^/]+\/?$/i.test(p)) p = '~';
  p = p.replace(/^[A-Za-z]:/, '') || '/';
  const norm = posix.normalize(p).replace(/(.)\/+$/, '$1');
  if (norm === '/' || norm === '/.') return { severity: 'critical', why: 'the whole filesystem' };
  if (norm === '~' || /^\/(home|Users)\/[^/]+$/.test(norm) || norm === '/root') return { severity: 'high', why: 'the whole home directory' };
  if (!sensitive) return undefined;
  for (const s of CREDENTIAL_PATHS_UNDER_HOME) if (norm === `~/${s}` || norm.startsWith(`~/${s}/`)) return { severity: 'high', why: `a sensitive directory (~/${s})` };
  for (const s of SENSITIVE_SYSTEM) if (norm === s || norm.startsWith(`${s}/`)) return { severity: 'high', why: `a sensitive system directory (${s})` };
  return undefined;
}
