// A scratch database of the local Postgres for scripts that need one of their own: the benchmarks that
// need a trail (bench/audit-retention.ts, bench/audit-usage.ts) and the API doc generator (gen-api-doc.ts).
// Created fresh, dropped at the end.
import pg from 'pg';

export interface ScratchDatabase {
  /** Its connection string: `pgUrl` with the database name in place. */
  url: string;
  /** Drops it if it exists (a previous run's), then creates it empty. */
  create(): Promise<void>;
  drop(): Promise<void>;
}

/** `name` on the server of `pgUrl` (a database to connect to for CREATE and DROP, e.g. postgres). */
export function scratchDatabase(pgUrl: string, name: string): ScratchDatabase {
  const u = new URL(pgUrl);
  u.pathname = `/${name}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: pgUrl });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  const drop = () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  return {
    url: u.toString(),
    async create() {
      await drop();
      await admin(`CREATE DATABASE ${name}`);
    },
    drop,
  };
}
