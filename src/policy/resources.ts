import { posix } from 'node:path';
import { domainToASCII, fileURLToPath } from 'node:url';
import { storable } from '../audit/redact.js';

// What a call touches, from the gateway's `resources` or the call's arguments:
// - resource ids (for cascade-write detection): normalised paths, URLs without credentials or query,
//   tables; `server:*` when the call names none (a tool with no resource argument is one resource);
// - network identities (for production patterns): hosts and database names only. Free text, local
//   paths, `file:` URLs and URL paths never count, so a checkout under /repo/main or a GitHub link to
//   /blob/main/ is not "production".
// Hosts are read the way the client that connects reads them: http(s)/ws(s)/ftp URLs with WHATWG
// `new URL` (what fetch uses: `\` ends the authority, %-escapes and fullwidth letters are decoded),
// connection strings by hand (WHATWG rejects multi-host ones) with %-escapes decoded. Where parsers
// may disagree on the host, every host-like part counts (fail closed).

/** Argument keys that name what a tool reads or writes. */
const RESOURCE_KEYS = ['path', 'paths', 'source', 'destination', 'url', 'uri', 'table', 'table_name', 'repo_path'] as const;
/** Of those, the keys whose http(s) URLs are network identities when the gateway sent no resources. */
const URL_KEYS: ReadonlySet<string> = new Set(['url', 'uri', 'source', 'destination']);
/**
 * Argument keys whose value is the host a tool connects to, compared in lower case without `_` and `-`
 * (`db_host`, `dbHost`, `DB-HOST`, `PGHOST` alike); `server` is left out: often a name of something else.
 */
const HOST_ARGUMENT_KEYS: ReadonlySet<string> = new Set(['host', 'hosts', 'hostname', 'hostaddr', 'dbhost', 'dbhostname', 'databasehost', 'databasehostname', 'pghost', 'pghostaddr']);
/** Argument keys whose value is the database a tool connects to, compared as HOST_ARGUMENT_KEYS. */
const DATABASE_ARGUMENT_KEYS: ReadonlySet<string> = new Set(['database', 'dbname', 'databasename', 'pgdatabase']);
const KEY_SEPARATORS = /[_-]/g;
/**
 * Last word(s) of a longer key that name a host a tool connects to: a product or purpose before them
 * (`MYSQL_HOST`, `redisHost`, `smtp-hostname`, `MYSQL_HOST_NAME`). Whole words only, so `ghost` and a
 * `localhost` key are not; plural `hosts` only as the whole key, as `allowed_hosts`, `known_hosts` and
 * `trusted_hosts` list hosts a tool checks against rather than connects to.
 */
const HOST_KEY_ENDINGS: ReadonlySet<string> = new Set(['host', 'hostname', 'hostaddr']);
/** Last word(s) of a longer key that name a database (`MYSQL_DATABASE`, `targetDatabase`, `MYSQL_DB_NAME`). */
const DATABASE_KEY_ENDINGS: ReadonlySet<string> = new Set(['database', 'dbname', 'databasename']);
/** Products whose `<product>_DB` names a database (the official images' `POSTGRES_DB`, `MONGO_DB`); `db` after other words is too vague. */
const DB_KEY_PRODUCTS: ReadonlySet<string> = new Set(['postgres', 'postgresql', 'pg', 'mysql', 'mariadb', 'mongo', 'mongodb']);
/** A normalised key that may end in one of those words: only such keys are split into words. */
const KEY_ENDING = /(?:host|hostname|hostaddr|database|dbname|databasename|db|addr|addrs|address|addresses)$/;
/**
 * Keys (whole, or the last word of a longer key: `REDIS_ADDR`, `serverAddress`) whose `host:port` value is
 * where a tool connects (Go's `Addr`, go-redis, NATS, Consul). Only a value with a numeric port is read:
 * `address` alone is as often a mail or postal address.
 */
const ADDRESS_KEY_WORDS: ReadonlySet<string> = new Set(['addr', 'addrs', 'address', 'addresses']);
/** Words of a key: `MYSQL_HOST` → MYSQL, HOST; `mysqlHost` → mysql, Host; `DBHost` → DB, Host. */
const KEY_WORD = /[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+/g;
/** Characters of a key's end split into words: the last three words are all that is looked at. */
const MAX_KEY_TAIL = 64;
const DATABASE_NAME = /^[\p{L}\p{N}_$.-]+$/u;
/** A database argument naming a local database file (SQLite, DuckDB, Access), not a server's database. */
const DATABASE_FILE = /\.(?:db|db3|sqlite|sqlite3|s3db|sl3|duckdb|mdb|accdb)$/i;
/** A port after the last `:` of a host argument. */
const PORT_SUFFIX = /:\d*$/;
/**
 * The decision schema's `resources` maxItems: a gateway with more to say had to cut its list, so then
 * every URL in the arguments counts too.
 */
const MAX_GATEWAY_RESOURCES = 100;

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
  // Further databases and message brokers whose clients take a `scheme://host` connection string
  // (SQLAlchemy dialects, broker clients): without the scheme here its host is not read at all.
  'redshift',
  'db2',
  'sybase',
  'teradata',
  'vertica',
  'hana',
  'firebird',
  'trino',
  'presto',
  'hive',
  'databricks',
  'bigquery',
  'couchbase',
  'couchbases',
  'memcached',
  'valkey',
  'valkeys',
  'elasticsearch',
  'opensearch',
  'kafka',
  'nats',
  'pulsar',
  'pulsar+ssl',
  'mqtt',
  'mqtts',
  // Other names of the same servers: node-postgres reads any scheme, `pg://` among them; dj-database-url's
  // aliases (Django).
  'pg',
  'pgsql',
  'postgis',
  'timescale',
  'timescalegis',
  'cockroach',
  'mysql2',
  'mysqlgis',
  'mysql-connector',
  'mssqlms',
  'oraclegis',
  // MySQL's X protocol (mysqlsh, X DevAPI): the path is the schema.
  'mysqlx',
]);
/**
 * Other schemes whose authority is a host a client connects to, with no database in the path (git over
 * ssh, remote shells and file transfer, a Docker daemon's `tcp://`, directories, mail): their host is a
 * network identity, their path is not (`ssh://git@host/main.git` names no database `main`).
 */
const HOST_ONLY_SCHEMES: ReadonlySet<string> = new Set([
  'ssh',
  'git',
  'git+ssh',
  'ssh+git',
  'sftp',
  'scp',
  'ftps',
  'rsync',
  'svn',
  'svn+ssh',
  'telnet',
  'rdp',
  'vnc',
  'tcp',
  'tls',
  'udp',
  'grpc',
  'grpcs',
  'ldap',
  'ldaps',
  'smb',
  'cifs',
  'nfs',
  'smtp',
  'smtps',
  'imap',
  'imaps',
  'pop3',
  'pop3s',
]);
/** WHATWG special schemes with a network host (`file:` is special too, but names a local path). */
const WEB_SCHEMES: ReadonlySet<string> = new Set(['http', 'https', 'ws', 'wss', 'ftp']);
/** libpq parameters (URI query or key/value DSN) naming where to connect; `service` names a pg_service.conf entry. */
const LIBPQ_HOST_KEYS: ReadonlySet<string> = new Set(['host', 'hostaddr', 'service']);

