import { afterAll, beforeAll, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/record.js';
import { type AuditFilters, auditStore, type Keyset } from '../../src/audit/store.js';
import { migrate } from '../../src/db/migrate.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { OlderSchema } from '../helpers/older-schema.js';
import { insert, type Row } from './audit-usage-fixtures.js';

// Migration 0020 (indexes for the audit filters code, tool, actor and kind) on an installation that has
// audit rows, one of the indexes built beforehand as docs/audit.md ("Indexes") says a large installation
// should; and the actor filter, which the store now reads in two branches (operator and system rows
// along the new partial index, agent-token rows along the token index) merged into one keyset order.

const old = new OlderSchema(19);
let pool: Pool;

const INDEXES = ['audit_events_code_idx', 'audit_events_tool_idx', 'audit_events_actor_idx', 'audit_events_kind_idx'];

beforeAll(async () => {
  await old.setup();
  pool = createPool(old.url, { max: 2 });
});
afterAll(async () => {
  await pool?.end();
  await old.teardown();
});

/** Rows of actor `x` of both kinds (an operator's and an agent token's, interleaved, some in one millisecond), and others. */
function actorRows(): Row[] {
  const rows: Row[] = [];
  const t0 = Date.parse('2024-05-20T10:00:00Z');
  for (let i = 0; i < 24; i++) {
    const ts = new Date(t0 + Math.floor(i / 3) * 60_000).toISOString();
    const project = i % 2 === 0 ? 'proj-a' : 'proj-b';
    if (i % 3 === 0) rows.push({ ts, kind: 'ADMIN', actor_type: 'operator', actor_id: 'x', project_id: project, action: 'key.created', code: null, tool: null });
    else rows.push({ ts, kind: i % 3 === 1 ? 'INTENT' : 'RESULT', actor_type: 'mcp_token', actor_id: 'x', token_id: 'x', project_id: project, tool: 'query', code: i % 5 === 0 ? 'KILL_SWITCH' : 'OK' });
    rows.push({ ts, kind: 'INTENT', actor_type: 'mcp_token', actor_id: 'tok-other', token_id: 'tok-other', project_id: project, tool: 'query', code: 'OK' });
    rows.push({ ts, kind: 'ADMIN', actor_type: 'system', actor_id: 'retention', project_id: project });
  }
  return rows;
}

/** Every page of the listing (newest first) or the export (oldest first), `limit` rows a page. */
async function allPages(f: AuditFilters, dir: 'list' | 'export', limit: number): Promise<string[]> {
  const ids: string[] = [];
  let from: Keyset | undefined;
  for (;;) {
    const page: AuditRecord[] = dir === 'list' ? await auditStore.list(pool, f, limit, from) : await auditStore.exportPage(pool, f, limit, from);
    ids.push(...page.map((r) => r.id));
    const last = page.at(-1);
    if (!last || page.length < limit) return ids;
    from = { ts: last.ts, id: last.id };
  }
}

it('adds the filter indexes on every partition of an existing trail, and leaves an index built beforehand as it is', async () => {
  await migrate(pool, old.dir);
  await auditStore.ensurePartitions(pool, new Date('2024-05-01T00:00:00Z'), 1);
  // May 2024 has its partition; April's rows go to the default partition.
  await insert(pool, actorRows());
  await insert(pool, [{ ts: '2024-04-29T00:00:00Z', kind: 'INTENT', actor_type: 'mcp_token', actor_id: 'x', token_id: 'x', tool: 'query', code: 'KILL_SWITCH' }]);

  // The tool index built the way docs/audit.md describes for a large trail (without blocking writes).
  await pool.query("CREATE INDEX audit_events_tool_idx ON ONLY audit_events (tool, ts) WHERE tool IS NOT NULL");
  const { rows: parts } = await pool.query<{ name: string }>("SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass");
  for (const { name } of parts) {
    await pool.query(`CREATE INDEX CONCURRENTLY ${name}_tool_prebuilt ON ${name} (tool, ts) WHERE tool IS NOT NULL`);
    await pool.query(`ALTER INDEX audit_events_tool_idx ATTACH PARTITION ${name}_tool_prebuilt`);
  }

  const applied = await migrate(pool);
  expect(applied.map((m) => m.name)).toContain('0020_audit_filter_indexes.sql');

  // Each index is valid on the parent and has a valid child on each partition, the default one included.
  const { rows } = await pool.query<{ parent: string; children: number; valid: boolean }>(
    `SELECT p.relname AS parent, count(ci.inhrelid)::int AS children, bool_and(px.indisvalid AND cx.indisvalid) AS valid
     FROM pg_class p JOIN pg_index px ON px.indexrelid = p.oid
     LEFT JOIN pg_inherits ci ON ci.inhparent = p.oid LEFT JOIN pg_index cx ON cx.indexrelid = ci.inhrelid
     WHERE p.relname = ANY($1) GROUP BY p.relname ORDER BY p.relname`,
    [INDEXES],
  );
  expect(rows).toEqual([...INDEXES].sort().map((parent) => ({ parent, children: parts.length, valid: true })));
  // The prebuilt one was kept, not built again under another name.
  const { rows: prebuilt } = await pool.query("SELECT 1 FROM pg_class WHERE relname LIKE '%_tool_prebuilt'");
  expect(prebuilt).toHaveLength(parts.length);
  // A month created after the migration gets them too.
  await auditStore.ensurePartitions(pool, new Date('2024-06-01T00:00:00Z'), 1);
  const { rows: june } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = 'audit_events_p202406' AND indexname ~ '(code|tool|actor|kind)'");
  expect(june[0]!.n).toBe(4);
});

it('filters by actor over operator and agent-token rows alike, in keyset order on every page of the listing and the export', async () => {
  for (const f of [{ actor: 'x' }, { actor: 'x', project: 'proj-a' }, { actor: 'x', code: 'KILL_SWITCH' }, { actor: 'x', from: new Date('2024-05-20T10:02:00Z'), to: new Date('2024-05-20T10:05:00Z') }, { actor: 'nobody' }, { actor: 'retention', kind: 'ADMIN' }] satisfies AuditFilters[]) {
    const c: string[] = ['actor_id = $1'];
    const args: unknown[] = [f.actor];
    if ('project' in f) c.push(`project_id = $${args.push(f.project)}`);
    if ('code' in f) c.push(`code = $${args.push(f.code)}`);
    if ('kind' in f) c.push(`kind = $${args.push(f.kind)}`);
    if ('from' in f) c.push(`ts >= $${args.push(f.from)}`, `ts < $${args.push(f.to)}`);
    const { rows } = await pool.query<{ id: string }>(`SELECT id FROM audit_events WHERE ${c.join(' AND ')} ORDER BY ts, id`, args);
    const expected = rows.map((r) => r.id);
    if (f.actor === 'x' && !('from' in f) && !('project' in f) && !('code' in f)) expect(expected.length).toBe(25);
    for (const limit of [1, 4, 100]) {
      expect(await allPages(f, 'export', limit)).toEqual(expected);
      expect(await allPages(f, 'list', limit)).toEqual([...expected].reverse());
    }
  }
});
