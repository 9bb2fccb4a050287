import pg from 'pg';
import { ConfigError } from '../config.js';
import { timeoutAfterReads } from '../reply-timeout.js';
import { MANAGED_POSTGRES_DOC } from './privileges.js';

// bigint (int8) columns come back as JS numbers: our counters stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

/**
 * TCP keepalive on every connection, first probe after this long idle: a connection a firewall or NAT
 * dropped silently is found instead of hanging the next query, and the probes keep such a mapping alive.
 */
export const KEEPALIVE_INITIAL_DELAY_MS = 10_000;

// The query timeouts live in ./query-timeout.ts (no driver import), so modules the light CLI commands
// load (src/tokens/store.ts) can use them without loading pg.
export { DEFAULT_QUERY_TIMEOUT_MS, REQUEST_QUERY_TIMEOUT_MS, UNBOUNDED_QUERY_TIMEOUT_MS, withQueryTimeout } from './query-timeout.js';

import { DEFAULT_QUERY_TIMEOUT_MS, REQUEST_QUERY_TIMEOUT_MS, withQueryTimeout } from './query-timeout.js';

export function createPool(
  databaseUrl: string,
  opts: { max?: number; min?: number; idleTimeoutMillis?: number; applicationName?: string; queryTimeoutMillis?: number } = {},
): pg.Pool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: opts.max ?? 10,
    // Connections kept open through quiet periods (the rest close after idleTimeoutMillis).
    min: Math.min(opts.min ?? 0, opts.max ?? 10),
    idleTimeoutMillis: opts.idleTimeoutMillis ?? 10_000,
    connectionTimeoutMillis: REQUEST_QUERY_TIMEOUT_MS,
    // Client-side: a server-side statement_timeout cannot fire when the server or the network hangs.
    // A query that times out fails, and its connection is closed (its state is unknown). Applied by
    // TimedClient, not by pg: see there.
    query_timeout: opts.queryTimeoutMillis ?? DEFAULT_QUERY_TIMEOUT_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_INITIAL_DELAY_MS,
    application_name: opts.applicationName ?? 'killswitch',
    Client: CheckingClient as unknown as new () => pg.ClientBase,
  });
  tolerateConnectionLoss(pool);
  return pool;
}

/**
 * How often a backend running a long statement checks that its client is still there (Postgres 14+,
 * `client_connection_check_interval`). A query that times out on our side is abandoned and its connection
 * discarded, but Postgres notices a gone client only when it next writes to it: a slow audit read (a
 * filter over a large trail) would otherwise run on to its end, and each retry of a refreshed page would
 * add another. Checked every 2 s, such a statement is cancelled within about that of being abandoned.
 */
export const CLIENT_CONNECTION_CHECK_MS = 2_000;

type ConnectCallback = ((err: Error) => void) | ((err: null, client: pg.Client) => void);
type QueryCallback = (err: Error | null | undefined, result?: unknown) => void;

/** pg's own query(), which TimedClient calls with the timeout taken out. */
const pgQuery = pg.Client.prototype.query as (this: pg.Client, config: unknown, values?: unknown, callback?: QueryCallback) => unknown;

/** What a query that timed out on the client side fails with (pg's own wording: isQueryTimeout reads it). */
const QUERY_TIMEOUT_MESSAGE = 'Query read timeout';

/**
 * A pg client that applies the client-side query timeout (`query_timeout`, of the client's config or of
 * one query's) itself, with timeoutAfterReads instead of pg's plain timer. pg arms a setTimeout per query,
 * and Node runs due timers before it reads sockets: after the control plane's own event loop was held
 * longer than the timeout (a burst of decisions, a CPU-heavy request, GC), every query in flight failed as
 * timed out although Postgres's reply was waiting in the socket. An audit INSERT went to the spool; a
 * credential lookup (1.5 s) denied a decision DEPENDENCY_UNAVAILABLE, or answered 503, and made the next
 * lookups fail at once for 5 s. Now the reply that is there is used, and a query Postgres does not answer
 * still fails with pg's 'Query read timeout' (isQueryTimeout), at most one more timeout later after a stall.
 *
 * pg is given no query_timeout at all, so it arms no timer of its own. A query that times out has its
 * connection ended at once (pg's end() closes the socket of a connection with a query in flight): nothing
 * queued behind it on that connection is sent later, and Postgres notices the client is gone (every owner
 * discards such a connection anyway). The per-query work is about what pg did for its own timeout (a
 * timer, its closure, a closure wrapping the callback): the same, plus two small closures and one clock
 * read (~0.1-0.2 µs); a query without a callback gets one promise here instead of two in pg. Queries given as submittables (cursors, streams; none in this code)
 * go to pg untouched, without a timeout. test/integration/postgres-stall.test.ts guards the parts of pg
 * this relies on.
 */
