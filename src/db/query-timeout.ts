import type { QueryConfig } from 'pg';

// Client-side query timeouts (`query_timeout`, applied by src/db/pool.ts's TimedClient), apart from src/db/pool.ts so that importing them loads no driver.

/**
 * The longest the request path waits for one answer from Postgres to a write (a halt, a session opened or
 * closed: their transactions pass it to withTransaction) or to an uncached credential looked up outside
 * authentication (results of ended tokens): a server that hangs, or a connection that went silent, then
 * fails the request (503, or a denial) instead of holding it, and the connection is discarded. The same as
 * the wait for a free connection. Authentication's lookups wait CREDENTIAL_LOOKUP_TIMEOUT_MS.
 */
export const REQUEST_QUERY_TIMEOUT_MS = 5_000;

/**
 * The longest a request waits for a credential lookup (cache miss), the wait for a connection included:
 * under a gateway's default decision budget (2 s, docs/gateway.md), so a Postgres that hangs gives the
 * gateway a 503 it can act on rather than its own timeout. The lookup is one indexed row: it takes
 * milliseconds when Postgres answers at all. A lookup that times out also makes the next ones fail at
 * once for a while (src/tokens/authenticator.ts, CREDENTIAL_STORE_COOLDOWN_MS).
 */
export const CREDENTIAL_LOOKUP_TIMEOUT_MS = 1_500;

/**
 * What a query waits at most on the main pool when it says nothing else (admin reads: usage, exports,
 * listings). Long jobs say `query_timeout: UNBOUNDED_QUERY_TIMEOUT_MS` (migrations, audit retention).
 */
export const DEFAULT_QUERY_TIMEOUT_MS = 30_000;

/** For a statement that may legitimately run for minutes (pg has no "none" per query; this is ~24 days). */
export const UNBOUNDED_QUERY_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * A query with its own client-side timeout: `query_timeout` in the query config (pg's name, left out of its
 * type declarations), applied by the pools' TimedClient (src/db/pool.ts), which lets a reply that arrived
 * while the event loop was held be read before the timeout fails the query.
 */
export function withQueryTimeout<V extends unknown[]>(config: QueryConfig<V>, ms: number): QueryConfig<V> {
  return Object.assign({ query_timeout: ms }, config);
}

