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
  last_reported_at: Date;
  decided_at: Date | null;
  decided_by: string | null;
  decision_reason: string | null;
}

const COLUMNS = 'id, server, tool, hash, definition, status, reported_by_gateway, upstream_identity, first_seen_at, last_reported_at, decided_at, decided_by, decision_reason';
type Db = Pool | PoolClient;

/** What every replica holds of each definition to decide calls (no definition, no identity). */
export type PinRow = Pick<ToolDefinitionRow, 'id' | 'server' | 'tool' | 'hash' | 'status' | 'decided_by' | 'decision_reason' | 'last_reported_at'> & {
  /** The deciding operator's name (agents read it, as they read an approval's decided_by_name); null when unknown. */
  decided_by_name: string | null;
};

export const toolStore = {
  async pins(db: Db): Promise<PinRow[]> {
    const { rows } = await db.query<PinRow>(
      `SELECT t.id, t.server, t.tool, t.hash, t.status, t.decided_by, t.decision_reason, t.last_reported_at, o.name AS decided_by_name
         FROM tool_definitions t LEFT JOIN operator_keys o ON t.decided_by = 'operator:' || o.id::text`,
    );
    return rows;
  },
  /** The name of the operator an actor (`operator:<id>`) is; undefined for anything else. */
  async operatorName(db: Db, actor: string | null): Promise<string | undefined> {
    if (actor === null || !actor.startsWith('operator:')) return undefined;
    const { rows } = await db.query<{ name: string }>(`SELECT name FROM operator_keys WHERE 'operator:' || id::text = $1`, [actor]);
    return rows[0]?.name;
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
  /**
   * Records one report of a definition; the caller holds the (server, tool) advisory lock. A new
   * (server, tool, hash) is inserted: approved when the tool has no approved definition (first sight),
   * pending otherwise. A known one is marked reported now when another definition of the tool was
   * reported since (so the row last reported is the one the gateway runs), and a superseded one (a
   * rollback to a definition approved before another) is pending again: it differs from the approved one.
   */
  async record(
    db: PoolClient,
    r: { id: string; server: string; tool: string; hash: string; definition: unknown; gatewayId: string; identity: unknown },
  ): Promise<{ row: ToolDefinitionRow; inserted: boolean; reopened: boolean }> {
    const { rows: found } = await db.query<ToolDefinitionRow>(`SELECT ${COLUMNS} FROM tool_definitions WHERE server = $1 AND tool = $2 AND hash = $3`, [r.server, r.tool, r.hash]);
    const existing = found[0];
    if (!existing) {
      const first = !(await toolStore.hasApproved(db, r.server, r.tool));
      const status: ToolStatus = first ? 'approved' : 'pending';
      const { rows } = await db.query<ToolDefinitionRow>(
        `INSERT INTO tool_definitions (id, server, tool, hash, definition, status, reported_by_gateway, upstream_identity, decided_at, decided_by)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8, CASE WHEN $6 = 'approved' THEN now() END, CASE WHEN $6 = 'approved' THEN 'first-sight' END)
         RETURNING ${COLUMNS}`,
        [r.id, r.server, r.tool, r.hash, JSON.stringify(r.definition), status, r.gatewayId, JSON.stringify(r.identity ?? null)],
      );
      return { row: rows[0]!, inserted: true, reopened: false };
    }
    if (existing.status === 'superseded') {
      const { rows } = await db.query<ToolDefinitionRow>(
        `UPDATE tool_definitions SET status = 'pending', decided_at = NULL, decided_by = NULL, decision_reason = NULL, last_reported_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
        [existing.id],
      );
      return { row: rows[0]!, inserted: false, reopened: true };
    }
    const { rows } = await db.query<ToolDefinitionRow>(
      `UPDATE tool_definitions t SET last_reported_at = now() WHERE t.id = $1
         AND EXISTS (SELECT 1 FROM tool_definitions o WHERE o.server = t.server AND o.tool = t.tool AND o.id <> t.id AND o.last_reported_at >= t.last_reported_at)
       RETURNING ${COLUMNS}`,
      [existing.id],
    );
    return { row: rows[0] ?? existing, inserted: false, reopened: false };
  },
  async hasApproved(db: Db, server: string, tool: string): Promise<boolean> {
    const { rowCount } = await db.query(`SELECT 1 FROM tool_definitions WHERE server = $1 AND tool = $2 AND status = 'approved'`, [server, tool]);
    return (rowCount ?? 0) > 0;
  },
  /**
   * Approving a definition supersedes the previously approved one of the same tool. A pending definition
   * may be approved or rejected; a rejected or superseded one approved (the operator changed their mind,
   * or the upstream went back to it).
   */
  async decide(db: PoolClient, id: string, status: 'approved' | 'rejected', by: string, reason: string): Promise<ToolDefinitionRow | undefined> {
    const from = status === 'approved' ? ['pending', 'rejected', 'superseded'] : ['pending'];
    const { rows } = await db.query<ToolDefinitionRow>(
      `UPDATE tool_definitions SET status = $2, decided_at = now(), decided_by = $3, decision_reason = $4 WHERE id = $1 AND status = ANY($5::text[]) RETURNING ${COLUMNS}`,
      [id, status, by, reason, from],
    );
    const row = rows[0];
    if (row && status === 'approved') {
      await db.query(`UPDATE tool_definitions SET status = 'superseded' WHERE server = $1 AND tool = $2 AND status = 'approved' AND id <> $3`, [row.server, row.tool, row.id]);
    }
    return row;
  },
};
