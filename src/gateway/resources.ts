import { isAbsolute, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { expandHome } from './references.js';

// The `resources` of a decision: what a call touches, in one spelling per thing, so that cascade-write
// detection counts `a.md` and `/allowed/a.md` as one file. Paths are resolved the way
// server-filesystem resolves them (absolute as given, `~` expanded, relative against the allowed
// directories); URLs and connection strings are kept without credentials, query or fragment.

/** Argument keys holding paths (server-filesystem's names). */
const PATH_KEYS = ['path', 'paths', 'source', 'destination'] as const;
const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;
const USERINFO = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/@\s]*@/;
const MAX_RESOURCES = 100;
const MAX_LENGTH = 4096;
const MAX_SCANNED = 200;
const MAX_DEPTH = 4;

function isInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/** An absolute path for a path argument, as server-filesystem would resolve it. */
export function resolvePath(value: string, allowedDirectories: readonly string[], cwd: string): string {
  const expanded = expandHome(value.trim());
  if (isAbsolute(expanded)) return resolve(expanded);
  for (const dir of allowedDirectories) {
    const candidate = resolve(dir, expanded);
    if (allowedDirectories.some((d) => isInside(candidate, d))) return candidate;
  }
  return resolve(allowedDirectories[0] ?? cwd, expanded);
}

/** A URL or connection string without user, password, query or fragment (they may hold secrets). */
export function canonicalLocation(value: string): string {
  const v = value.trim().replace(USERINFO, '$1');
  const cut = v.search(/[?#]/);
  return cut >= 0 ? v.slice(0, cut) : v;
}

/** `file://` URLs are paths: normalised like any other path argument. */
function resourceOfString(value: string, allowedDirectories: readonly string[], cwd: string, pathKey: boolean): string | undefined {
  const v = value.trim();
  if (!v || v.length > MAX_LENGTH) return undefined;
  if (/^file:\/\//i.test(v)) {
    try {
      return pathToFileURL(resolvePath(fileURLToPath(v), allowedDirectories, cwd)).href;
    } catch {
      return canonicalLocation(v);
    }
  }
  if (SCHEME.test(v)) return canonicalLocation(v);
  if (pathKey) return pathToFileURL(resolvePath(v, allowedDirectories, cwd)).href;
  return undefined;
}

function stringsAt(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return [];
}

/** The resource standing for a call that names none: the whole server, one resource. */
export function serverResource(server: string): string {
  return `mcp://${server}`;
}

/**
 * Resources of a tool call: paths from `path`, `paths[]`, `source`, `destination`, and every URL or
 * connection string anywhere in the arguments. A call naming none counts as one resource per server,
 * so ordinary use of a server without resource arguments (memory) is not a cascade of "different" writes.
 */
export function resourcesOf(server: string, args: Record<string, unknown>, allowedDirectories: readonly string[], cwd: string): string[] {
  const out = new Set<string>();
  const add = (r: string | undefined) => {
    if (r !== undefined && r.length <= MAX_LENGTH && out.size < MAX_RESOURCES) out.add(r);
  };
  for (const key of PATH_KEYS) for (const s of stringsAt(args[key])) add(resourceOfString(s, allowedDirectories, cwd, true));
  let budget = MAX_SCANNED;
  const walk = (value: unknown, depth: number): void => {
    if (budget <= 0) return;
    if (typeof value === 'string') {
      budget--;
      if (SCHEME.test(value.trim())) add(resourceOfString(value, allowedDirectories, cwd, false));
    } else if (depth < MAX_DEPTH && value !== null && typeof value === 'object') {
      for (const v of Array.isArray(value) ? value : Object.values(value)) walk(v, depth + 1);
    }
  };
  // Path keys were read above (a URL under `source` was kept as a URL there).
  for (const [key, value] of Object.entries(args)) if (!(PATH_KEYS as readonly string[]).includes(key)) walk(value, 1);
  if (out.size === 0) out.add(serverResource(server));
  return [...out];
}

/** The resource of `resources/read`: the URI itself (file URIs normalised like paths). */
export function resourceOfUri(server: string, uri: string, allowedDirectories: readonly string[], cwd: string): string[] {
  return [resourceOfString(uri, allowedDirectories, cwd, false) ?? serverResource(server)];
}
