// EXPLAIN (ANALYZE, BUFFERS) of every read of the audit trail the API makes (GET /v1/audit with each filter
// and some combinations, the export's pages, the decision result's INTENT lookup, usage, verify, the
// incident timeline), with the SQL and values the stores build: each store function is called with a
// query function that records its statements, which are then explained on the same connection. On a
// scratch database of the local Postgres (created, migrated, filled with generate_series, dropped).
// docs/performance.md, "Audit reads at scale".
//
//   npx tsx scripts/bench/audit-reads.ts [--rows 2400000] [--days 90] [--database rv_audit_reads] [--keep] [--only <case text>]
//
// Rows in ts order over the `--days` days before NOW: 48% INTENT, 48% RESULT, 2% ADMIN (7 operator keys),
// one POLICY_RELOAD per 5,000 rows, 300 tokens with a skewed load, sessions of 4,000 rows one after another,
// 6 servers, 12 tools, 10% of INTENTs denied over 20 codes. --keep leaves the database for another run
// (a second run with --keep and the same --database skips the load).

import { parseArgs } from 'node:util';
import pg from 'pg';
import { auditStore } from '../../src/audit/store.js';
import { migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import { timelineStore } from '../../src/incidents/store.js';
import { scratchDatabase } from '../scratch-db.js';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '2400000' },
    days: { type: 'string', default: '90' },
    database: { type: 'string', default: 'rv_audit_reads' },
    keep: { type: 'boolean', default: false },
    only: { type: 'string' },
    'pg-url': { type: 'string', default: process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
  },
});
const ROWS = Number(args.rows);
const DAY = 86_400_000;
const NOW = new Date('2026-12-06T22:00:00Z');
const START = new Date(NOW.getTime() - Number(args.days) * DAY);
const scratch = scratchDatabase(args['pg-url'], args.database);