const SCHEME_PREFIX = /^[A-Za-z][A-Za-z0-9+.\-\t\n\r]*:/;
const JDBC = /^jdbc:/i;
/** Oracle's JDBC URL: `jdbc:oracle:thin:[user/password]@` then `//host:port/service`, `host:port:SID`, a descriptor or a TNS alias. */
const JDBC_ORACLE = /^oracle:[a-z0-9]*:[^@]*@/i;
/** Sybase jConnect: `jdbc:sybase:Tds:host:port/database`. */
const JDBC_SYBASE = /^sybase:tds:/i;
/** An Oracle target written as a URL: `ldap://…`, `ldaps://…`, `tcp://…`, `tcps://…`. */
const ORACLE_TARGET_SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;
const ORACLE_NAME_END = /[/?,]/;
/** An Oracle descriptor's host and service: `(HOST=prod-ora)`, `(SERVICE_NAME=app)`, `(SID=orcl)`. */
const DESCRIPTOR_HOST = /\(\s*host\s*=\s*([^)\s]+)\s*\)/gi;
const DESCRIPTOR_SERVICE = /\(\s*(?:service_name|sid)\s*=\s*([^)\s]+)\s*\)/gi;
/** Properties after `;` in a JDBC URL (SQL Server, jTDS, Teradata…) and keys of a URL query naming where to connect. */
const PROPERTY_HOST_KEYS: ReadonlySet<string> = new Set(['servername', 'server', 'host', 'hostname', 'address', 'failoverpartner']);
const PROPERTY_DATABASE_KEYS: ReadonlySet<string> = new Set(['databasename', 'database', 'dbname', 'initial catalog']);
/** Every query parameter a connection string is read by (addUrlParameter). */
const LOCATION_PARAMETERS: ReadonlySet<string> = new Set([...PROPERTY_HOST_KEYS, ...PROPERTY_DATABASE_KEYS, ...LIBPQ_HOST_KEYS]);
const NOT_SLASH = /[^/]/;
const TAB_OR_NEWLINE = /[\t\n\r]/g;
const SLASHES = /^[/\\]*/;
const PATH_END = /[/?#]/;
const QUERY_START = /[?#]/;
const AUTHORITY_SPLIT = /[@\\?#,]/;
/** A `%` or anything but printable ASCII: clients may not decode such a host alike. */
const ENCODED_HOST = /[%]|[^ -~]/;
const NUMERIC = /^\d+$/;
const LEADING_SLASHES = /^\/+/;
const SEGMENT_SPLIT = /[.\-_]/;
/** Characters a host name is made of (anything else splits a host-like part into candidates). */
const PLAIN_HOST = /^[a-z0-9.\-_]*$/;
const NOT_HOST = /[^\p{L}\p{N}.\-_]+/u;
const IGNORABLE = /\p{Default_Ignorable_Code_Point}/gu;
const IDEOGRAPHIC_STOPS = /[\u3002\uff0e\uff61]/g;
const PERCENT_ASCII = /%([0-7][0-9A-Fa-f])/g;

// Reading a host that is not plain ASCII costs in proportion to what NFKC makes of it, up to 18
// characters per character (U+FDFA): a 256 KB request of such text took half a second of the event loop,
// and its quoted identity made the denial 6 times the request. In a decision (callIdentitiesOf,
// firstWebUrl) such text is read only so far: one host up to MAX_HOST_TEXT characters, HOST_TEXT_BUDGET
// characters after normalisation in all. Beyond, the call names UNREADABLE_HOST, which every production
// pattern matches and no network rule allows (fail closed: no real host is that long).
/** Longest host text outside plain ASCII (escapes, non-ASCII letters) a decision reads; a DNS name is at most 253. */
const MAX_HOST_TEXT = 1_024;
/** Characters of normalised non-ASCII host text a decision reads in all. */
const HOST_TEXT_BUDGET = 16_384;
/**
 * Most items read of one list in a connection string (hosts at `,`, query parameters at `&`, properties at
 * `;`), and most parts (between `@`, `\`, `?`, `#`, `,`) of an ambiguous authority read as hosts; a real
 * one has a few. Every item was read: 1 MB of `,@` after `?host=` held the event loop 0.25 s, 1 MB of `@`
 * (a million empty parts) 0.5 s, 1 MB of `%@` (each `%` a failed %-decoding) 5 s. A list of more names
 * UNREADABLE_HOST too (fail closed: a host may be in what is not read), in and outside a decision.
 */
const MAX_LIST_ITEMS = 64;
/**
 * Longest database name (the path's first segment) or host or database parameter value of a connection
 * string read, before %-decoding; a longer one is UNREADABLE_HOST (no database or host name comes near).
 */
const MAX_NAME_TEXT = 4_096;
/** Longest query parameter name %-decoded: longer ones are no parameter naming a host or database (`failoverpartner`, 15, in escapes). */
const MAX_PARAMETER_NAME = 64;
/** The identity of host text a decision did not read (see above): no host normalises to it. */
export const UNREADABLE_HOST = '(host text too long to read)';
/** What is left of HOST_TEXT_BUDGET in the decision being read; undefined outside one (the scan, the policy's own identities). */
let hostTextLeft: number | undefined;
/**
 * URLs and connection strings a decision reads (each string past the cheap look at its scheme). One costs
 * microseconds, one `new URL` rejects (`https://@@@`) tens: a megabyte of short ones held the event loop
 * 0.5 s. Beyond, each names UNREADABLE_HOST (fail closed); free text costs nothing against it.
 */
const MAX_LOCATIONS = 1_000;
/** What is left of MAX_LOCATIONS in the decision being read; undefined outside one. */
let locationsLeft: number | undefined;

/**
 * Runs `read` with a fresh HOST_TEXT_BUDGET (reads are synchronous: nothing else runs meanwhile): a
 * decision's reads, and the gateway's (src/gateway/resources.ts), which reads hosts as the decision will.
 */
export function withHostBudget<T>(read: () => T): T {
  const outer = hostTextLeft;
  const outerLocations = locationsLeft;
  hostTextLeft = HOST_TEXT_BUDGET;
  locationsLeft = MAX_LOCATIONS;
  try {
    return read();
  } finally {
    hostTextLeft = outer;
    locationsLeft = outerLocations;
  }
}
const KEY_START = /^\s*[A-Za-z_]/;
/** `NAME=` of an environment entry or `--name=` of a command-line option, before a value read as a whole. */
const ASSIGNMENT = /^\s*(?:--?)?[A-Za-z_][A-Za-z0-9_.-]*=/;
/** Longest `NAME=` read as an assignment of a host or database argument. */
const MAX_ASSIGNMENT_NAME = 64;
const LEADING_DASHES = /^-+/;
const LINE_BREAK = /\r\n|\r|\n/;
const ENV_FILE_LINE = /^\s*(?:#.*|(?:export\s+)?[A-Za-z_][A-Za-z0-9_.-]*=.*)?$/;
/** Keys of semicolon connection strings (ADO.NET, ODBC, Npgsql, MySQL) naming where to connect. */
const SEMICOLON_HOST_KEYS: ReadonlySet<string> = new Set(['server', 'data source', 'datasource', 'address', 'addr', 'network address', 'host', 'hostname']);
/** Keys of semicolon connection strings naming the database. */
const SEMICOLON_DATABASE_KEYS: ReadonlySet<string> = new Set(['database', 'initial catalog', 'dbname']);
const SEMICOLON_KEY = /^[a-z][a-z0-9 _]*$/;
const WHITESPACE_RUN = /\s+/g;
const WHITESPACE = /\s/;
/** SQL Server's protocol prefix of a server name (`tcp:prod-sql`). */
const SQLSERVER_PROTOCOL = /^\s*(tcp|np|lpc|admin):/i;
const KV_PAIR = /\s*([A-Za-z0-9_]+)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s\\]|\\.)*)(?=\s|$)/y;
const BACKSLASH_ESCAPE = /\\(.)/g;
const MAX_RESOURCE_IDS = 64;
const MAX_STRING = 4096;

export interface ParsedLocation {
  scheme: string;
  /** Host(s) of the authority as a client connects to them, lower case (%-escapes decoded for network schemes). */
  hosts: string[];
  /**
   * Further hosts a client may connect to: libpq `host=`/`hostaddr=`/`service=` query parameters, and
   * every host-like part of an authority that parsers may read differently (a `\`, an `@` after `?` or
   * `#` in a connection string, a URL `new URL` rejects). Matched like hosts: fail closed.
   */
  otherHosts: string[];
  /** Database name(s) of a connection string: the path's first segment and libpq `dbname=` (not for web URLs). */
  databases: string[];
  /** Canonical form: scheme://host[:port]/path, no credentials, query or fragment. */
  canonical: string;
  /** A JDBC URL: a database server's address whatever its driver's scheme (`db2`, `jtds:sqlserver`, `h2:tcp`…). */
  network?: true;
  /** Written as a web URL (`https://...`) but `new URL` rejects it: its hosts were read by hand. */
  malformed?: true;
}

function stripPort(host: string): string {
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const colon = host.lastIndexOf(':');
  return colon >= 0 ? host.slice(0, colon) : host;
}

/** A string without the C0 controls and spaces WHATWG URL parsing trims (and what `trim` trims). */
function trimmed(raw: string): string {
  let start = 0;
  let end = raw.length;
  while (start < end && raw.charCodeAt(start) <= 0x20) start++;
  while (end > start && raw.charCodeAt(end - 1) <= 0x20) end--;
  return start === 0 && end === raw.length ? raw.trim() : raw.slice(start, end).trim();
}

function percentDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    // A malformed escape elsewhere must not hide the ASCII ones: decode those alone.
    return text.replace(PERCENT_ASCII, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
  }
}