export class TimedClient extends pg.Client {
  /** The client's default query timeout (0: none), taken from its config so that pg does not apply it. */
  readonly queryTimeoutMs: number;

  constructor(config?: string | pg.ClientConfig) {
    const ms = typeof config === 'object' ? config.query_timeout : undefined;
    super(ms && typeof config === 'object' ? { ...config, query_timeout: 0 } : config);
    this.queryTimeoutMs = ms ?? 0;
  }
}

// Assigned, not declared in the class: pg's typings give query() a dozen overloads.
(TimedClient.prototype as unknown as { query: unknown }).query = function query(this: TimedClient, config: unknown, values?: unknown, callback?: unknown): unknown {
  const own = typeof config === 'object' && config !== null ? (config as { query_timeout?: number }).query_timeout : undefined;
  const ms = own || this.queryTimeoutMs;
  if (!ms || typeof (config as { submit?: unknown } | null)?.submit === 'function') return pgQuery.call(this, config, values, callback as QueryCallback);
  // pg takes the callback from the arguments, else from the query config (ours is given as an argument).
  let reply = (typeof values === 'function' ? values : (callback ?? (config as { callback?: unknown } | null)?.callback)) as QueryCallback | undefined;
  const params = typeof values === 'function' ? undefined : values;
  let result: Promise<unknown> | undefined;
  if (reply === undefined) {
    result = new Promise((resolve, reject) => {
      reply = (err, res) => (err ? reject(err) : resolve(res));
    });
  }
  const answer = reply as QueryCallback;
  let settled = false;
  const timer = timeoutAfterReads(
    ms,
    () => settled,
    () => {
      settled = true;
      answer(new Error(QUERY_TIMEOUT_MESSAGE));
      this.end().catch(() => {});
    },
  );
  // pg reads `query_timeout` from the query too: hidden from it while it takes the query, then put back.
  if (own) (config as { query_timeout?: number | undefined }).query_timeout = undefined;
  try {
    pgQuery.call(this, config, params, (err, res) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      answer(err, res);
    });
  } catch (err) {
    settled = true;
    clearTimeout(timer);
    throw err;
  } finally {
    if (own) (config as { query_timeout?: number }).query_timeout = own;
  }
  return result;
};

/**
 * A pg client that sets CLIENT_CONNECTION_CHECK_MS before the pool hands it out: a SET sent from the pool's
 * 'connect' event would be queued behind nothing yet run beside the first query, which pg warns about on
 * stderr. Not a startup parameter either (`options=-c …`): PgBouncer refuses those, and a server older than
 * 14 would refuse the connection; here such a server's error is ignored (it then behaves as before).
 */
class CheckingClient extends TimedClient {
  override connect(): Promise<pg.Client>;
  override connect(callback: ConnectCallback): void;
  override connect(callback?: ConnectCallback): Promise<pg.Client> | undefined {
    const ready = super.connect().then(() =>
      this.query(`SET client_connection_check_interval = ${CLIENT_CONNECTION_CHECK_MS}`).then(
        () => this,
        () => this,
      ),
    );
    if (callback === undefined) return ready;
    ready.then(
      (client) => (callback as (err: null, client: pg.Client) => void)(null, client),
      (err: Error) => (callback as (err: Error) => void)(err),
    );
    return undefined;
  }
}

/**
 * A Postgres restart terminates every connection. pg reports that on the pool for idle clients and as a
 * failed query for busy ones, but a client checked out between two queries would emit an unhandled
 * 'error' event and crash the process. Every client gets a listener; the failure still reaches the
 * caller through its next query, and a client released with an error is discarded.
 */
export function tolerateConnectionLoss(pool: pg.Pool): void {
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    client.on('error', () => {});
  });
}

