// Benchmark of audit retention (audit_apply_retention): the function of migration 0002 (a cut that moves
// every hour: the last hour's rows deleted one by one) against the current one (whole months, migration
// 0016), on a scratch database of the local Postgres that is created, migrated and dropped again.
//
//   npx tsx scripts/bench/audit-retention.ts [--rows 300000] [--june-burst 50000] [--database rv_ret]
//
// For each function, on fresh data (`--rows` rows spread evenly over April to August 2026, one partition a
// month): a first run drops April; then one run per hour of May (cut = 2026-05-01 00:30 + k hours,
// k = 1..743), timed, with the WAL they write; then the run whose cut reaches June 00:30 and drops May,
// while another connection INSERTs audit rows in a loop (the longest INSERT is how long the writers were
// held up). `--june-burst` rows are added in June's first half hour: what the old function deletes after
// that DROP, under its lock.
// WAL is counted cluster-wide (pg_current_wal_lsn): run it while nothing else writes.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { MIGRATIONS_DIR, migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import { scratchDatabase } from '../scratch-db.js';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '300000' },
    'june-burst': { type: 'string', default: '50000' },
    database: { type: 'string', default: 'rv_ret' },
    'pg-url': { type: 'string', default: process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
  },
});
const ROWS = Number(args.rows);
const BURST = Number(args['june-burst']);
const DB = args.database;
const scratch = scratchDatabase(args['pg-url'], DB);
const dbUrl = scratch.url;
const HOUR = 3_600_000;
const MAY = Date.parse('2026-05-01T00:00:00Z');
// The hourly job runs at some minute past the hour, not on it: the run that drops May also cuts into June.
const PAST_THE_HOUR = 30 * 60_000;
const HOURS_IN_MAY = 31 * 24;

/** The function as migration 0002 defined it (before 0016 replaced it). */
async function oldFunction(): Promise<string> {
  const sql = await readFile(join(MIGRATIONS_DIR, '0002_audit.sql'), 'utf8');
  const start = sql.indexOf('CREATE FUNCTION audit_apply_retention');
  const end = sql.indexOf('$$;', start) + 3;
  return sql.slice(start, end).replace('CREATE FUNCTION', 'CREATE OR REPLACE FUNCTION');
}

async function setup(variant: 'old' | 'new'): Promise<void> {
  await scratch.create();
  const pool = createPool(dbUrl, { max: 1 });
  try {
    await migrate(pool);
    if (variant === 'old') await pool.query(await oldFunction());
    await pool.query(`SELECT audit_ensure_partitions('2026-04-01T00:00:00Z', 5)`);
    // About 1 kB a row, as INTENT/RESULT rows with arguments are.
    await pool.query(
      `INSERT INTO audit_events (id, ts, replica_id, seq, kind, decision_id, actor_type, token_id, token_type, project_id, environment,
         session_id, server, tool, capability, arguments, decision, code, message, result_status, duration_ms, result_bytes, rows,
         client_name, client_version, user_agent, ip, prev_hash, hash)
       SELECT gen_random_uuid(), '2026-04-01T00:00:00Z'::timestamptz + (interval '153 days') * (i::double precision / $1),
         'bench-replica', i, CASE WHEN i % 2 = 0 THEN 'INTENT' ELSE 'RESULT' END, md5(i::text), 'mcp_token', 'tok-' || (i % 50), 'rw',
         'bench', 'development', 's-' || (i % 500), 'filesystem', 'write_file', 'write',
         jsonb_build_object('path', 'docs/page-' || i || '.md', 'content', repeat('A paragraph of documentation text. ', 14)),
         'allow', 'OK', 'filesystem/write_file allowed', 'success', 12.5, 2048, 1, 'claude-ai', '0.9.2', 'Claude/0.9.2', '127.0.0.1',
         md5((i - 1)::text) || md5((i - 1)::text), md5(i::text) || md5(i::text)
       FROM generate_series(1, $1) AS i`,
      [ROWS],
    );
    // A busy first half hour of June (100k rows an hour, the review's figure).
    await pool.query(
      `INSERT INTO audit_events (id, ts, replica_id, seq, kind, actor_type, token_id, server, tool, arguments, decision, prev_hash, hash)
       SELECT gen_random_uuid(), '2026-06-01T00:00:00Z'::timestamptz + (interval '30 minutes') * (i::double precision / ($1 + 1)),
         'bench-burst', i, 'INTENT', 'mcp_token', 'tok-burst', 'filesystem', 'write_file',
         jsonb_build_object('path', 'docs/page-' || i || '.md', 'content', repeat('A paragraph of documentation text. ', 14)),
         'allow', md5((i - 1)::text), md5(i::text)
       FROM generate_series(1, $1) AS i`,
      [BURST],
    );
    await pool.query('VACUUM ANALYZE audit_events');
  } finally {
    await pool.end();
  }
}