const LOAD = `INSERT INTO audit_events (id, ts, replica_id, seq, kind, decision_id, actor_type, actor_id, token_id, token_type, project_id, environment,
  session_id, gateway_id, server, tool, capability, arguments, flags, decision, code, message, purpose, action, target, result_status, summary,
  duration_ms, result_bytes, rows, ai_client, client_name, client_version, user_agent, ip, details, prev_hash, hash)
SELECT md5('id' || i)::uuid,
  $3::timestamptz + i * ($4::bigint * interval '1 millisecond' / $5),
  'replica-' || (i % 3) || '-' || (i / 300000),
  (i / 3) + 1,
  k.kind,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN md5('d' || (i / 2))::uuid::text END,
  CASE WHEN k.kind = 'ADMIN' THEN 'operator' WHEN k.kind = 'POLICY_RELOAD' THEN 'system' ELSE 'mcp_token' END,
  CASE WHEN k.kind = 'ADMIN' THEN md5('op' || (i % 7))::uuid::text WHEN k.kind = 'POLICY_RELOAD' THEN 'policy' ELSE t.tok END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN t.tok END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN (ARRAY['rw','ro','rw','admin'])[t.n % 4 + 1] END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN 'proj-' || (t.n % 12) WHEN k.kind = 'ADMIN' THEN 'proj-' || (i % 12) END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN (ARRAY['development','staging','production'])[t.n % 3 + 1] END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN md5('s' || (i / 4000))::uuid::text END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN md5('g' || (t.n % 5))::uuid::text END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN (ARRAY['filesystem','postgres','github','slack','jira','s3'])[(i / 2) % 6 + 1] END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN (ARRAY['read_file','write_file','list_dir','query','execute','create_issue','search','post_message','get_object','put_object','delete_object','list_buckets'])[(i / 2 * 7) % 12 + 1] END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN (ARRAY['read','write','delete'])[(i / 2) % 3 + 1] END,
  CASE WHEN k.kind = 'INTENT' THEN jsonb_build_object('path', '/srv/data/file-' || (i % 10000) || '.json', 'query', 'select * from t where id = ' || i) END,
  CASE WHEN k.kind = 'INTENT' THEN '{"mcp.enabled": true, "mcp.filesystem.write": true}'::jsonb END,
  CASE WHEN k.kind = 'INTENT' THEN CASE WHEN d.deny THEN 'deny' ELSE 'allow' END END,
  CASE WHEN k.kind = 'INTENT' THEN CASE WHEN d.deny THEN d.code ELSE 'OK' END
       WHEN k.kind = 'RESULT' AND (i / 2) % 50 = 0 THEN (ARRAY['LARGE_RESULT','MAX_ROWS','MAX_EXECUTION_TIME'])[(i / 100) % 3 + 1] END,
  CASE WHEN k.kind = 'INTENT' THEN CASE WHEN d.deny THEN 'Denied: ' || d.code ELSE 'allowed' END END,
  CASE WHEN k.kind = 'INTENT' AND (i / 2) % 5 = 0 THEN 'summarise the weekly report' END,
  CASE WHEN k.kind = 'ADMIN' THEN (ARRAY['key.created','key.revoked','session.opened','session.closed','flag.disabled','flag.enabled','grant.created'])[(i / 7) % 7 + 1] END,
  CASE WHEN k.kind = 'ADMIN' THEN 'agent_token:' || md5('tok' || (i % 300))::uuid::text END,
  CASE WHEN k.kind = 'RESULT' THEN CASE WHEN (i / 2) % 20 = 0 THEN 'error' ELSE 'success' END END,
  CASE WHEN k.kind = 'RESULT' THEN 'returned ' || (i % 100) || ' rows' END,
  CASE WHEN k.kind = 'RESULT' THEN (i % 997) / 3.0 END,
  CASE WHEN k.kind = 'RESULT' THEN (i % 50000) END,
  CASE WHEN k.kind = 'RESULT' THEN (i % 100) END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN (ARRAY['claude-desktop','cursor','vscode'])[t.n % 3 + 1] END,
  CASE WHEN k.kind IN ('INTENT','RESULT') THEN 'client' END, '1.2.3', 'Claude/1.2.3', '10.0.' || (t.n % 250) || '.' || (i % 250),
  CASE WHEN k.kind = 'ADMIN' THEN jsonb_build_object('reason', 'routine') END,
  md5((i - 1)::text) || md5((i - 1)::text), md5(i::text) || md5(i::text)
FROM generate_series($1::bigint, $2::bigint) AS i
CROSS JOIN LATERAL (SELECT CASE WHEN i % 5000 = 7 THEN 'POLICY_RELOAD' WHEN i % 100 IN (3, 53) THEN 'ADMIN' WHEN i % 2 = 0 THEN 'INTENT' ELSE 'RESULT' END AS kind) k
CROSS JOIN LATERAL (SELECT n, md5('tok' || n)::uuid::text AS tok FROM (SELECT floor(300 * power(((i / 2) * 2654435761 % 1000003) / 1000003.0, 2))::int AS n) x) t
CROSS JOIN LATERAL (SELECT ((i / 2) % 10 = 0) AS deny,
  (ARRAY['PERMISSION_DENIED','PERMISSION_DENIED','PERMISSION_DENIED','RATE_LIMITED','RATE_LIMITED','ENVIRONMENT_FORBIDDEN','SESSION_HALTED','KILL_SWITCH','APPROVAL_REQUIRED','UNKNOWN_SERVER','CASCADE_WRITE','HUMAN_AUTHORIZATION_REQUIRED','TOOL_CHANGED','SESSION_UNKNOWN','DEPENDENCY_UNAVAILABLE','UNKNOWN_TOOL','APPROVAL_EXPIRED','APPROVAL_REJECTED','APPROVAL_USED','WITHHELD'])[((i / 20) * 31) % 20 + 1] AS code) d`;