/** A host as a resolver would see it: %-escapes decoded (twice-encoded too), NFKC (fullwidth), lower case. */
function normaliseHost(raw: string): string {
  let host = raw.toLowerCase();
  if (PLAIN_HOST.test(host)) return host;
  if (hostTextLeft !== undefined && (host.length > MAX_HOST_TEXT || hostTextLeft <= 0)) return UNREADABLE_HOST;
  for (let i = 0; i < 3 && host.includes('%'); i++) {
    const decoded = percentDecode(host);
    if (decoded === host) break;
    host = decoded;
  }
  const normalised = host.normalize('NFKC').toLowerCase().replace(IDEOGRAPHIC_STOPS, '.').replace(IGNORABLE, '');
  if (hostTextLeft === undefined) return normalised;
  hostTextLeft -= normalised.length;
  return hostTextLeft < 0 || normalised.length > MAX_HOST_TEXT ? UNREADABLE_HOST : normalised;
}

/** Adds a host, and if it holds characters no host name has, each host-like run of it. */
function addHost(raw: string, hosts: string[], candidates: string[]): void {
  const host = normaliseHost(raw.trim());
  if (!host) return;
  hosts.push(host);
  if (PLAIN_HOST.test(host) || host.startsWith('[') || host === UNREADABLE_HOST) return;
  for (const part of new Set(host.split(NOT_HOST))) if (part && part !== host) candidates.push(part);
}

/**
 * Every host-like part of an authority whose reading is ambiguous; text after `:` (port, password) is
 * dropped, and a part repeated is read once. At most MAX_LIST_ITEMS parts are read: an authority cut
 * into more names UNREADABLE_HOST too (fail closed).
 */
function addAuthorityParts(authority: string, out: string[]): void {
  for (const part of new Set(itemsOf(authority, AUTHORITY_SPLIT, out))) {
    const host = part.startsWith('[') ? part : (part.split(':')[0] as string);
    if (host) addHost(host, out, out);
  }
}

/** A list's first MAX_LIST_ITEMS items; with more, UNREADABLE_HOST is added to `unreadable`. */
function itemsOf(text: string, separator: string | RegExp, unreadable: string[]): string[] {
  const items = text.split(separator, MAX_LIST_ITEMS + 1);
  if (items.length > MAX_LIST_ITEMS) {
    items.length = MAX_LIST_ITEMS;
    unreadable.push(UNREADABLE_HOST);
  }
  return items;
}

/** A value too long to read stands for UNREADABLE_HOST, which is read as a host or database name like any other. */
function readable(value: string): string {
  return value.length > MAX_NAME_TEXT ? UNREADABLE_HOST : value;
}

function addLibpqParameter(key: string, value: string, hosts: string[], databases: string[]): void {
  if (LIBPQ_HOST_KEYS.has(key)) {
    for (const h of itemsOf(value, ',', hosts)) {
      const host = h.trim();
      // A directory (or abstract namespace) is a local Unix socket, not a network identity.
      if (host && !host.startsWith('/') && !host.startsWith('@')) addHost(stripPort(host), hosts, hosts);
    }
  } else if (key === 'dbname' && value && !NUMERIC.test(value)) {
    databases.push(value.toLowerCase());
  }
}

/** A connection string's query parameter: libpq's, and `database=`/`databaseName=`/`serverName=` of other drivers. */
function addUrlParameter(key: string, value: string, hosts: string[], databases: string[]): void {
  if (PROPERTY_HOST_KEYS.has(key)) {
    for (const h of itemsOf(value, ',', hosts)) if (h.trim()) addHost(stripPort(h.trim()), hosts, hosts);
  } else if (PROPERTY_DATABASE_KEYS.has(key) && value && !NUMERIC.test(value)) {
    databases.push(value.toLowerCase());
  } else {
    addLibpqParameter(key, value, hosts, databases);
  }
}

/** `key=value` properties separated by `;` (a JDBC URL's tail): hosts and databases by PROPERTY_*_KEYS. */
function addProperties(text: string, hosts: string[], databases: string[]): void {
  for (const pair of itemsOf(text, ';', hosts)) {
    const eq = pair.indexOf('=');
    if (eq > 0) addUrlParameter(pair.slice(0, eq).trim().toLowerCase(), readable(pair.slice(eq + 1).trim()), hosts, databases);
  }
}

/**
 * A JDBC URL after `jdbc:`. Every JDBC URL names a database server, so any `subprotocol://` is read as a
 * network connection string whatever the driver (`db2://`, `jtds:sqlserver://`, `h2:tcp://`, `derby://`…);
 * Oracle's and Sybase's forms without `//` are read apart. Undefined for an embedded database (`h2:mem:`,
 * `sqlite:/path`) and for a web scheme.
 */
function parseJdbc(text: string): ParsedLocation | undefined {
  const oracle = JDBC_ORACLE.exec(text);
  if (oracle) return parseOracleTarget(text.slice(oracle[0].length).trim());
  const sep = text.indexOf('://');
  if (sep < 0 && JDBC_SYBASE.test(text)) return parseConnectionString('sybase', text.slice('sybase:tds:'.length), true);
  if (sep <= 0) return undefined;
  const scheme = text.slice(0, sep).toLowerCase();
  if (WEB_SCHEMES.has(scheme)) return undefined;
  return parseConnectionString(scheme, text.slice(sep + 3), true);
}

/** What follows `@` in Oracle's JDBC URL: `//host:port/service`, `host:port:SID`, `host:port/service`, a descriptor, a TNS alias. */
function parseOracleTarget(target: string): ParsedLocation {
  if (target.startsWith('//')) return parseConnectionString('oracle', target.slice(2), true);
  // `ldap://directory:389/service,cn=OracleContext…`, `tcps://host:port/service` (EZConnect with a protocol).
  const scheme = ORACLE_TARGET_SCHEME.exec(target);
  if (scheme) return parseConnectionString((scheme[1] as string).toLowerCase(), target.slice(scheme[0].length), true);
  const hosts: string[] = [];
  const databases: string[] = [];
  if (target.startsWith('(')) {
    for (const m of target.matchAll(DESCRIPTOR_HOST)) addHost(m[1] as string, hosts, hosts);
    for (const m of target.matchAll(DESCRIPTOR_SERVICE)) databases.push((m[1] as string).toLowerCase());
  } else {
    // host[:port](:SID | /service), or a TNS alias alone: the alias counts as a host (fail closed).
    const slash = target.indexOf('/');
    const hostAndPort = slash < 0 ? target : target.slice(0, slash);
    const parts = hostAndPort.split(':', 3);
    if (parts[0]) addHost(parts[0], hosts, hosts);
    const after = slash < 0 ? '' : target.slice(slash + 1);
    const nameEnd = after.search(ORACLE_NAME_END);
    const name = slash < 0 ? parts[2] : nameEnd < 0 ? after : after.slice(0, nameEnd);
    if (name && !NUMERIC.test(name)) databases.push(name.toLowerCase());
  }
  return { scheme: 'oracle', network: true, hosts, otherHosts: [], databases, canonical: `oracle://${hosts.join(',')}${databases.length > 0 ? `/${databases[0]}` : ''}` };
}

