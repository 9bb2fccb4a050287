import pg from 'pg';

// bigint (int8) columns come back as JS numbers: our counters stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

export function createPool(databaseUrl: string, opts: { max?: number; min?: number; idleTimeoutMillis?: number; applicationName?: string } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: opts.max ?? 10,
    // Connections kept open through quiet periods (the rest close after idleTimeoutMillis).
    min: Math.min(opts.min ?? 0, opts.max ?? 10),
    idleTimeoutMillis: opts.idleTimeoutMillis ?? 10_000,
    connectionTimeoutMillis: 5_000,
    application_name: opts.applicationName ?? 'killswitch',
  });
  tolerateConnectionLoss(pool);
  return pool;
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

/** Creates the database named in the URL if it does not exist (connecting to the `postgres` database). */
export async function ensureDatabase(databaseUrl: string): Promise<void> {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (!name) return;
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (rowCount === 0) {
      try {
        await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      } catch (err) {
        // Another replica created it first.
        if ((err as { code?: string }).code !== '42P04') throw err;
      }
    }
  } finally {
    await client.end();
  }
}

export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}