async function load(c: pg.Client): Promise<void> {
  const pool = createPool(scratch.url, { max: 1 });
  try {
    await migrate(pool);
  } finally {
    await pool.end();
  }
  await c.query('SELECT audit_ensure_partitions($1, $2)', [START, Math.ceil(Number(args.days) / 28) + 2]);
  await c.query('SET synchronous_commit = off');
  for (let lo = 1; lo <= ROWS; lo += 400_000) await c.query(LOAD, [lo, Math.min(lo + 399_999, ROWS), START, NOW.getTime() - START.getTime(), ROWS]);
  await c.query('VACUUM ANALYZE audit_events');
}

const c = new pg.Client({ connectionString: scratch.url });
let captured: Array<{ text: string; values: unknown[] }> = [];
// The stores' queries, recorded and run (their answers drive the next page or step).
const spy = {
  async query(q: string | pg.QueryConfig, v?: unknown[]) {
    const text = typeof q === 'string' ? q : q.text;
    const values = (typeof q === 'string' ? v : (q.values ?? v)) ?? [];
    if (/audit_events|audit_usage/.test(text) && !/audit_usage_hourly_start/.test(text)) captured.push({ text, values });
    return c.query(text, values);
  },
} as unknown as pg.Pool;

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Actual Rows': number;
  'Actual Loops'?: number;
  'Rows Removed by Filter'?: number;
  Plans?: PlanNode[];
}