function parseConnectionString(scheme: string, whole: string, forceNetwork = false): ParsedLocation {
  const hostOnly = !forceNetwork && HOST_ONLY_SCHEMES.has(scheme);
  const network = forceNetwork || hostOnly || DB_SCHEMES.has(scheme);
  const database = network && !hostOnly;
  let rest = whole;
  let properties: string | undefined;
  if (database) {
    // `;key=value` properties after the user info (SQL Server's and jTDS's JDBC URLs:
    // `sqlserver://sql01:1433;databaseName=app`, `jtds:sqlserver://h/app;instance=x`) name hosts and databases
    // too, and end the host or database name before them.
    const end = whole.search(PATH_END);
    const semi = whole.indexOf(';', (end < 0 ? whole : whole.slice(0, end)).lastIndexOf('@') + 1);
    if (semi >= 0) {
      properties = whole.slice(semi + 1);
      rest = whole.slice(0, semi);
    }
  }
  const cut = rest.search(PATH_END);
  const authority = cut < 0 ? rest : rest.slice(0, cut);
  let tail = cut < 0 ? '' : rest.slice(cut);
  const at = authority.lastIndexOf('@');
  const hostPart = (at >= 0 ? authority.slice(at + 1) : authority).toLowerCase();
  const hosts: string[] = [];
  const otherHosts: string[] = [];
  const databases: string[] = [];
  if (properties !== undefined) addProperties(properties, otherHosts, databases);
  for (const h of new Set(itemsOf(hostPart, ',', otherHosts))) {
    const host = stripPort(h.trim());
    if (!host) continue;
    if (network) addHost(host, hosts, otherHosts);
    else hosts.push(host);
  }
  const q = tail.search(QUERY_START);
  const hash = q >= 0 && tail[q] === '?' ? tail.indexOf('#', q + 1) : -1;
  const query = q >= 0 && tail[q] === '?' ? tail.slice(q + 1, hash < 0 ? undefined : hash) : undefined;
  if (q >= 0) tail = tail.slice(0, q);
  if (database) {
    const start = tail.search(NOT_SLASH);
    const end = start < 0 ? -1 : tail.indexOf('/', start);
    const first = start < 0 ? undefined : tail.slice(start, end < 0 ? undefined : end);
    if (first !== undefined) {
      const name = percentDecode(readable(first));
      // redis://host/2 selects a numbered database: not a name.
      if (!NUMERIC.test(name)) databases.push(name.toLowerCase());
    }
    if (query) {
      for (const pair of itemsOf(query, '&', otherHosts)) {
        const eq = pair.indexOf('=');
        // Only a parameter naming a host or database has its value read (and %-decoded).
        const key = eq > 0 && eq <= MAX_PARAMETER_NAME ? percentDecode(pair.slice(0, eq)).toLowerCase() : '';
        if (LOCATION_PARAMETERS.has(key)) addUrlParameter(key, percentDecode(readable(pair.slice(eq + 1))), otherHosts, databases);
      }
    }
  }
  if (network) {
    // libpq looks for the `@` of the user info up to the first `/`, past `?` and `#`; WHATWG and this
    // parser stop at them. A `\` ends nothing for either but does for fetch. Count every reading.
    const slash = rest.indexOf('/');
    const region = slash < 0 ? rest : rest.slice(0, slash);
    const mark = region.search(QUERY_START);
    if (region.includes('\\') || (mark >= 0 && region.lastIndexOf('@') > mark)) addAuthorityParts(region, otherHosts);
  }
  const path = tail ? posix.normalize(tail) : '';
  // A database named only by a property (`;databaseName=app`) is part of the resource, as a path would be.
  const shown = path === '.' || path === '' ? (properties !== undefined && databases.length > 0 ? `/${databases[databases.length - 1]}` : '') : path;
  const location: ParsedLocation = { scheme, hosts, otherHosts, databases, canonical: `${scheme}://${hostPart}${shown}` };
  if (forceNetwork) location.network = true;
  return location;
}

/** http(s), ws(s), ftp: the host `new URL` gives, as fetch clients connect to it. */
function parseWebUrl(text: string, scheme: string, afterColon: string): ParsedLocation | undefined {
  const slashed = SLASHES.exec(afterColon)?.[0] ?? '';
  const rest = afterColon.slice(slashed.length);
  const cut = rest.search(PATH_END);
  const authority = cut < 0 ? rest : rest.slice(0, cut);
  const host = authority.slice(authority.lastIndexOf('@') + 1);
  // `new URL` maps a host through IDNA as NFKC does: as costly (above), and not to be read in a decision.
  if (hostTextLeft !== undefined && authority.length > MAX_HOST_TEXT && !PLAIN_HOST.test(host.toLowerCase())) {
    return { scheme, hosts: [UNREADABLE_HOST], otherHosts: [], databases: [], canonical: `${scheme}://${UNREADABLE_HOST}`, malformed: true };
  }
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    // Not a URL a client would fetch, unless it looks like one (`https://`, `https:\`): then below.
    if (slashed.length === 0) return undefined;
  }
  if (url === undefined) {
    const loc = parseConnectionString(scheme, rest);
    addAuthorityParts(authority, loc.otherHosts);
    loc.malformed = true;
    return loc;
  }
  const otherHosts: string[] = [];
  // Other clients (httpx, Go, curl) do not end the authority at `\`, and may not decode a host as
  // WHATWG does: with a `\` in the authority, or a `%` or non-ASCII in its host, count every
  // host-like part too.
  if (authority.includes('\\')) addAuthorityParts(authority, otherHosts);
  else if (ENCODED_HOST.test(host)) addAuthorityParts(host, otherHosts);
  return { scheme, hosts: url.hostname ? [url.hostname] : [], otherHosts, databases: [], canonical: `${scheme}://${url.host}${url.pathname}` };
}

/**
 * A URL or connection string (`scheme://...`, also behind `jdbc:`; http(s)/ws(s)/ftp however WHATWG
 * accepts them, `https:host`, `https:\\host` and tabs or newlines anywhere included), or undefined.
 */
export function parseLocation(raw: string): ParsedLocation | undefined {
  return parse(raw, true);
}

/** Whether a decision may read one more URL or connection string (MAX_LOCATIONS). */
function takeLocation(): boolean {
  if (locationsLeft === undefined) return true;
  locationsLeft--;
  return locationsLeft >= 0;
}

/** A URL or connection string past MAX_LOCATIONS: its host is UNREADABLE_HOST, whatever it says. */
function unreadLocation(scheme: string): ParsedLocation {
  return { scheme, hosts: [UNREADABLE_HOST], otherHosts: [], databases: [], canonical: `${scheme}://${UNREADABLE_HOST}`, network: true, malformed: true };
}

function parse(raw: string, includeWeb: boolean): ParsedLocation | undefined {
  let text = trimmed(raw);
  if (JDBC.test(text)) return takeLocation() ? parseJdbc(text.slice(5).replace(TAB_OR_NEWLINE, '')) : unreadLocation('jdbc:unread');
  // Cheap rejection first (`Note: ...` is free text), before the copy without tabs and newlines.
  const m = SCHEME_PREFIX.exec(text);
  if (!m) return undefined;
  const scheme = m[0].slice(0, -1).replace(TAB_OR_NEWLINE, '').toLowerCase();
  const web = WEB_SCHEMES.has(scheme);
  if (web && !includeWeb) return undefined;
  if (!web && !text.slice(m[0].length, m[0].length + 8).replace(TAB_OR_NEWLINE, '').startsWith('//')) return undefined;
  if (!takeLocation()) return unreadLocation(scheme);
  if (text.includes('\t') || text.includes('\n') || text.includes('\r')) text = text.replace(TAB_OR_NEWLINE, '');
  const afterColon = text.slice(text.indexOf(':') + 1);
  return web ? parseWebUrl(text, scheme, afterColon) : parseConnectionString(scheme, afterColon.slice(2), isDriverScheme(scheme));
}

/** SQLAlchemy's `dialect+driver` (`postgresql+asyncpg`, `mysql+pymysql`, `mssql+pyodbc`): a connection string of the dialect. */
function isDriverScheme(scheme: string): boolean {
  const plus = scheme.indexOf('+');
  return plus > 0 && !DB_SCHEMES.has(scheme) && DB_SCHEMES.has(scheme.slice(0, plus));
}

/**
 * Hosts and database names of a libpq key/value DSN (`host=prod-db dbname=app`): the whole string must
 * be `key=value` pairs (values bare or single-quoted, `\` escaping).
 */
function keyValueIdentities(value: string, out: Set<string>): void {
  const hosts: string[] = [];
  const databases: string[] = [];
  KV_PAIR.lastIndex = 0;
  let end = 0;
  for (let m = KV_PAIR.exec(value); m !== null && m[0].length > 0; m = KV_PAIR.exec(value)) {
    end = KV_PAIR.lastIndex;
    const raw = m[2] as string;
    const v = (raw.startsWith("'") && raw.endsWith("'") && raw.length > 1 ? raw.slice(1, -1) : raw).replace(BACKSLASH_ESCAPE, '$1');
    addLibpqParameter((m[1] as string).toLowerCase(), v, hosts, databases);
  }
  if (end === 0 || value.slice(end).trim() !== '') return;
  for (const h of hosts) out.add(h);
  for (const d of databases) out.add(d);
}

/**
 * Hosts and database names of a semicolon connection string (ADO.NET, ODBC, Npgsql, MySQL:
 * `Server=tcp:prod-sql,1433;Database=app`, `Data Source=prod-db;Initial Catalog=app`): the whole value
 * must be `key=value` pairs separated by `;` (one pair alone: `Server=prod-sql`, a value without spaces), values bare or quoted (`"…"`, `'…'`, ODBC's `{…}`). A
 * server's port (`,1433`, `:5432`), protocol prefix (`tcp:`) and named instance (`\SQLEXPRESS`) are
 * dropped; several hosts (`Host=a,b`) each count; a host-like run of anything else (an Oracle
 * descriptor's `(HOST=prod-db)`) counts too.
 */
