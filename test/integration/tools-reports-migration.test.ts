import { afterAll, beforeAll, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import { OlderSchema } from '../helpers/older-schema.js';

// Migration 0012 (per-gateway tool reports): until a gateway reports again, each gateway known to have
// reported a tool is judged by the tool's definition reported last by any gateway, as before the upgrade.

const old = new OlderSchema(11);

beforeAll(() => old.setup());
afterAll(() => old.teardown());

it('gives each gateway that first reported a definition of a tool the tool’s definition reported last', async () => {
  const pool = createPool(old.url, { max: 1 });
  try {
    // A new database: one line for the whole schema, not two per migration.
    const first: Array<{ obj: Record<string, unknown>; msg: string }> = [];
    const created = await migrate(pool, old.dir, { info: (obj, msg) => first.push({ obj, msg }) });
    expect(first).toEqual([{ obj: { migrations: created.length, last: created.at(-1)!.name, ms: expect.any(Number) }, msg: `created the database schema (${created.length} migrations)` }]);
    const [gA, gB, gC] = ['0197a000-0000-7000-8000-00000000000a', '0197a000-0000-7000-8000-00000000000b', '0197a000-0000-7000-8000-00000000000c'];
    const insert = (id: string, tool: string, hash: string, status: string, gateway: string, reportedAt: string) =>
      pool.query(
        `INSERT INTO tool_definitions (id, server, tool, hash, definition, status, reported_by_gateway, first_seen_at, last_reported_at) VALUES ($1, 'memory', $2, $3, '{}', $4, $5, $6, $6)`,
        [id, tool, hash, status, gateway, reportedAt],
      );
    await insert('0197a000-0000-7000-8000-000000000001', 'read_graph', 'sha256:1', 'approved', gA, '2026-01-01T00:00:00Z');
    await insert('0197a000-0000-7000-8000-000000000002', 'read_graph', 'sha256:2', 'pending', gB, '2026-01-02T00:00:00Z');
    await insert('0197a000-0000-7000-8000-000000000003', 'open_nodes', 'sha256:3', 'approved', gC, '2026-01-01T00:00:00Z');
    // The upgrade's log names each migration it applies, before and after, with how long it took.
    const lines: Array<{ obj: Record<string, unknown>; msg: string }> = [];
    const applied = await migrate(pool, undefined, { info: (obj, msg) => lines.push({ obj, msg }) });
    expect(applied.map((m) => m.name)).toContain('0012_tool_reports_per_gateway.sql');
    expect(lines.map((l) => l.msg)).toEqual(applied.flatMap((m) => [`applying database migration ${m.name}`, `applied database migration ${m.name}`]));
    expect(lines[1]!.obj).toEqual({ migration: applied[0]!.name, ms: expect.any(Number) });
    expect(await migrate(pool, undefined, { info: (obj, msg) => lines.push({ obj, msg }) })).toEqual([]);
    expect(lines).toHaveLength(2 * applied.length);
    const { rows } = await pool.query<{ gateway_id: string; tool: string; definition_id: string }>('SELECT gateway_id, tool, definition_id FROM tool_reports ORDER BY gateway_id, tool');
    expect(rows).toEqual([
      { gateway_id: gA, tool: 'read_graph', definition_id: '0197a000-0000-7000-8000-000000000002' },
      { gateway_id: gB, tool: 'read_graph', definition_id: '0197a000-0000-7000-8000-000000000002' },
      { gateway_id: gC, tool: 'open_nodes', definition_id: '0197a000-0000-7000-8000-000000000003' },
    ]);
  } finally {
    await pool.end();
  }
});