const lsn = async (c: pg.Client) => (await c.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l;
const walSince = async (c: pg.Client, from: string) => Number((await c.query<{ d: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1) AS d', [from])).rows[0]!.d);
const mb = (bytes: number) => Math.round((bytes / 1e6) * 10) / 10;

async function retention(c: pg.Client, cut: number): Promise<{ ms: number; rows_removed: number; partitions_dropped: string[] }> {
  const t = performance.now();
  const { rows } = await c.query<{ r: { rows_removed: number; partitions_dropped: string[] } }>('SELECT audit_apply_retention($1) AS r', [new Date(cut)]);
  return { ms: performance.now() - t, ...rows[0]!.r };
}

async function run(variant: 'old' | 'new'): Promise<Record<string, unknown>> {
  await setup(variant);
  const c = new pg.Client({ connectionString: dbUrl });
  const probe = new pg.Client({ connectionString: dbUrl });
  await c.connect();
  await probe.connect();
  try {
    await retention(c, MAY + PAST_THE_HOUR); // drops April: both functions alike
    let from = await lsn(c);
    const times: number[] = [];
    let removed = 0;
    for (let k = 1; k < HOURS_IN_MAY; k++) {
      const r = await retention(c, MAY + PAST_THE_HOUR + k * HOUR);
      times.push(r.ms);
      removed += r.rows_removed;
    }
    const hourlyWal = await walSince(c, from);
    times.sort((a, b) => a - b);
    const size = (await c.query<{ b: string }>(`SELECT pg_total_relation_size('audit_events_p202605') AS b`)).rows[0]!.b;
    const { rows: live } = await c.query<{ n: string }>('SELECT count(*) AS n FROM audit_events_p202605');

    // The run that drops May, with a writer inserting meanwhile (rows for August, as a live month).
    let stop = false;
    let seq = 1;
    let longest = 0;
    let inserts = 0;
    const writer = (async () => {
      while (!stop) {
        const t = performance.now();
        await probe.query(
          `INSERT INTO audit_events (id, ts, replica_id, seq, kind, actor_type, prev_hash, hash) VALUES (gen_random_uuid(), '2026-08-31T12:00:00Z', 'probe', $1, 'ADMIN', 'system', 'x', 'y')`,
          [seq++],
        );
        longest = Math.max(longest, performance.now() - t);
        inserts++;
      }
    })();
    await new Promise((r) => setTimeout(r, 200));
    const before = { longest, inserts };
    longest = 0;
    from = await lsn(c);
    const drop = await retention(c, MAY + PAST_THE_HOUR + HOURS_IN_MAY * HOUR);
    const dropWal = await walSince(c, from);
    await new Promise((r) => setTimeout(r, 200));
    stop = true;
    await writer;
    return {
      variant,
      hourly_runs: times.length,
      hourly_rows_removed: removed,
      hourly_ms_p50: Math.round(times[Math.floor(times.length / 2)]! * 10) / 10,
      hourly_ms_max: Math.round(times.at(-1)! * 10) / 10,
      hourly_ms_total: Math.round(times.reduce((a, b) => a + b, 0)),
      hourly_wal_mb: mb(hourlyWal),
      may_partition_mb_before_drop: mb(Number(size)),
      may_live_rows_before_drop: Number(live[0]!.n),
      drop_run_ms: Math.round(drop.ms * 10) / 10,
      drop_run_rows_removed: drop.rows_removed,
      drop_run_partitions: drop.partitions_dropped,
      drop_run_wal_mb: mb(dropWal),
      probe_insert_ms_max_before: Math.round(before.longest * 10) / 10,
      probe_insert_ms_max_during_drop: Math.round(longest * 10) / 10,
    };
  } finally {
    await c.end();
    await probe.end();
  }
}

const results = [];
try {
  for (const v of ['old', 'new'] as const) results.push(await run(v));
} finally {
  await scratch.drop();
}
console.table(results);