function semicolonIdentities(value: string, out: Set<string>): void {
  const hosts: string[] = [];
  const databases: string[] = [];
  const n = value.length;
  const hasSemicolon = value.includes(';');
  let i = 0;
  while (i < n) {
    const eq = value.indexOf('=', i);
    if (eq < 0) {
      if (value.slice(i).trim() !== '') return;
      break;
    }
    const key = value.slice(i, eq).trim().toLowerCase().replace(WHITESPACE_RUN, ' ');
    if (!SEMICOLON_KEY.test(key)) return;
    let j = eq + 1;
    while (j < n && value[j] === ' ') j++;
    let raw: string;
    const open = value[j];
    if (open === '"' || open === "'" || open === '{') {
      const end = value.indexOf(open === '{' ? '}' : open, j + 1);
      if (end < 0) return;
      raw = value.slice(j + 1, end);
      j = end + 1;
      while (j < n && value[j] === ' ') j++;
      if (j < n && value[j] !== ';') return;
    } else {
      const end = value.indexOf(';', j);
      raw = (end < 0 ? value.slice(j) : value.slice(j, end)).trim();
      j = end < 0 ? n : end;
    }
    i = j + 1;
    // Without a `;` the value is the whole rest of the string: free text (`server=prod is down`) is not a host.
    if (!hasSemicolon && WHITESPACE.test(raw)) return;
    if (SEMICOLON_HOST_KEYS.has(key)) {
      for (const part of raw.replace(SQLSERVER_PROTOCOL, '').split(',')) {
        const host = stripPort((part.split('\\')[0] as string).trim());
        if (host && !NUMERIC.test(host) && !host.startsWith('/')) addHost(host, hosts, hosts);
      }
    } else if (SEMICOLON_DATABASE_KEYS.has(key) && raw && !NUMERIC.test(raw)) {
      databases.push(raw.toLowerCase());
    }
  }
  for (const h of hosts) out.add(h);
  for (const d of databases) out.add(d);
}

/**
 * Text of several lines each blank, a `#` comment or `NAME=…`: the content of an env file (a `.env`
 * template written in development), free text rather than one assignment. A value split across lines to
 * hide a host (`DATABASE_URL=postgres://pr⏎od-db/app`, which clients that drop newlines join again) is not
 * such text unless its next line also starts with `NAME=`, and a host with a `=` in it resolves nowhere.
 */
function isEnvFileText(value: string): boolean {
  if (!value.includes('\n') && !value.includes('\r')) return false;
  for (const line of value.split(LINE_BREAK)) if (!ENV_FILE_LINE.test(line)) return false;
  return true;
}

function addLocation(loc: ParsedLocation, out: Set<string>): void {
  if (!loc.network && !DB_SCHEMES.has(loc.scheme) && !HOST_ONLY_SCHEMES.has(loc.scheme) && !WEB_SCHEMES.has(loc.scheme)) return;
  for (const h of loc.hosts) out.add(h);
  for (const h of loc.otherHosts) out.add(h);
  for (const d of loc.databases) out.add(d);
}

/** A whole value that starts as a %-encoded URL or connection string (`postgres%3A%2F%2F…`), encoded up to three times. */
const ENCODED_SCHEME = /^\s*[A-Za-z][A-Za-z0-9+.-]*%(?:25){0,2}3a/i;

/**
 * A whole value that is a URL or connection string %-encoded (`postgres%3A%2F%2Fprod-db%2Fapp`, as a
 * query parameter carries one): a tool or its client may decode it before connecting, so it is read
 * decoded (fail closed). Only when the decoded text parses as one: anything else stays unread.
 */
function encodedLocation(value: string, includeWeb: boolean): ParsedLocation | undefined {
  let text = value;
  for (let i = 0; i < 3 && !text.includes(':'); i++) text = percentDecode(text);
  return text.includes(':') ? parse(text, includeWeb) : undefined;
}

/**
 * git's scp-like address of a repository over ssh, `user@host:path` (`git@prod-host:repo.git`,
 * `git@[prod-host]:repo`): the whole value, no whitespace, a user before the `@` and no `/` before the
 * `:`. git hands `user@host` to ssh as written. Without a user it is not read: `host:path` is also
 * git's `rev:path` (`main:README.md`) and an image's `name:tag` (`app:main`).
 */
const SCP_LIKE = /^[A-Za-z0-9._~+-]+@(\[[^\]\s/@]+\]|[^\s:/@[\]\\]+):(?!\/\/)\S*$/;

function scpLikeIdentity(value: string, out: Set<string>): void {
  const host = SCP_LIKE.exec(trimmed(value))?.[1];
  if (host === undefined) return;
  const hosts: string[] = [];
  addHost(host.startsWith('[') ? host.slice(1, -1) : host, hosts, hosts);
  for (const h of hosts) out.add(h);
}

/** Network identities of one string that is a whole connection string or (when allowed) web URL. */
export function identitiesOf(value: string, includeWeb: boolean, out: Set<string>): void {
  const eq = value.indexOf('=');
  if (!value.includes(':') && value.includes('%') && ENCODED_SCHEME.test(value)) {
    const loc = encodedLocation(value, includeWeb);
    if (loc) addLocation(loc, out);
  }
  // Cheap rejection first: almost every argument string is free text or a path.
  if (value.includes(':')) {
    const loc = parse(value, includeWeb);
    if (loc) {
      addLocation(loc, out);
      return;
    }
    // An assignment whose whole value is a connection string: `DATABASE_URL=postgres://prod-db/app` (an
    // environment entry), `--db-url=jdbc:…` (a command-line option). One level only: the rest is not read again.
    if (value.includes('@')) scpLikeIdentity(value, out);
    if (eq > 0 && value.includes(':', eq) && !isEnvFileText(value)) {
      const assignment = ASSIGNMENT.exec(value);
      const inner = assignment ? parse(value.slice(assignment[0].length), includeWeb) : undefined;
      if (inner) addLocation(inner, out);
    }
  }
  if (eq > 0) {
    // A host or database as an assignment (`PGHOST=prod-db` in an environment list, `--host=prod-db` in
    // argv), read as the argument of that name would be.
    // (A `;` makes it a semicolon connection string, read below.)
    const assignment = eq <= MAX_ASSIGNMENT_NAME && !value.includes(';') ? ASSIGNMENT.exec(value) : null;
    if (assignment) argumentIdentity(assignment[0].slice(0, -1).trim().replace(LEADING_DASHES, ''), value.slice(assignment[0].length), out);
    if (KEY_START.test(value)) {
      keyValueIdentities(value, out);
      semicolonIdentities(value, out);
    }
  }
}

/**
 * Network identities of an upstream server's identity, the policy file's `identity` (compile.ts) and the
 * one a gateway reports (src/tools) alike: the host of `url`, and hosts and database names of connection
 * strings among `args` (web URLs in args do not count). The command is never read.
 */
export function upstreamIdentitiesOf(identity: { url?: string | undefined; args?: readonly string[] | undefined }, out: Set<string> = new Set()): Set<string> {
  if (identity.url !== undefined) identitiesOf(identity.url, true, out);
  for (const a of identity.args ?? []) identitiesOf(a, false, out);
  return out;
}

/** Whole segments of an identity: `prod-db.internal` → prod, db, internal. */
export function segmentsOf(identity: string): string[] {
  return identity.split(SEGMENT_SPLIT);
}

/** The first forbidden pattern matching a whole segment of one of the identities. */
export function matchProductionPattern(identities: readonly string[], patterns: ReadonlySet<string>): { identity: string; pattern: string } | undefined {
  if (patterns.size === 0) return undefined;
  for (const identity of identities) {
    if (identity === UNREADABLE_HOST) return { identity, pattern: '*' };
    for (const seg of segmentsOf(identity)) {
      if (patterns.has(seg)) return { identity, pattern: seg };
    }
  }
  return undefined;
}

/** Longest identity a denial quotes: the call's arguments hold the whole of it. */
const MAX_QUOTED_IDENTITY = 200;

/** How a denial says what matched a production pattern: `reaches "prod-db.internal", which matches the production pattern "prod"`. */
export function describeProductionHit(hit: { identity: string; pattern: string }): string {
  if (hit.identity === UNREADABLE_HOST) {
    return `names host text too long to read (over ${MAX_HOST_TEXT.toLocaleString('en-US')} characters in one host, or ${HOST_TEXT_BUDGET.toLocaleString('en-US')} in all, outside plain ASCII; or a URL or connection string cut into over ${MAX_LIST_ITEMS} parts, hosts or parameters, or naming over ${MAX_NAME_TEXT.toLocaleString('en-US')} characters; or over ${MAX_LOCATIONS.toLocaleString('en-US')} of them in one call), which may be a production host (fail closed)`;
  }
  const quoted = hit.identity.length > MAX_QUOTED_IDENTITY ? `${hit.identity.slice(0, MAX_QUOTED_IDENTITY)}… (${hit.identity.length.toLocaleString('en-US')} characters)` : hit.identity;
  return `reaches "${storable(quoted)}", which matches the production pattern "${hit.pattern}"`;
}

