import { posix } from 'node:path';

// What a call touches, from the gateway's `resources` or the call's arguments:
// - resource ids (for cascade-write detection): normalised paths, URLs without credentials or query,
//   tables; `server:*` when the call names none (a tool with no resource argument is one resource);
// - network identities (for production patterns): hosts and database names only. Free text, local
//   paths, `file:` URLs and URL paths never count, so a checkout under /repo/main or a GitHub link to
//   /blob/main/ is not "production".

/** Argument keys that name what a tool reads or writes. */
const RESOURCE_KEYS = ['path', 'paths', 'source', 'destination', 'url', 'uri', 'table', 'table_name', 'repo_path'] as const;
/** Of those, the keys whose http(s) URLs are network identities when the gateway sent no resources. */
const URL_KEYS: ReadonlySet<string> = new Set(['url', 'uri', 'source', 'destination']);

/** Connection-string schemes: their host and database name are network identities. */
const DB_SCHEMES: ReadonlySet<string> = new Set([
  'postgres',
  'postgresql',
  'mysql',
  'mariadb',
  'mongodb',
  'mongodb+srv',
  'redis',
  'rediss',
  'mssql',
  'sqlserver',
  'oracle',
  'cockroachdb',
  'clickhouse',
  'amqp',
  'amqps',
  'cassandra',
  'couchdb',
  'neo4j',
  'neo4j+s',
  'bolt',
  'snowflake',
]);
const WEB_SCHEMES: ReadonlySet<string> = new Set(['http', 'https', 'ws', 'wss']);

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;
const JDBC = /^jdbc:/i;
const PATH_END = /[/?#]/;
const QUERY_START = /[?#]/;
const NUMERIC = /^\d+$/;
const LEADING_SLASHES = /^\/+/;
const SEGMENT_SPLIT = /[.\-_]/;
const MAX_RESOURCE_IDS = 64;
const MAX_SCANNED_STRINGS = 200;
const MAX_SCAN_DEPTH = 4;
const MAX_STRING = 4096;

export interface ParsedLocation {
  scheme: string;
  hosts: string[];
  /** Database name of a connection string (not for web URLs). */
  database: string | undefined;
  /** Canonical form: scheme://host[:port]/path, no credentials, query or fragment. */
  canonical: string;
}

function stripPort(host: string): string {
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const colon = host.lastIndexOf(':');
  return colon >= 0 ? host.slice(0, colon) : host;
}

/**
 * Parses `scheme://[user[:pass]@]host[:port][,host2...]/path[?query]` by hand: WHATWG URL rejects
 * multi-host connection strings (mongodb://a:1,b:2/db) and treats unknown schemes inconsistently.
 */
export function parseLocation(raw: string): ParsedLocation | undefined {
  let text = raw.trim();
  if (JDBC.test(text)) text = text.slice(5);
  const m = SCHEME.exec(text);
  if (!m) return undefined;
  const scheme = (m[1] as string).toLowerCase();
  const rest = text.slice(m[0].length);
  const cut = rest.search(PATH_END);
  const authority = cut < 0 ? rest : rest.slice(0, cut);
  let tail = cut < 0 ? '' : rest.slice(cut);
  const at = authority.lastIndexOf('@');
  const hostPart = (at >= 0 ? authority.slice(at + 1) : authority).toLowerCase();
  const hosts = hostPart
    .split(',')
    .map((h) => stripPort(h.trim()))
    .filter((h) => h.length > 0);
  const q = tail.search(QUERY_START);
  if (q >= 0) tail = tail.slice(0, q);
  let database: string | undefined;
  if (DB_SCHEMES.has(scheme)) {
    const first = tail.split('/').find((s) => s.length > 0);
    if (first !== undefined) {
      let name = first;
      try {
        name = decodeURIComponent(first);
      } catch {
        // keep it encoded
      }
      // redis://host/2 selects a numbered database: not a name.
      if (!NUMERIC.test(name)) database = name.toLowerCase();
    }
  }
  const path = tail ? posix.normalize(tail) : '';
  return { scheme, hosts, database, canonical: `${scheme}://${hostPart}${path === '.' ? '' : path}` };
}

/** Network identities of one string that is a whole connection string or (when allowed) web URL. */
export function identitiesOf(value: string, includeWeb: boolean, out: Set<string>): void {
  // Cheap rejection first: almost every argument string is free text or a path.
  if (value.length > MAX_STRING || !value.includes('://')) return;
  const loc = parseLocation(value);
  if (!loc) return;
  if (DB_SCHEMES.has(loc.scheme)) {
    for (const h of loc.hosts) out.add(h);
    if (loc.database) out.add(loc.database);
  } else if (includeWeb && WEB_SCHEMES.has(loc.scheme)) {
    for (const h of loc.hosts) out.add(h);
  }
}

/** Whole segments of an identity: `prod-db.internal` → prod, db, internal. */
export function segmentsOf(identity: string): string[] {
  return identity.split(SEGMENT_SPLIT);
}

/** The first forbidden pattern matching a whole segment of one of the identities. */
export function matchProductionPattern(identities: readonly string[], patterns: ReadonlySet<string>): { identity: string; pattern: string } | undefined {
  if (patterns.size === 0) return undefined;
  for (const identity of identities) {
    for (const seg of segmentsOf(identity)) {
      if (patterns.has(seg)) return { identity, pattern: seg };
    }
  }
  return undefined;
}

function normaliseResource(server: string, raw: string): string | undefined {
  const value = raw.trim();
  if (!value || value.length > MAX_STRING) return undefined;
  const loc = SCHEME.test(value.replace(JDBC, '')) ? parseLocation(value) : undefined;
  if (loc) return loc.canonical;
  const path = posix.normalize(value.replaceAll('\\', '/'));
  const trimmed = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  return `${server}:${trimmed}`;
}

function stringsAt(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return [];
}

/** Resource ids of a call (at least one). */
export function resourceIdsOf(server: string, args: Record<string, unknown>, resources: readonly string[] | undefined): string[] {
  const out = new Set<string>();
  if (resources && resources.length > 0) {
    for (const r of resources) {
      const id = normaliseResource(server, r);
      if (id) out.add(id);
      if (out.size >= MAX_RESOURCE_IDS) break;
    }
  } else {
    // GitHub-style tools name the repository in owner + repo; a path inside it is relative to it.
    const owner = typeof args['owner'] === 'string' ? args['owner'] : undefined;
    const repo = typeof args['repo'] === 'string' ? args['repo'] : undefined;
    const base = owner && repo ? `${owner}/${repo}`.toLowerCase() : undefined;
    for (const key of RESOURCE_KEYS) {
      for (const s of stringsAt(args[key])) {
        const id = base && !SCHEME.test(s) ? normaliseResource(server, `${base}/${s.replace(LEADING_SLASHES, '')}`) : normaliseResource(server, s);
        if (id) out.add(id);
        if (out.size >= MAX_RESOURCE_IDS) break;
      }
    }
    if (out.size === 0 && base) out.add(`${server}:${base}`);
  }
  if (out.size === 0) out.add(`${server}:*`);
  return [...out];
}

/**
 * Network identities a call touches (without the server's own, which the caller adds): hosts and
 * database names of connection strings anywhere in the arguments (whole string values only) or the
 * resources, and hosts of http(s) resources (or, without resources, of url/uri/source/destination).
 */
export function callIdentitiesOf(args: Record<string, unknown>, resources: readonly string[] | undefined, out: Set<string>): void {
  const hasResources = resources !== undefined && resources.length > 0;
  if (hasResources) for (const r of resources) identitiesOf(r, true, out);
  let budget = MAX_SCANNED_STRINGS;
  const walk = (value: unknown, depth: number, key: string | undefined): void => {
    if (budget <= 0) return;
    if (typeof value === 'string') {
      budget--;
      identitiesOf(value, !hasResources && key !== undefined && URL_KEYS.has(key), out);
    } else if (depth < MAX_SCAN_DEPTH && value !== null && typeof value === 'object') {
      if (Array.isArray(value)) for (const v of value) walk(v, depth + 1, key);
      else for (const [k, v] of Object.entries(value)) walk(v, depth + 1, k);
    }
  };
  walk(args, 0, undefined);
}
