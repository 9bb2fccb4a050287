import type { Pool, PoolClient } from '../db/pool.js';

export type ToolStatus = 'approved' | 'pending' | 'rejected' | 'superseded';

export interface ToolDefinitionRow {
  id: string;
  server: string;
  tool: string;
  hash: string;
  definition: Record<string, unknown>;
  status: ToolStatus;
  reported_by_gateway: string | null;
  upstream_identity: Record<string, unknown> | null;
  first_seen_at: Date;
  decided_at: Date | null;
  decided_by: string | null;
  decision_reason: string | null;
}

const COLUMNS = 'id, server, tool, hash, definition, status, reported_by_gateway, upstream_identity, first_seen_at, decided_at, decided_by, decision_reason';
type Db = Pool | PoolClient;

export const toolStore = {
  async all(db: Db): Promise<ToolDefinitionRow[]> {
    const { rows } = await db.query<ToolDefinitionRow>(`SELECT ${COLUMNS} FROM tool_definitions WHERE status IN ('approved', 'pending')`);
    return rows;
  },
  async list(db: Db, f: { status?: ToolStatus; server?: string }): Promise<ToolDefinitionRow[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.status) {
      args.push(f.status);
      where.push(`status = $${args.length}`);
    }
    if (f.server) {
      args.push(f.server);
      where.push(`server = $${args.length}`);
    }
    const { rows } = await db.query<ToolDefinitionRow>(
      `SELECT ${COLUMNS} FROM tool_definitions ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY first_seen_at DESC LIMIT 1000`,
      args,
    );
    return rows;
  },
  async get(db: Db, id: string): Promise<ToolDefinitionRow | undefined> {
    const { rows } = await db.query<ToolDefinitionRow>(`SELECT ${COLUMNS} FROM tool_definitions WHERE id = $1`, [id]);
    return rows[0];
  },
  /** Inserts a definition if (server, tool, hash) is new; returns the row and whether it was new. */
  async upsert(
    db: Db,
    r: { id: string; server: string; tool: string; hash: string; definition: unknown; status: ToolStatus; gatewayId: string; identity: unknown },
  ): Promise<{ row: ToolDefinitionRow; inserted: boolean }> {
    const ins = await db.query<ToolDefinitionRow>(
      `INSERT INTO tool_definitions (id, server, tool, hash, definition, status, reported_by_gateway, upstream_identity, decided_at, decided_by)
       VALUES ($1,$2,$3,$4,$5,$6,$7,$8, CASE WHEN $6 = 'approved' THEN now() END, CASE WHEN $6 = 'approved' THEN 'first-sight' END)
       ON CONFLICT (server, tool, hash) DO NOTHING RETURNING ${COLUMNS}`,
      [r.id, r.server, r.tool, r.hash, JSON.stringify(r.definition), r.status, r.gatewayId, JSON.stringify(r.identity ?? null)],
    );
    if (ins.rows[0]) return { row: ins.rows[0], inserted: true };
    const { rows } = await db.query<ToolDefinitionRow>(`SELECT ${COLUMNS} FROM tool_definitions WHERE server = $1 AND tool = $2 AND hash = $3`, [r.server, r.tool, r.hash]);
    return { row: rows[0]!, inserted: false };
  },
  async hasApproved(db: Db, server: string, tool: string): Promise<boolean> {
    const { rowCount } = await db.query(`SELECT 1 FROM tool_definitions WHERE server = $1 AND tool = $2 AND status = 'approved'`, [server, tool]);
    return (rowCount ?? 0) > 0;
  },
  /** Approving a definition supersedes the previously approved one of the same tool. */
  async decide(db: PoolClient, id: string, status: 'approved' | 'rejected', by: string, reason: string): Promise<ToolDefinitionRow | undefined> {
    const { rows } = await db.query<ToolDefinitionRow>(
      `UPDATE tool_definitions SET status = $2, decided_at = now(), decided_by = $3, decision_reason = $4 WHERE id = $1 AND status = 'pending' RETURNING ${COLUMNS}`,
      [id, status, by, reason],
    );
    const row = rows[0];
    if (row && status === 'approved') {
      await db.query(`UPDATE tool_definitions SET status = 'superseded' WHERE server = $1 AND tool = $2 AND status = 'approved' AND id <> $3`, [row.server, row.tool, row.id]);
    }
    return row;
  },
};