/**
 * The id of one resource. Ids are quoted back to the agent (the CASCADE_WRITE denial) and into alerts and
 * halt records, so NUL and unpaired surrogates become U+FFFD (`storable`); any other id is unchanged, as
 * cascade detection compares ids across calls.
 */
function normaliseResource(server: string, raw: string): string | undefined {
  if (raw === '' || raw.length > MAX_STRING) return undefined;
  // URL parsing ignores surrounding spaces; a path keeps them: `a.md ` is another file than `a.md`
  // (server-filesystem writes both), so trimming would count many files as one resource.
  const loc = parseLocation(raw);
  if (loc) return storable(loc.canonical);
  const path = posix.normalize(raw.replaceAll('\\', '/'));
  const trimmed = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  return storable(`${server}:${trimmed}`);
}

function stringsAt(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return [];
}

/**
 * Resource ids of a call (at least one). Read with a host budget as the identities are: parsing a
 * URL reads its host, and 85,000 × U+FDFA in one `path` took 290 ms.
 */
export function resourceIdsOf(server: string, args: Record<string, unknown>, resources: readonly string[] | undefined): string[] {
  return withHostBudget(() => readResourceIds(server, args, resources));
}

function readResourceIds(server: string, args: Record<string, unknown>, resources: readonly string[] | undefined): string[] {
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
        // Longer than an id may be, joined to the repository or not (normaliseResource).
        if (s.length > MAX_STRING) continue;
        const id = base && parseLocation(s) === undefined ? normaliseResource(server, `${base}/${s.replace(LEADING_SLASHES, '')}`) : normaliseResource(server, s);
        if (id) out.add(id);
        if (out.size >= MAX_RESOURCE_IDS) break;
      }
    }
    if (out.size === 0 && base) out.add(storable(`${server}:${base}`));
  }
  if (out.size === 0) out.add(`${server}:*`);
  return [...out];
}

/**
 * Network identities a call touches (without the server's own, which the caller adds): hosts and
 * database names of connection strings anywhere in the arguments (whole string values only) or the
 * resources, hosts and databases given as separate arguments (argumentIdentity) or as a flag and its
 * value in a list (argvIdentities), and hosts of http(s) resources and of url/uri/source/destination
 * arguments (with a list cut at the schema's maximum, of every argument). Every string is looked at, however deep:
 * the body limit bounds the work. What is read has bounds (host text outside plain ASCII, HOST_TEXT_BUDGET;
 * MAX_LIST_ITEMS, MAX_NAME_TEXT in one URL or connection string; MAX_LOCATIONS of them),
 * and what is past one is UNREADABLE_HOST, which every production pattern matches: nothing hides behind it.
 */
export function callIdentitiesOf(args: Record<string, unknown>, resources: readonly string[] | undefined, out: Set<string>): void {
  withHostBudget(() => readCallIdentities(args, resources, out));
}

function readCallIdentities(args: Record<string, unknown>, resources: readonly string[] | undefined, out: Set<string>): void {
  const hasResources = resources !== undefined && resources.length > 0;
  if (hasResources) for (const r of resources) identitiesOf(r, true, out);
  const webEverywhere = hasResources && resources.length >= MAX_GATEWAY_RESOURCES;
  // URL keys are read whether or not the gateway sent resources: its resources add to what the
  // arguments reach, they never hide it (a gateway that normalised too little is not a way around).
  // A key's kind is worked out once per call: every string of a list under it shares the key, and
  // reading a 100,000-character key again for each of 35,000 items took 2.2 s.
  const kinds = new Map<string, ConnectionKeyKind>();
  const kindOf = (key: string): ConnectionKeyKind => {
    let kind = kinds.get(key);
    if (kind === undefined) {
      kind = connectionKeyKind(key);
      kinds.set(key, kind);
    }
    return kind;
  };
  firstString(
    args,
    (value, key) => {
      identitiesOf(value, webEverywhere || (key !== undefined && URL_KEYS.has(key)), out);
      if (key !== undefined) argumentIdentity(key, value, out, kindOf(key));
      if (key !== undefined && URL_ONLY_KEYS.has(key)) schemelessUrlIdentities(value, out);
    },
    (items, owner) => argvIdentities(items, owner, out),
  );
}

