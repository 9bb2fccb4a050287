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
const PATH_KEY_SET: ReadonlySet<string> = new Set(PATH_KEYS);
/** The decision schema's limits on `resources`. */
const MAX_RESOURCES = 100;
const MAX_LENGTH = 4096;
/**
 * Paths and `file://` URLs of one call normalised; past them, each is sent as written (the control plane
 * resolves a `file:` or absolute resource itself for a `paths` rule, and counts another spelling of a
 * file as another resource: more, never fewer). One costs microseconds, and strings that all name one file
 * keep the walk going (a full list stops it): a megabyte of `a/b/../c.md` took 0.17 s. URLs and connection
 * strings have their own such bound (MAX_LOCATIONS, src/policy/resources.ts).
 */
const MAX_PATHS = 1_000;
/** What is left of MAX_PATHS in the call being read. */
let pathsLeft = MAX_PATHS;

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
  if (!v) return pathKey && value !== '' && value.length <= MAX_LENGTH ? [pathResource(value, allowedDirectories, cwd)] : [];
  if (/^file:\/\//i.test(v)) {
    if (v.length > MAX_LENGTH) return [];
    if (--pathsLeft < 0) return [v];
    try {
      return [pathToFileURL(resolvePath(fileURLToPath(v), allowedDirectories, cwd)).href];
    } catch {
      return [canonicalLocation(v)];
    }
  }
  const location = locationResources(v);
  if (location.length > 0) return location;
  if (pathKey && value.length <= MAX_LENGTH) return [pathResource(value, allowedDirectories, cwd)];
  return [];
}

/** A path argument as a `file://` URL, or as written past MAX_PATHS. */
function pathResource(value: string, allowedDirectories: readonly string[], cwd: string): string {
  return --pathsLeft < 0 ? value : pathToFileURL(resolvePath(value, allowedDirectories, cwd)).href;
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
  pathsLeft = MAX_PATHS;
  return withHostBudget(() => readResources(server, args, allowedDirectories, cwd));
}

function readResources(server: string, args: Record<string, unknown>, allowedDirectories: readonly string[], cwd: string): string[] {
  const out = new Set<string>();
  const add = (rs: readonly string[]) => {
    for (const r of rs) if (r.length <= MAX_LENGTH && out.size < MAX_RESOURCES) out.add(r);
  };
  // A string repeated (a list of one URL or path many times over) is read once.
  const read = [new Map<string, string[]>(), new Map<string, string[]>()] as const;
  const resourcesOfValue = (value: string, pathKey: boolean): string[] => {
    const memo = read[pathKey ? 1 : 0];
    let rs = memo.get(value);
    if (rs === undefined) {
      rs = resourcesOfString(value, allowedDirectories, cwd, pathKey);
      memo.set(value, rs);
    }
    return rs;
  };
  for (const key of PATH_KEYS) {
    for (const s of stringsAt(args[key])) {
      if (out.size >= MAX_RESOURCES) break;
      add(resourcesOfValue(s, true));
    }
  }
  // Then every URL anywhere else (the strings under path keys, read above, found nothing more). Depth
  // first, without recursion; a full list stops the walk: the control plane then reads every URL of the
  // arguments itself.
  const pending: unknown[] = [];
  const keys = Object.keys(args);
  for (let i = keys.length - 1; i >= 0; i--) {
    const value = args[keys[i] as string];
    if (!PATH_KEY_SET.has(keys[i] as string)) pending.push(value);
    else if (Array.isArray(value)) for (let j = value.length - 1; j >= 0; j--) typeof value[j] === 'string' || pending.push(value[j]);
    else if (typeof value !== 'string') pending.push(value);
  }
  while (pending.length > 0 && out.size < MAX_RESOURCES) {
    const value = pending.pop();
    if (typeof value === 'string') {
      if (value.includes(':')) add(resourcesOfValue(value, false));
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
  pathsLeft = MAX_PATHS;
  const rs = withHostBudget(() => resourcesOfString(uri, allowedDirectories, cwd, false)).slice(0, MAX_RESOURCES);
  return rs.length > 0 ? rs : [serverResource(server)];
}
