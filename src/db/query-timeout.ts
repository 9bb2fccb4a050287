import type { QueryConfig } from 'pg';

// Client-side query timeouts (pg's `query_timeout`), apart from src/db/pool.ts so that importing them loads no driver.

/**
 * The longest the request path waits for one answer from Postgres (a credential lookup, a session or halt
 * write): a server that hangs, or a connection that went silent, then fails the request (503, or a denial)
 * instead of holding it, and the connection is discarded. The same as the wait for a free connection.
 */
export const REQUEST_QUERY_TIMEOUT_MS = 5_000;

/**
 * What a query waits at most on the main pool when it says nothing else (admin reads: usage, exports,
 * listings). Long jobs say `query_timeout: UNBOUNDED_QUERY_TIMEOUT_MS` (migrations, audit retention).
 */
export const DEFAULT_QUERY_TIMEOUT_MS = 30_000;

/** For a statement that may legitimately run for minutes (pg has no "none" per query; this is ~24 days). */
export const UNBOUNDED_QUERY_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * A query with its own client-side timeout (pg reads `query_timeout` from the query config; its type
 * declarations leave it out).
 */
export function withQueryTimeout<V extends unknown[]>(config: QueryConfig<V>, ms: number): QueryConfig<V> {
  return Object.assign({ query_timeout: ms }, config);
}