/** Two slashes or backslashes, in any mix, starting a URL reference: an authority follows (WHATWG reads `\\` as `/`). */
const NETWORK_PATH = /^[/\\]{2}/;
/** A host and a numeric port with no scheme before them (`prod-db.internal:5432`, `[::1]:6379/0`). */
const HOST_AND_PORT = /^(?:\[[0-9A-Fa-f:.]+\]|[^\s:/?#@\\[\]]+):\d{1,5}(?:[/?#]|$)/;

/**
 * The host of a URL written without a scheme under a `url` or `uri` key: a network-path reference
 * (`//prod-api/x`, `\\prod-api\x`, `/\prod-api`), which a tool resolving it against its base URL
 * (`new URL(url, base)`, a browser) fetches from that host whatever the base, read as `https:` + it; and
 * a host with a port (`prod-db.internal:5432/x`), which curl and ioredis take as `http://` + it. A path
 * with one slash, or a host without a port (`main/index.html`, a relative reference), is not read.
 */
function schemelessUrlIdentities(value: string, out: Set<string>): void {
  const text = trimmed(value);
  if (text.length < 2) return;
  if (text[0] === '/' || text[0] === '\\') {
    if (NETWORK_PATH.test(text.slice(0, 8).replace(TAB_OR_NEWLINE, ''))) identitiesOf(`https:${text}`, true, out);
  } else if (HOST_AND_PORT.test(text)) {
    identitiesOf(`http://${text}`, true, out);
  }
}

/** A flag whose value is the next argv element: `--host`, `-host`, `--mysql-host`, `--dbname`. */
const ARGV_FLAG = /^--?([A-Za-z][A-Za-z0-9_.-]+)$/;
/** Longest argv element read as a flag or a client's name. */
const MAX_ARGV_WORD = 256;
/** Keys of the object holding an argv list that name the program it runs (`{command: "psql", args: [...]}`). */
const COMMAND_KEYS: ReadonlySet<string> = new Set(['command', 'cmd', 'program', 'executable', 'bin', 'binary']);
const POSTGRES_CLIENT_FLAGS: ReadonlyMap<string, string> = new Map([
  ['-h', 'host'],
  ['-d', 'dbname'],
]);
const MYSQL_CLIENT_FLAGS: ReadonlyMap<string, string> = new Map([
  ['-h', 'host'],
  ['-D', 'database'],
]);
const HOST_ONLY_CLIENT_FLAGS: ReadonlyMap<string, string> = new Map([['-h', 'host']]);
const SQLCMD_CLIENT_FLAGS: ReadonlyMap<string, string> = new Map([
  ['-S', 'host'],
  ['-d', 'database'],
]);
/**
 * Database clients whose short flags name the host and database (`psql -h prod-db -d app`). Elsewhere `-h`
 * is mostly help and `-d` debug, detach or delete (`git branch -d main`, `docker run -d`), so short
 * flags are read only in an argv that runs one of these.
 */
const CLIENT_FLAGS: ReadonlyMap<string, ReadonlyMap<string, string>> = new Map([
  ...['psql', 'pg_dump', 'pg_dumpall', 'pg_restore', 'pgbench', 'pg_isready', 'pg_basebackup', 'createdb', 'dropdb', 'vacuumdb', 'reindexdb', 'clusterdb', 'vsql', 'clickhouse-client'].map(
    (c) => [c, POSTGRES_CLIENT_FLAGS] as const,
  ),
  ...['mongodump', 'mongorestore', 'mongoexport', 'mongoimport', 'mongofiles'].map((c) => [c, POSTGRES_CLIENT_FLAGS] as const),
  ...['mysql', 'mariadb'].map((c) => [c, MYSQL_CLIENT_FLAGS] as const),
  ...['mysqldump', 'mysqladmin', 'mysqlimport', 'mysqlcheck', 'mysqlshow', 'mariadb-dump', 'mariadb-admin', 'redis-cli', 'redis-benchmark', 'valkey-cli', 'keydb-cli', 'mongostat', 'mongotop'].map(
    (c) => [c, HOST_ONLY_CLIENT_FLAGS] as const,
  ),
  ...['sqlcmd', 'bcp'].map((c) => [c, SQLCMD_CLIENT_FLAGS] as const),
]);
const CLIENT_NAMES = [...CLIENT_FLAGS.keys()].join('|');
/** A program that is one of CLIENT_FLAGS: `psql`, `/usr/bin/psql`, `C:\\…\\PSQL.EXE` (one regex: argv lists can be long). */
const CLIENT_PROGRAM = new RegExp(`^(?:.*[/\\\\])?(${CLIENT_NAMES})(?:\\.exe)?$`, 'i');
/** A word of a command line that is one of CLIENT_FLAGS (`docker exec db psql`). */
const CLIENT_IN_COMMAND = new RegExp(`(?:^|[\\s/\\\\])(${CLIENT_NAMES})(?:\\.exe)?(?=\\s|$)`, 'i');

/** The short flags of the database client a program is, if it is one. */
function clientFlagsOf(program: string): ReadonlyMap<string, string> | undefined {
  const name = program.length <= MAX_ARGV_WORD ? CLIENT_PROGRAM.exec(program)?.[1] : undefined;
  return name === undefined ? undefined : CLIENT_FLAGS.get(name.toLowerCase());
}

/** The client run by the object holding an argv list: a word of its `command` (`docker exec db psql`). */
function ownerClientFlags(owner: Record<string, unknown> | undefined): ReadonlyMap<string, string> | undefined {
  if (owner === undefined) return undefined;
  for (const key of COMMAND_KEYS) {
    const command = owner[key];
    const name = typeof command === 'string' && command.length <= MAX_ARGV_WORD ? CLIENT_IN_COMMAND.exec(command)?.[1] : undefined;
    if (name !== undefined) return CLIENT_FLAGS.get(name.toLowerCase());
  }
  return undefined;
}

/** ssh and the programs that take ssh's options and destination (`autossh`), as a path or a name. */
const SSH_PROGRAM = /^(?:.*[/\\])?(?:ssh|autossh)(?:\.exe)?$/i;
/** ssh's options that take a value, the next element or the rest of the element (`-p 22`, `-p22`, `-lroot`). */
const SSH_VALUE_OPTIONS: ReadonlySet<string> = new Set('BbcDEeFIiJLlmOoPpQRSWw');
/** An `-o` option naming where ssh connects: `HostName=prod-web-1`, `ProxyJump=prod-bastion`. */
const SSH_HOST_OPTION = /^\s*(?:hostname|proxyjump)\s*[=\s]\s*(\S+)\s*$/i;
/** Most argv elements read for ssh's options before its destination. */
const MAX_SSH_OPTIONS = 64;

/** The host of an ssh destination or jump host: `[user@]host[:port]` (the user ends at the last `@`), `[v6]`. */
function addSshHost(destination: string, out: Set<string>): void {
  // `ssh://` destinations are read as URLs (HOST_ONLY_SCHEMES), as every string value is.
  if (destination.includes('://')) return;
  const host = destination.slice(destination.lastIndexOf('@') + 1);
  const bare = host.startsWith('[') ? host.slice(1, host.indexOf(']') < 0 ? undefined : host.indexOf(']')) : (host.split(':')[0] as string);
  if (!bare || NUMERIC.test(bare)) return;
  const hosts: string[] = [];
  addHost(bare, hosts, hosts);
  for (const h of hosts) out.add(h);
}

/** Whether the object holding an argv list runs ssh: its command is ssh itself (`ssh`, `/usr/bin/ssh`), not a command line naming it. */
function isSshCommand(owner: Record<string, unknown>): boolean {
  for (const key of COMMAND_KEYS) {
    const command = owner[key];
    if (typeof command === 'string' && command.length <= MAX_ARGV_WORD && SSH_PROGRAM.test(command.trim())) return true;
  }
  return false;
}

/**
 * Where ssh connects in an argv that runs it: the list's first element is ssh (`["ssh", "-p", "22",
 * "deploy@prod-web-1", "uptime"]`), or the holding object's command is ssh (`{"command": "ssh",
 * "args": [...]}`; a command line naming it, `grep ssh`, is not). The destination is the first element that is no option or option value (ssh reads
 * options after it too), and `-J` jump hosts and `-o HostName=` / `-o ProxyJump=` count as well (as
 * `ssh -G` shows). Elsewhere a word `ssh` in a list is not read (`["grep", "ssh", "main.log"]`).
 */
function sshIdentities(items: readonly unknown[], owner: Record<string, unknown> | undefined, out: Set<string>): void {
  let start: number;
  const first = items[0];
  if (typeof first === 'string' && first.length <= MAX_ARGV_WORD && SSH_PROGRAM.test(first)) start = 1;
  else if (owner !== undefined && isSshCommand(owner)) start = 0;
  else return;
  let destination = false;
  const end = Math.min(items.length, start + MAX_SSH_OPTIONS);
  for (let i = start; i < end; i++) {
    const item = items[i];
    if (typeof item !== 'string' || item.length > MAX_ARGV_WORD) return;
    if (item === '--') {
      const next = items[i + 1];
      if (!destination && typeof next === 'string' && next.length <= MAX_ARGV_WORD) addSshHost(next, out);
      return;
    }
    if (!item.startsWith('-') || item === '-') {
      // After the destination comes the remote command: its words are not ssh's.
      if (destination) return;
      addSshHost(item, out);
      destination = true;
      continue;
    }
    for (let j = 1; j < item.length; j++) {
      const option = item[j] as string;
      if (!SSH_VALUE_OPTIONS.has(option)) continue;
      let value: unknown = item.slice(j + 1);
      if (value === '') value = items[++i];
      if (typeof value !== 'string' || value.length > MAX_ARGV_WORD) break;
      if (option === 'J') for (const jump of value.split(',')) addSshHost(jump.trim(), out);
      if (option === 'o') {
        const named = SSH_HOST_OPTION.exec(value)?.[1];
        if (named !== undefined && named.toLowerCase() !== 'none') for (const h of named.split(',')) addSshHost(h, out);
      }
      break;
    }
  }
}

/**
 * A host or database given as a flag and its value in two argv elements (`["--host", "prod-db"]`,
 * `["psql", "-h", "prod-db", "-d", "app"]`), read as the argument of that name (argumentIdentity).
 * Long flags (`--host`, `-host`, `--mysql-host`) anywhere; a database client's short flags (CLIENT_FLAGS,
 * also attached: `-hprod-db`) only after the client's name in the list or in the holding object's
 * command. A value starting with `-` is the next flag, not a value.
 */
function argvIdentities(items: readonly unknown[], owner: Record<string, unknown> | undefined, out: Set<string>): void {
  // One element is a flag without its value, unless the holding object names the client (`-hprod-db`).
  if (items.length === 0 || (items.length === 1 && owner === undefined)) return;
  sshIdentities(items, owner, out);
  let client = ownerClientFlags(owner);
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (typeof item !== 'string' || item.length > MAX_ARGV_WORD) continue;
    if (!item.startsWith('-')) {
      client = clientFlagsOf(item) ?? client;
      continue;
    }
    const next = items[i + 1];
    const value = typeof next === 'string' && !next.startsWith('-') ? next : undefined;
    const short = client?.get(item);
    if (short !== undefined) {
      if (value !== undefined) argumentIdentity(short, value, out);
      continue;
    }
    const attached = client?.get(item.slice(0, 2));
    if (attached !== undefined && item.length > 2 && !item.startsWith('--')) {
      argumentIdentity(attached, item.slice(2), out);
      continue;
    }
    const flag = ARGV_FLAG.exec(item);
    if (flag && value !== undefined) argumentIdentity(flag[1] as string, value, out);
  }
}

/**
 * A connection given as separate arguments (`{host: "prod-db", database: "app"}`, however deep): the value
 * of a host key (HOST_ARGUMENT_KEYS; several hosts split at `,`, ports dropped, a Unix socket directory
 * left out, a scheme or protocol prefix read past: `tcp:prod-sql`, `https://prod-api`) or of a database
 * key (not a local database file: `main.db`), when it is one word: free text (`"host": "prod is down"`)
 * is not read.
 */
function argumentIdentity(key: string, value: string, out: Set<string>, kind = connectionKeyKind(key)): void {
  if (kind === 'host') {
    if (WHITESPACE.test(value.trim())) return;
    const hosts: string[] = [];
    for (const part of new Set(value.split(','))) {
      const text = part.trim();
      if (!text || text.startsWith('/') || text.startsWith('@') || NUMERIC.test(text)) continue;
      // A host and port (`prod-db:5432`, `[::1]:5432`); anything else with a `:` (`tcp:prod-sql`,
      // `https://prod-api.example.com`) counts by each host-like part (fail closed).
      const host = text.startsWith('[') || PORT_SUFFIX.test(text) ? stripPort(text) : text;
      if (host && !NUMERIC.test(host)) addHost(host, hosts, hosts);
    }
    for (const h of hosts) out.add(h);
  } else if (kind === 'database' && DATABASE_NAME.test(value) && !NUMERIC.test(value) && !DATABASE_FILE.test(value)) {
    out.add(value.toLowerCase());
  } else if (kind === 'address' && !WHITESPACE.test(value.trim())) {
    // Several addresses at `,` (`a:6379,b:6379`); a part without a numeric port is not read.
    const hosts: string[] = [];
    for (const part of itemsOf(value, ',', hosts)) {
      const text = part.trim();
      if (HOST_AND_PORT.test(text)) addHost(stripPort(text.split(PATH_END)[0] as string), hosts, hosts);
    }
    for (const h of hosts) out.add(h);
  }
}

/**
 * Whether an argument key (or an assignment's or a flag's name) names the host or the database a tool
 * connects to: one of HOST_ARGUMENT_KEYS / DATABASE_ARGUMENT_KEYS, or a longer key ending in such a word
 * (HOST_KEY_ENDINGS, DATABASE_KEY_ENDINGS, `<product>_DB`).
 */
/** What an argument key names: the host or the database a tool connects to, or something else. */
type ConnectionKeyKind = 'host' | 'database' | 'address' | 'other';

function connectionKeyKind(key: string): ConnectionKeyKind {
  const k = key.toLowerCase().replace(KEY_SEPARATORS, '');
  if (HOST_ARGUMENT_KEYS.has(k)) return 'host';
  if (DATABASE_ARGUMENT_KEYS.has(k)) return 'database';
  if (ADDRESS_KEY_WORDS.has(k)) return 'address';
  if (!KEY_ENDING.test(k)) return 'other';
  const words = (key.slice(-MAX_KEY_TAIL).match(KEY_WORD) ?? []).map((w) => w.toLowerCase());
  // One word is the whole key, decided above (`ghost`, `localhost` are not host keys).
  if (words.length < 2) return 'other';
  const last = words[words.length - 1] as string;
  const previous = words[words.length - 2] as string;
  if (HOST_KEY_ENDINGS.has(last) || HOST_KEY_ENDINGS.has(previous + last)) return 'host';
  if (DATABASE_KEY_ENDINGS.has(last) || DATABASE_KEY_ENDINGS.has(previous + last)) return 'database';
  if (last === 'db' && DB_KEY_PRODUCTS.has(previous)) return 'database';
  if (ADDRESS_KEY_WORDS.has(last)) return 'address';
  return 'other';
}

/**
 * Every string value of `args`, however deep, with its nearest object key, depth first in document
 * order and without recursion; answers the first thing `visit` returns (undefined: go on). `visitList`
 * sees each array as a whole too (with the object holding it, if any), before its items.
 */
function firstString<T>(
  args: Record<string, unknown>,
  visit: (value: string, key: string | undefined) => T | undefined,
  visitList?: (items: readonly unknown[], owner: Record<string, unknown> | undefined) => void,
): T | undefined {
  const values: unknown[] = [args];
  const keys: (string | undefined)[] = [undefined];
  while (values.length > 0) {
    const value = values.pop();
    const key = keys.pop();
    if (typeof value === 'string') {
      const hit = visit(value, key);
      if (hit !== undefined) return hit;
    } else if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) {
        if (visitList && Array.isArray(value[i])) visitList(value[i], undefined);
        values.push(value[i]);
        keys.push(key);
      }
    } else if (value !== null && typeof value === 'object') {
      const own = Object.keys(value);
      for (let i = own.length - 1; i >= 0; i--) {
        const k = own[i] as string;
        const child = (value as Record<string, unknown>)[k];
        if (visitList && Array.isArray(child)) visitList(child, value as Record<string, unknown>);
        values.push(child);
        keys.push(k);
      }
    }
  }
  return undefined;
}

