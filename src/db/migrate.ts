import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { QueryResultRow } from 'pg';
import { type Pool, UNBOUNDED_QUERY_TIMEOUT_MS, withQueryTimeout } from './pool.js';
import { MANAGED_POSTGRES_DOC, migrationPrivilegeProblems, missingPrivileges, readDatabaseAccess } from './privileges.js';

export const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'migrations');

// Arbitrary constant shared by every replica: only one applies migrations at a time.
const MIGRATION_LOCK_ID = 7_305_411_902;

export interface AppliedMigration {
  version: number;
  name: string;
}

/** Where migrate says what it applies: an upgrade's log names each migration and how long it took. */
export interface MigrationLog {
  info(obj: Record<string, unknown>, msg: string): void;
}

/** Applies forward-only migrations/NNNN_name.sql files in order, each in its own transaction. */
export async function migrate(pool: Pool, dir = MIGRATIONS_DIR, log?: MigrationLog): Promise<AppliedMigration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{4}_[\w-]+\.sql$/.test(f)).sort();
  const client = await pool.connect();
  // Waiting for another replica's migrations, or a migration building an index, may take minutes: no
  // client-side query timeout here (the pool's default is for the request path and the admin API).
  const query = <R extends QueryResultRow = QueryResultRow>(text: string, values?: unknown[]) => client.query<R>(withQueryTimeout({ text, ...(values ? { values } : {}) }, UNBOUNDED_QUERY_TIMEOUT_MS));
  const applied: AppliedMigration[] = [];
  try {
    await query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    const { rows: found } = await query<{ exists: boolean }>("SELECT to_regclass('schema_migrations') IS NOT NULL AS exists");
    const tracked = found[0]!.exists;
    const rows = tracked ? (await query<{ version: number; checksum: string; name: string }>('SELECT version, name, checksum FROM schema_migrations')).rows : [];
    const done = new Map(rows.map((r) => [r.version, r]));
    // A user that lacks a privilege is told everything it lacks, and what the DBA runs, before the first
    // statement: not "permission denied for schema public" from whichever migration met it first.
    if (files.some((f) => !done.has(Number(f.slice(0, 4))))) {
      const access = await readDatabaseAccess(query);
      const problems = migrationPrivilegeProblems(access, !tracked);
      if (problems.length > 0) throw missingPrivileges(access, problems);
    }
    // Only when missing: CREATE TABLE IF NOT EXISTS still needs CREATE on the schema, which an upgrade may not have.
    if (!tracked) {
      await query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      checksum text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now())`);
    }
    // A new database gets one line; an upgrade one before and after each migration (some take minutes).
    const fresh = rows.length === 0;
    const began = Date.now();
    for (const file of files) {
      const version = Number(file.slice(0, 4));
      const sql = await readFile(join(dir, file), 'utf8');
      const checksum = createHash('sha256').update(sql).digest('hex');
      const prior = done.get(version);
      if (prior) {
        if (prior.checksum !== checksum) {
          throw new Error(`migration ${file} was changed after it was applied (migrations are forward-only: add a new file instead)`);
        }
        continue;
      }
      // Said before it runs too: a migration that rewrites a large table may take minutes.
      if (!fresh) log?.info({ migration: file }, `applying database migration ${file}`);
      const started = Date.now();
      await query('BEGIN');
      try {
        await query(sql);
        await query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [version, file, checksum]);
        await query('COMMIT');
      } catch (err) {
        await query('ROLLBACK');
        // insufficient_privilege: the doc lists what the user needs and what a DBA runs.
        const privilege = (err as { code?: unknown }).code === '42501' ? ` (the DATABASE_URL user lacks a privilege this migration needs: ${MANAGED_POSTGRES_DOC})` : '';
        throw new Error(`migration ${file} failed: ${(err as Error).message}${privilege}`);
      }
      applied.push({ version, name: file });
      if (!fresh) log?.info({ migration: file, ms: Date.now() - started }, `applied database migration ${file}`);
    }
    if (fresh && applied.length > 0) {
      log?.info({ migrations: applied.length, last: applied.at(-1)!.name, ms: Date.now() - began }, `created the database schema (${applied.length} migrations)`);
    }
  } finally {
    await query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]).catch(() => {});
    client.release();
  }
  return applied;
}
