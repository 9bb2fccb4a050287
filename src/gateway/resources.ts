import { isAbsolute, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseLocation, withHostBudget } from '../policy/resources.js';
import { expandHome } from './references.js';

// The `resources` of a decision: what a call touches, in one spelling per thing, so that cascade-write
// detection counts `a.md` and `/allowed/a.md` as one file. Paths are resolved the way
// server-filesystem resolves them (absolute as given, `~` expanded, relative against the allowed
// directories); URLs and connection strings are kept without credentials, query or fragment, parsed
// as the control plane parses them (src/policy/resources.ts): http(s) with WHATWG `new URL`, so
// `https://prod.example.com\@evil.com/` is a resource on prod.example.com, not evil.com.

/** Argument keys holding paths (server-filesystem's names). */
const PATH_KEYS = ['path', 'paths', 'source', 'destination'] as const;
/** The decision schema's limits on `resources`. */
const MAX_RESOURCES = 100;
const MAX_LENGTH = 4096;

function isInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/**
 * An absolute path for a path argument, as server-filesystem would resolve it: spaces and all (it writes
 * `a.md ` and `a.md` as two files, so they are two resources; trimmed, an agent could write many files
 * that cascade detection counted as one).
 */
export function resolvePath(value: string, allowedDirectories: readonly string[], cwd: string): string {
  const expanded = expandHome(value);
  if (isAbsolute(expanded)) return resolve(expanded);
  for (const dir of allowedDirectories) {
    const candidate = resolve(dir, expanded);
    if (allowedDirectories.some((d) => isInside(candidate, d))) return candidate;
  }
  return resolve(allowedDirectories[0] ?? cwd, expanded);
}

/** A URL or connection string without user, password, query or fragment (they may hold secrets). */
export function canonicalLocation(value: string): string {
  return locationResources(value)[0] ?? value.trim();
}

/**
 * A URL or connection string as resources: its canonical form (cut to the schema's length: the host
 * comes first), then `scheme://host` for each further host a client may connect to (libpq `host=`
 * parameters, the other readings of an ambiguous authority), so the control plane matches them too.
 */
function locationResources(value: string): string[] {
  const loc = parseLocation(value);
  if (!loc) return [];
  const out = new Set([loc.canonical.slice(0, MAX_LENGTH)]);
  for (const h of loc.otherHosts) {
    if (out.size > MAX_RESOURCES) break;
    if (!loc.hosts.includes(h)) out.add(`${loc.scheme}://${h}`);
  }
  return [...out];
}

/** `file://` URLs are paths: normalised like any other path argument. */
function resourcesOfString(value: string, allowedDirectories: readonly string[], cwd: string, pathKey: boolean): string[] {
  // URL parsing ignores surrounding spaces (WHATWG); a path keeps them (resolvePath).
  const v = value.trim();
  if (!v) return pathKey && value !== '' && value.length <= MAX_LENGTH ? [pathToFileURL(resolvePath(value, allowedDirectories, cwd)).href] : [];
  if (/^file:\/\//i.test(v)) {
    if (v.length > MAX_LENGTH) return [];
    try {
      return [pathToFileURL(resolvePath(fileURLToPath(v), allowedDirectories, cwd)).href];
    } catch {
      return [canonicalLocation(v)];
    }
  }
  const location = locationResources(v);
  if (location.length > 0) return location;
  if (pathKey && value.length <= MAX_LENGTH) return [pathToFileURL(resolvePath(value, allowedDirectories, cwd)).href];
  return [];
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
 * connection string anywhere in the arguments, however deep (the control plane reads only these
 * resources for http(s) hosts, so nothing may be skipped). A call naming none counts as one resource
 * per server, so ordinary use of a server without resource arguments (memory) is not a cascade of
 * "different" writes.
 */
export function resourcesOf(server: string, args: Record<string, unknown>, allowedDirectories: readonly string[], cwd: string): string[] {
  return withHostBudget(() => readResources(server, args, allowedDirectories, cwd));
}

function readResources(server: string, args: Record<string, unknown>, allowedDirectories: readonly string[], cwd: string): string[] {
  const out = new Set<string>();
  const add = (rs: readonly string[]) => {
    for (const r of rs) if (r.length <= MAX_LENGTH && out.size < MAX_RESOURCES) out.add(r);
  };
  for (const key of PATH_KEYS) for (const s of stringsAt(args[key])) add(resourcesOfString(s, allowedDirectories, cwd, true));
  // Then every URL anywhere (those under path keys again, found as the same resources). Depth first,
  // without recursion; the body limit bounds the work. A full list stops the walk: the control plane
  // then reads every URL of the arguments itself.
  const pending: unknown[] = [args];
  while (pending.length > 0 && out.size < MAX_RESOURCES) {
    const value = pending.pop();
    if (typeof value === 'string') {
      if (value.includes(':')) add(resourcesOfString(value, allowedDirectories, cwd, false));
    } else if (value !== null && typeof value === 'object') {
      const children = Array.isArray(value) ? value : Object.values(value);
      for (let i = children.length - 1; i >= 0; i--) pending.push(children[i]);
    }
  }
  if (out.size === 0) out.add(serverResource(server));
  return [...out];
}

/** The resource of `resources/read`: the URI itself (file URIs normalised like paths). */
export function resourceOfUri(server: string, uri: string, allowedDirectories: readonly string[], cwd: string): string[] {
  const rs = withHostBudget(() => resourcesOfString(uri, allowedDirectories, cwd, false)).slice(0, MAX_RESOURCES);
  return rs.length > 0 ? rs : [serverResource(server)];
}