/** A web URL a call carries, for a server's `network` rule (check.ts). */
export interface CallUrl {
  /** Where it was found: `resources[2]`, `argument url`. */
  where: string;
  /** Lower case; empty when the value has no scheme. */
  scheme: string;
  /** Every host a client may connect to (the host, and every reading of an ambiguous one): ASCII, lower case, no trailing dot. */
  hosts: string[];
  /** Written as a web URL but unreadable, or under `url`/`uri` and not a URL at all: fail closed. */
  unreadable: boolean;
}

/** Argument keys whose value is a URL: there a value that is not one cannot be read (a client may take `host/x` for http). */
const URL_ONLY_KEYS: ReadonlySet<string> = new Set(['url', 'uri']);
const FILE_URL = /^file:/i;

/** A host as `new URL` writes it (IDNs in ASCII), without a trailing dot, so `Example.com.` is example.com. */
function asciiHost(host: string): string {
  const ascii = PLAIN_HOST.test(host) || host.startsWith('[') ? host : domainToASCII(host) || host;
  return ascii.endsWith('.') ? ascii.slice(0, -1) : ascii;
}

function webUrlOf(value: string, where: string, urlKey: boolean): CallUrl | undefined {
  const loc = value.includes(':') ? parseLocation(value) : undefined;
  if (!loc) return urlKey ? { where, scheme: '', hosts: [], unreadable: true } : undefined;
  if (!WEB_SCHEMES.has(loc.scheme)) return undefined;
  const hosts = [...loc.hosts, ...loc.otherHosts].map(asciiHost);
  return { where, scheme: loc.scheme, hosts, unreadable: loc.malformed === true || hosts.length === 0 || hosts.includes(UNREADABLE_HOST) };
}

/**
 * Visits every http(s), ws(s) and ftp URL a call carries, in the resources and anywhere in the
 * arguments (whole string values, however deep), and every value under a `url` or `uri` key that is no
 * URL at all; answers the first thing `visit` returns. Other values (free text, paths, connection
 * strings, `file:` URLs) are not visited.
 */
export function firstWebUrl<T>(args: Record<string, unknown>, resources: readonly string[] | undefined, visit: (url: CallUrl) => T | undefined): T | undefined {
  return withHostBudget(() => readWebUrls(args, resources, visit));
}

function readWebUrls<T>(args: Record<string, unknown>, resources: readonly string[] | undefined, visit: (url: CallUrl) => T | undefined): T | undefined {
  for (const [i, r] of (resources ?? []).entries()) {
    const url = webUrlOf(r, `resources[${i}]`, false);
    const hit = url && visit(url);
    if (hit !== undefined) return hit;
  }
  return firstString(args, (value, key) => {
    const url = webUrlOf(value, `argument ${key ?? ''}`.trim(), key !== undefined && URL_ONLY_KEYS.has(key));
    return url ? visit(url) : undefined;
  });
}

/** Whether a call's host is one of the domains or a subdomain of one (both as `asciiHost` writes them). */
export function hostInDomains(host: string, domains: readonly string[]): boolean {
  for (const d of domains) {
    if (host === d) return true;
    if (host.length > d.length && host.endsWith(d) && host.charCodeAt(host.length - d.length - 1) === 0x2e) return true;
  }
  return false;
}

/** Whether a resource names a local path: a `file:` URL or an absolute path. */
export function isLocalResource(value: string): boolean {
  return value.startsWith('/') || FILE_URL.test(value);
}

/**
 * The absolute path a path argument or `file:` URL names, `..` and `.` resolved (`path.posix.resolve`;
 * `\` counts as a separator too, as on Windows), or why it cannot be checked: a NUL, a relative or `~`
 * path (what it is relative to is the upstream's choice), a `file:` URL of another host or with an
 * encoded `/`. Symbolic links are not followed: the control plane does not see the upstream's disk.
 */
export function localPathOf(value: string): { path: string } | { problem: string } {
  if (value.includes('\0')) return { problem: 'holds a NUL character' };
  let path: string;
  if (FILE_URL.test(value)) {
    let url: URL;
    try {
      url = new URL(value);
      path = fileURLToPath(url);
    } catch {
      return { problem: 'is not a file: URL of this machine that can be read (another host, or an encoded /)' };
    }
    if (path.includes('\0')) return { problem: 'holds a NUL character' };
  } else {
    path = value.replaceAll('\\', '/');
    if (!path.startsWith('/')) {
      return {
        problem: path.startsWith('~')
          ? 'starts with ~: the home directory is the upstream\'s, not known here'
          : 'is relative: what it is relative to is the upstream\'s choice, so it cannot be checked here',
      };
    }
  }
  return { path: posix.resolve(path) };
}