/**
 * Creates the database named in the URL if it does not exist (connecting to the `postgres` database).
 * True when this call created it. `variable` names the setting in what a refusal says.
 *
 * The database itself is tried first: on a managed Postgres the DBA often creates it for the app's user,
 * who may not be allowed to connect to `postgres` at all, nor to create databases (no CREATEDB). Either
 * refusal, for a database that is missing, is a ConfigError naming what the DBA runs.
 */
export async function ensureDatabase(databaseUrl: string, variable: 'DATABASE_URL' | 'UNLEASH_DATABASE_URL' = 'DATABASE_URL'): Promise<boolean> {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (!name) return false;
  const user = decodeURIComponent(url.username) || '(the connecting user)';
  const names = variable === 'DATABASE_URL' ? 'that DATABASE_URL names' : "of the embedded Unleash (UNLEASH_DATABASE_URL; unset, DATABASE_URL's database name followed by _unleash)";
  const createIt = `The DBA runs: CREATE DATABASE ${pg.escapeIdentifier(name)} OWNER ${pg.escapeIdentifier(user)}; (${MANAGED_POSTGRES_DOC})`;
  const own = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5_000 });
  try {
    await own.connect();
    return false;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === '42501') {
      throw new ConfigError(variable, `the user ${pg.escapeIdentifier(user)} may not connect to the database ${pg.escapeIdentifier(name)} ${names}: ${(err as Error).message}. The DBA runs: GRANT CONNECT ON DATABASE ${pg.escapeIdentifier(name)} TO ${pg.escapeIdentifier(user)}; (${MANAGED_POSTGRES_DOC})`);
    }
    if (code !== '3D000') throw err;
  } finally {
    await own.end().catch(() => {});
  }
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== '42501' && code !== '3D000') throw err;
    await client.end().catch(() => {});
    throw new ConfigError(variable, `the database ${pg.escapeIdentifier(name)} ${names} does not exist, and creating it takes a connection to the database "postgres", which was refused: ${(err as Error).message}. ${createIt}`);
  }
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (rowCount === 0) {
      try {
        await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
        return true;
      } catch (err) {
        const code = (err as { code?: string }).code;
        // Another replica created it first.
        if (code === '42P04') return false;
        if (code === '42501') {
          throw new ConfigError(variable, `the database ${pg.escapeIdentifier(name)} ${names} does not exist, and the user ${pg.escapeIdentifier(user)} may not create it (it has no CREATEDB). ${createIt}`);
        }
        throw err;
      }
    }
    return false;
  } finally {
    await client.end();
  }
}

/**
 * Runs fn in a transaction. With `queryTimeoutMs`, every statement of it (BEGIN and COMMIT included) has
 * that client-side timeout instead of the pool's: the request path's writes (a halt, a session) use
 * REQUEST_QUERY_TIMEOUT_MS, so a Postgres that hangs fails them in seconds, not after the pool's 30 s.
 */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>, opts: { queryTimeoutMs?: number } = {}): Promise<T> {
  const pooled = await pool.connect();
  const client = opts.queryTimeoutMs === undefined ? pooled : withClientQueryTimeout(pooled, opts.queryTimeoutMs);
  let failure: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    // A connection whose query timed out may still be running it: ROLLBACK would only queue behind it.
    // It is discarded instead (never handed to the next caller), and the server rolls back when it closes.
    if (isQueryTimeout(err)) failure = err;
    else await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    pooled.release(failure);
  }
}

/** The client, its queries sent with a client-side timeout of `ms` unless they name their own (the pooled client itself is not changed). */
function withClientQueryTimeout(client: pg.PoolClient, ms: number): pg.PoolClient {
  const query = (text: string | pg.QueryConfig, values?: unknown[]) =>
    client.query(typeof text === 'string' ? withQueryTimeout({ text, ...(values === undefined ? {} : { values }) }, ms) : withQueryTimeout(text, ms));
  return new Proxy(client, {
    get(target, prop) {
      if (prop === 'query') return query;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** The client-side query timeout (TimedClient, with pg's wording): the connection's state is unknown afterwards. */
export function isQueryTimeout(err: unknown): err is Error {
  return err instanceof Error && err.message === QUERY_TIMEOUT_MESSAGE;
}