async function main(): Promise<void> {
  const existing = args.keep ? await scratchExists() : false;
  if (!existing) await scratch.create();
  await c.connect();
  try {
    if (!existing) await load(c);
    const uuid = async (s: string) => (await c.query<{ u: string }>('SELECT md5($1)::uuid::text AS u', [s])).rows[0]!.u;
    const T0 = await uuid('tok0');
    const T150 = await uuid('tok150');
    const T299 = await uuid('tok299');
    const S = await uuid(`s${Math.floor(ROWS / 2 / 4000)}`);
    const OP = await uuid('op3');
    const D = await uuid(`d${Math.floor(ROWS / 4)}`);
    const WEEK = { from: new Date(NOW.getTime() - 7 * DAY), to: NOW };
    const NIGHT = { from: new Date(NOW.getTime() - 6 * 3600e3), to: NOW };
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['list: no filter', () => auditStore.list(spy, {}, 101)],
      ['list: token (busy)', () => auditStore.list(spy, { token: T0 }, 101)],
      ['list: token (quiet)', () => auditStore.list(spy, { token: T299 }, 101)],
      ['list: token unknown', () => auditStore.list(spy, { token: '00000000-0000-0000-0000-000000000000' }, 101)],
      ['list: token + last 6 h', () => auditStore.list(spy, { token: T150, ...NIGHT }, 101)],
      ['list: session', () => auditStore.list(spy, { session: S }, 101)],
      ['list: session + decision=deny', () => auditStore.list(spy, { session: S, decision: 'deny' }, 101)],
      ['list: token + decision=deny', () => auditStore.list(spy, { token: T150, decision: 'deny' }, 101)],
      ['list: decision_id', () => auditStore.list(spy, { decisionId: D }, 101)],
      ['list: project', () => auditStore.list(spy, { project: 'proj-3' }, 101)],
      ['list: projects (limited operator)', () => auditStore.list(spy, { projects: ['proj-3', 'proj-5'] }, 101)],
      ['list: type=admin', () => auditStore.list(spy, { type: 'admin' }, 101)],
      ['list: decision=deny', () => auditStore.list(spy, { decision: 'deny' }, 101)],
      ['list: kind=ADMIN', () => auditStore.list(spy, { kind: 'ADMIN' }, 101)],
      ['list: kind=POLICY_RELOAD', () => auditStore.list(spy, { kind: 'POLICY_RELOAD' }, 101)],
      ['list: server', () => auditStore.list(spy, { server: 'github' }, 101)],
      ['list: tool', () => auditStore.list(spy, { tool: 'delete_object' }, 101)],
      ['list: tool + week', () => auditStore.list(spy, { tool: 'delete_object', ...WEEK }, 101)],
      ['list: tool unknown', () => auditStore.list(spy, { tool: 'drop_table' }, 101)],
      ['list: tool unknown + week', () => auditStore.list(spy, { tool: 'drop_table', ...WEEK }, 101)],
      ['list: code (rare)', () => auditStore.list(spy, { code: 'WITHHELD' }, 101)],
      ['list: code + week', () => auditStore.list(spy, { code: 'KILL_SWITCH', ...WEEK }, 101)],
      ['list: code unknown', () => auditStore.list(spy, { code: 'PRODUCTION_BLOCKED' }, 101)],
      ['list: code unknown + week', () => auditStore.list(spy, { code: 'PRODUCTION_BLOCKED', ...WEEK }, 101)],
      ['list: actor (operator)', () => auditStore.list(spy, { actor: OP }, 101)],
      ['list: actor (operator) + week', () => auditStore.list(spy, { actor: OP, ...WEEK }, 101)],
      ['list: actor = busy token', () => auditStore.list(spy, { actor: T0 }, 101)],
      ['list: server unknown', () => auditStore.list(spy, { server: 'payments' }, 101)],
      ['list: server unknown + week', () => auditStore.list(spy, { server: 'payments', ...WEEK }, 101)],
      ['list: projects unknown (limited operator)', () => auditStore.list(spy, { projects: ['proj-none'] }, 101)],
      ['list: actor unknown', () => auditStore.list(spy, { actor: 'nobody' }, 101)],
      ['list: from/to week, no filter', () => auditStore.list(spy, { ...WEEK }, 101)],
      ['list: one day 12 weeks back', () => auditStore.list(spy, { from: new Date(NOW.getTime() - 84 * DAY), to: new Date(NOW.getTime() - 83 * DAY) }, 101)],
      ['list: token busy, deep page (cursor 11 weeks back)', () => auditStore.list(spy, { token: T0 }, 101, { ts: new Date(NOW.getTime() - 77 * DAY), id: 'ffffffff-ffff-ffff-ffff-ffffffffffff' })],
      ['list: no filter, deep page (cursor 11 weeks back)', () => auditStore.list(spy, {}, 101, { ts: new Date(NOW.getTime() - 77 * DAY), id: 'ffffffff-ffff-ffff-ffff-ffffffffffff' })],
      ['export: token busy first page', () => auditStore.exportPage(spy, { token: T0 }, 1000)],
      ['export: token busy page 16 days back', () => auditStore.exportPage(spy, { token: T0 }, 1000, { ts: new Date(NOW.getTime() - 16 * DAY), id: '00000000-0000-0000-0000-000000000000' })],
      ['export: code + week first page', () => auditStore.exportPage(spy, { code: 'KILL_SWITCH', ...WEEK }, 1000)],
      ['export: tool + week first page', () => auditStore.exportPage(spy, { tool: 'delete_object', ...WEEK }, 1000)],
      ['export: week, page 3 days back', () => auditStore.exportPage(spy, WEEK, 1000, { ts: new Date(NOW.getTime() - 3 * DAY), id: '00000000-0000-0000-0000-000000000000' })],
      ['findIntent (decision result)', () => auditStore.findIntent(spy, D)],
      ['usage 7 days whole hours', () => auditStore.usage(spy, { from: new Date(NOW.getTime() - 7 * DAY), to: NOW })],
      ['usage 7 days partial edges', () => auditStore.usage(spy, { from: new Date(NOW.getTime() - 7 * DAY - 1043e3), to: new Date(NOW.getTime() - 1043e3) })],
      ['usage 30 days token', () => auditStore.usage(spy, { token: T0, from: new Date(NOW.getTime() - 30 * DAY), to: NOW })],
      ['monthly usage', () => auditStore.monthlyUsage(spy, {})],
      ['verify: chainSummaries', () => auditStore.chainSummaries(spy)],
      ['verify: retentionRecords', () => auditStore.retentionRecords(spy)],
      ['verify: chainPage', () => auditStore.chainPage(spy, 'replica-1-0', { seq: Math.floor(ROWS / 6), ts_key: '2000-01-01' }, 10_000_000, 1000)],
      ['timeline: 1 h all', () => timelineStore.auditRows(spy, { from: new Date(NOW.getTime() - 3600e3), to: NOW, match: {}, decisions: 'all', visibleProjects: null, limit: 1000 })],
      ['timeline: 1 h token', () => timelineStore.auditRows(spy, { from: new Date(NOW.getTime() - 3600e3), to: NOW, match: { token: T150 }, decisions: 'all', visibleProjects: null, limit: 1000 })],
      ['timeline: 24 h token denials', () => timelineStore.auditRows(spy, { from: new Date(NOW.getTime() - DAY), to: NOW, match: { token: T150 }, decisions: 'denials', visibleProjects: null, limit: 1000 })],
      ['timeline: 7 d token quiet', () => timelineStore.auditRows(spy, { ...WEEK, match: { token: T299 }, decisions: 'all', visibleProjects: null, limit: 1000 })],
      ['timeline: 7 d session', () => timelineStore.auditRows(spy, { ...WEEK, match: { session: S }, decisions: 'all', visibleProjects: null, limit: 1000 })],
      ['timeline: sessionOwner', () => timelineStore.sessionOwner(spy, S, new Date(NOW.getTime() - 90 * DAY))],
      ['timeline: sessionOwner no since', () => timelineStore.sessionOwner(spy, S, null)],
    ];
    const out: Array<Record<string, string | number>> = [];
    for (const [name, run] of cases) {
      if (args.only && !name.includes(args.only)) continue;
      captured = [];
      await run();
      let ms = 0;
      let hit = 0;
      let read = 0;
      let passed = 0;
      const nodes = new Set<string>();
      const sorts: string[] = [];
      for (const q of captured) {
        const { rows } = await c.query(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${q.text}`, q.values);
        const p = (rows[0] as { 'QUERY PLAN': Array<{ Plan: PlanNode & Record<string, number>; 'Execution Time': number; 'Planning Time': number }> })['QUERY PLAN'][0]!;
        ms += p['Execution Time'] + p['Planning Time'];
        hit += p.Plan['Shared Hit Blocks'] ?? 0;
        read += p.Plan['Shared Read Blocks'] ?? 0;
        const walk = (n: PlanNode) => {
          if (n['Node Type'].includes('Scan')) {
            passed += (n['Actual Rows'] + (n['Rows Removed by Filter'] ?? 0)) * (n['Actual Loops'] ?? 1);
            nodes.add(`${n['Node Type']}${n['Index Name'] ? ` ${n['Index Name'].replace(/^audit_events_(p\d+|default)_/, '')}` : ''}`);
          }
          if (n['Node Type'].includes('Sort')) sorts.push(`${n['Node Type']} ${n['Actual Rows']}`);
          for (const ch of n.Plans ?? []) walk(ch);
        };
        walk(p.Plan);
      }
      out.push({ case: name, ms: Math.round(ms * 10) / 10, buffers: `${hit} hit, ${read} read`, rows_passed: passed, sorts: sorts.join(', '), plan: [...nodes].join(' + ') });
    }
    console.table(out);
  } finally {
    await c.end();
    if (!args.keep) await scratch.drop();
  }
}

async function scratchExists(): Promise<boolean> {
  const admin = new pg.Client({ connectionString: args['pg-url'] });
  await admin.connect();
  try {
    return (await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [args.database])).rowCount === 1;
  } finally {
    await admin.end();
  }
}

await main();
