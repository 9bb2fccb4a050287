import type { Pool, PoolClient } from '../db/pool.js';
import { conditions } from '../db/where.js';

export type ToolStatus = 'approved' | 'pending' | 'rejected' | 'superseded';

export interface ToolDefinitionRow {
  id: string;
  server: string;
  tool: string;
  hash: string;
  definition: Record<string, unknown>;
  status: ToolStatus;
  /** Who reported this definition first: the gateway key, and the agent token and its project (null before migration 0012). */
  reported_by_gateway: string | null;
  reported_by_token: string | null;
  reported_by_project: string | null;
  upstream_identity: Record<string, unknown> | null;
  first_seen_at: Date;
  last_reported_at: Date;
  decided_at: Date | null;
  decided_by: string | null;
  decision_reason: string | null;
}

const COLUMNS = 'id, server, tool, hash, definition, status, reported_by_gateway, reported_by_token, reported_by_project, upstream_identity, first_seen_at, last_reported_at, decided_at, decided_by, decision_reason';
type Db = Pool | PoolClient;

/** What every replica holds of each definition to decide calls (no definition, no identity). */
export type PinRow = Pick<ToolDefinitionRow, 'id' | 'server' | 'tool' | 'hash' | 'status' | 'decided_by' | 'decision_reason' | 'last_reported_at'> & {
  /** The deciding operator's name (agents read it, as they read an approval's decided_by_name); null when unknown. */
  decided_by_name: string | null;
  /** The gateways (gateway key ids, with their names) whose last report of this tool is this definition. */
  reported_last_by: Array<{ id: string; name: string | null }>;
};

/** A gateway whose last report of a tool is a given definition, as operators are shown it. */
export interface ToolReporter {
  gateway_id: string;
  gateway_name: string | null;
  token_id: string | null;
  project_id: string | null;
  /** Since when this gateway reports this definition (it reported another, or none, before). */
  reported_at: Date;
}

/** Who reported a definition (the reporting gateway key, and the agent token the report was made with). */
export interface Reporter {
  gatewayId: string;
  tokenId: string;
  projectId: string;
}

/** `decided_by` of a pending definition replaced by a later change of its tool before anyone reviewed it (status superseded). */
export const REPLACED_BY = 'replaced';

/** What recording one report of a definition did; `replaced`: the pending definition of the tool it replaced. */
export interface Recorded {
  row: ToolDefinitionRow;
  inserted: boolean;
  reopened: boolean;
  replaced?: string;
  /** The reporting gateway's last definition of the tool (tool_reports) is now this one and was not before. */
  reportChanged: boolean;
}

/** The network identities a gateway reported for one upstream server (its last report), as every replica holds them. */
export interface UpstreamRow {
  gateway_id: string;
  /** The gateway key's name; null once the key is deleted. */
  gateway_name: string | null;
  server: string;
  network_identities: string[];
}

export const toolStore = {
  /** Every definition, with the gateways whose last report it is: one statement, so one snapshot of both tables. */
  async pins(db: Db): Promise<PinRow[]> {
    const { rows } = await db.query<PinRow>(
      `SELECT t.id, t.server, t.tool, t.hash, t.status, t.decided_by, t.decision_reason, t.last_reported_at, o.name AS decided_by_name,
              COALESCE((SELECT json_agg(json_build_object('id', r.gateway_id::text, 'name', g.name))
                          FROM tool_reports r LEFT JOIN gateway_keys g ON g.id = r.gateway_id
                         WHERE r.definition_id = t.id), '[]'::json) AS reported_last_by
         FROM tool_definitions t LEFT JOIN operator_keys o ON t.decided_by = 'operator:' || o.id::text`,
    );
    return rows;
  },
  /** Every gateway's reported upstream network identities (gateway_upstreams), with the gateway key's name. */
  async upstreams(db: Db): Promise<UpstreamRow[]> {
    const { rows } = await db.query<UpstreamRow>(
      `SELECT u.gateway_id::text AS gateway_id, g.name AS gateway_name, u.server, u.network_identities
         FROM gateway_upstreams u LEFT JOIN gateway_keys g ON g.id = u.gateway_id`,
    );
    return rows;
  },
  /**
   * Makes these the network identities this gateway runs each server with (its last report wins): one
   * statement for the whole report. A server reported with none has its row removed. The row is rewritten
   * only when the set changed, so `reported_at` says since when the gateway runs it so.
   */
  /** Stores what each server of a report reaches; true when that changed anything stored. */
  async recordUpstreams(db: Db, gatewayId: string, servers: ReadonlyArray<{ server: string; identities: readonly string[] }>): Promise<boolean> {
    if (servers.length === 0) return false;
    const { rows } = await db.query<{ changed: number }>(
      `WITH reported AS (
         SELECT r.server, ARRAY(SELECT jsonb_array_elements_text(r.ids) ORDER BY 1) AS ids
           FROM unnest($2::text[], $3::jsonb[]) AS r(server, ids)
       ), removed AS (
         DELETE FROM gateway_upstreams u USING reported r WHERE u.gateway_id = $1 AND u.server = r.server AND cardinality(r.ids) = 0
         RETURNING 1
       ), written AS (
         INSERT INTO gateway_upstreams (gateway_id, server, network_identities)
         SELECT $1, server, ids FROM reported WHERE cardinality(ids) > 0
         ON CONFLICT (gateway_id, server) DO UPDATE SET network_identities = EXCLUDED.network_identities, reported_at = now()
           WHERE gateway_upstreams.network_identities <> EXCLUDED.network_identities
         RETURNING 1
       )
       SELECT ((SELECT count(*) FROM removed) + (SELECT count(*) FROM written))::int AS changed`,
      [gatewayId, servers.map((s) => s.server), servers.map((s) => JSON.stringify(s.identities))],
    );
    return (rows[0]?.changed ?? 0) > 0;
  },
  /** Gateway key names by id (a deleted key is missing). */
  async gatewayNames(db: Db, ids: string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map();
    const { rows } = await db.query<{ id: string; name: string }>('SELECT id::text AS id, name FROM gateway_keys WHERE id = ANY($1::uuid[])', [ids]);
    return new Map(rows.map((r) => [r.id, r.name]));
  },
  /** The gateways whose last report of their tool is one of these definitions, by definition id. */
  async reporters(db: Db, definitionIds: string[]): Promise<Map<string, ToolReporter[]>> {
    const out = new Map<string, ToolReporter[]>();
    if (definitionIds.length === 0) return out;
    const { rows } = await db.query<ToolReporter & { definition_id: string }>(
      `SELECT r.definition_id, r.gateway_id, g.name AS gateway_name, r.token_id, r.project_id, r.reported_at
         FROM tool_reports r LEFT JOIN gateway_keys g ON g.id = r.gateway_id
        WHERE r.definition_id = ANY($1::uuid[]) ORDER BY r.reported_at DESC`,
      [definitionIds],
    );
    for (const { definition_id, ...r } of rows) {
      const list = out.get(definition_id);
      if (list) list.push(r);
      else out.set(definition_id, [r]);
    }
    return out;
  },
  /** The name of the operator an actor (`operator:<id>`) is; undefined for anything else. */
  async operatorName(db: Db, actor: string | null): Promise<string | undefined> {
    if (actor === null || !actor.startsWith('operator:')) return undefined;
    const { rows } = await db.query<{ name: string }>(`SELECT name FROM operator_keys WHERE 'operator:' || id::text = $1`, [actor]);
    return rows[0]?.name;
  },
  /** Newest first (ids are UUIDv7, taken when first seen); `before` (an id) continues after the page that ended on it. */
  async list(db: Db, f: { status?: ToolStatus; server?: string; limit?: number; before?: string }): Promise<ToolDefinitionRow[]> {
    const c = conditions();
    if (f.status) c.add('status = ?', f.status);
    if (f.server) c.add('server = ?', f.server);
    if (f.before) c.add('id < ?', f.before);
    const { rows } = await db.query<ToolDefinitionRow>(`SELECT ${COLUMNS} FROM tool_definitions ${c.where()} ORDER BY id DESC LIMIT ${c.arg(f.limit ?? 1000)}`, c.args);
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
   * Either way it becomes the definition of the tool this gateway reported last (tool_reports). A
   * definition that became pending replaces the tool's other pending one (replacePending). A new tool
   * name beyond the server's cap is not stored ('server-full').
   */
  async record(
    db: PoolClient,
    r: { id: string; server: string; tool: string; hash: string; definition: unknown; reporter: Reporter; identity: unknown },
    maxToolsPerServer: number,
  ): Promise<Recorded | 'server-full'> {
    const definition = await toolStore.recordDefinition(db, r, maxToolsPerServer);
    if (definition === 'server-full') return definition;
    const recorded: Recorded = { ...definition, reportChanged: await toolStore.recordReport(db, r.reporter, definition.row) };
    if (recorded.row.status !== 'pending' || (!recorded.inserted && !recorded.reopened)) return recorded;
    const replaced = await toolStore.replacePending(db, recorded.row);
    return replaced === undefined ? recorded : { ...recorded, replaced };
  },
  /**
   * Keeps one pending definition per tool: the one just reported (`row`) replaces any other pending one
   * of its tool, so a flood of changes leaves one definition to review, the latest. A replaced definition
   * that some gateway still runs (its last report, tool_reports) is kept as superseded, decided by
   * `replaced` (its calls stay TOOL_CHANGED, an operator may still approve it, and reported again it is
   * pending again); one that no gateway runs any more is deleted. Returns the id of the pending
   * definition replaced, if any. The caller holds the tool's advisory lock.
   */
  async replacePending(db: PoolClient, row: Pick<ToolDefinitionRow, 'id' | 'server' | 'tool'>): Promise<string | undefined> {
    const { rows } = await db.query<{ id: string }>(
      `WITH older AS (
         SELECT id, EXISTS (SELECT 1 FROM tool_reports r WHERE r.definition_id = t.id) AS running
           FROM tool_definitions t WHERE server = $1 AND tool = $2 AND status = 'pending' AND id <> $3
       ), kept AS (
         UPDATE tool_definitions t SET status = 'superseded', decided_at = now(), decided_by = '${REPLACED_BY}',
                decision_reason = 'replaced by tool definition ' || $3 || ', reported later, before an operator reviewed it'
           FROM older WHERE t.id = older.id AND older.running RETURNING t.id
       ), dropped AS (
         DELETE FROM tool_definitions t USING older WHERE t.id = older.id AND NOT older.running RETURNING t.id
       )
       SELECT id FROM kept UNION ALL SELECT id FROM dropped`,
      [row.server, row.tool, row.id],
    );
    return rows[0]?.id;
  },
  /**
   * Makes `row` the definition of its tool this gateway reported last. The row is rewritten only when it
   * names another definition, so `reported_at`, the token and the project say when and with which token
   * the gateway's definition changed, and repeated reports of the same one write nothing (false).
   */
  async recordReport(db: PoolClient, reporter: Reporter, row: Pick<ToolDefinitionRow, 'id' | 'server' | 'tool'>): Promise<boolean> {
    const { rowCount } = await db.query(
      `INSERT INTO tool_reports (gateway_id, server, tool, definition_id, token_id, project_id) VALUES ($1,$2,$3,$4,$5,$6)
       ON CONFLICT (gateway_id, server, tool) DO UPDATE
         SET definition_id = EXCLUDED.definition_id, token_id = EXCLUDED.token_id, project_id = EXCLUDED.project_id, reported_at = now()
         WHERE tool_reports.definition_id <> EXCLUDED.definition_id`,
      [reporter.gatewayId, row.server, row.tool, row.id, reporter.tokenId, reporter.projectId],
    );
    return (rowCount ?? 0) > 0;
  },
  /**
   * Stores or re-reads one definition. A tool name the server never reported is refused
   * ('server-full') once the server has `maxToolsPerServer` distinct tools: counted under the server's
   * advisory lock (taken after the tool's, as nothing takes them the other way round), so concurrent
   * reports cannot pass the cap together.
   */
  async recordDefinition(
    db: PoolClient,
    r: { id: string; server: string; tool: string; hash: string; definition: unknown; reporter: Reporter; identity: unknown },
    maxToolsPerServer: number,
  ): Promise<Omit<Recorded, 'reportChanged'> | 'server-full'> {
    const { rows: found } = await db.query<ToolDefinitionRow>(`SELECT ${COLUMNS} FROM tool_definitions WHERE server = $1 AND tool = $2 AND hash = $3`, [r.server, r.tool, r.hash]);
    const existing = found[0];
    if (!existing) {
      const { rowCount: known } = await db.query('SELECT 1 FROM tool_definitions WHERE server = $1 AND tool = $2 LIMIT 1', [r.server, r.tool]);
      if (!known) {
        await db.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tools-of-server:${r.server}`]);
        if ((await toolStore.toolCount(db, r.server)) >= maxToolsPerServer) return 'server-full';
      }
      // Trust on first sight of the tool's NAME only: once any definition of it exists (one an operator
      // rejected included), a new one waits for review, so rejecting the approved definition cannot be
      // undone by an upstream that changes a word of its description.
      const status: ToolStatus = known ? 'pending' : 'approved';
      const { rows } = await db.query<ToolDefinitionRow>(
        `INSERT INTO tool_definitions (id, server, tool, hash, definition, status, reported_by_gateway, reported_by_token, reported_by_project, upstream_identity, decided_at, decided_by)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10, CASE WHEN $6 = 'approved' THEN now() END, CASE WHEN $6 = 'approved' THEN 'first-sight' END)
         RETURNING ${COLUMNS}`,
        [r.id, r.server, r.tool, r.hash, JSON.stringify(r.definition), status, r.reporter.gatewayId, r.reporter.tokenId, r.reporter.projectId, JSON.stringify(r.identity ?? null)],
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
  /**
   * The definitions among `tools` that a report by this gateway would leave as they are: the one the
   * gateway reported last for the tool (tool_reports), with the reported hash, not superseded, and the
   * tool's most recently reported definition. Recording them again would write nothing (record: no
   * insert, no reopening, no last_reported_at, no tool_reports change), so a report of an unchanged
   * list skips their per-tool transactions. By `server/tool`.
   */
  async unchangedReports(db: Db, gatewayId: string, tools: ReadonlyArray<{ server: string; tool: string; hash: string }>): Promise<Map<string, ToolDefinitionRow>> {
    const out = new Map<string, ToolDefinitionRow>();
    if (tools.length === 0) return out;
    const { rows } = await db.query<ToolDefinitionRow>(
      `SELECT ${COLUMNS} FROM tool_definitions t
        WHERE t.id IN (SELECT r.definition_id FROM tool_reports r
                        WHERE r.gateway_id = $1 AND (r.server, r.tool) IN (SELECT * FROM unnest($2::text[], $3::text[])))
          AND t.status <> 'superseded'
          AND NOT EXISTS (SELECT 1 FROM tool_definitions o WHERE o.server = t.server AND o.tool = t.tool AND o.id <> t.id AND o.last_reported_at >= t.last_reported_at)`,
      [gatewayId, tools.map((t) => t.server), tools.map((t) => t.tool)],
    );
    const wanted = new Map(tools.map((t) => [`${t.server}/${t.tool}`, t.hash]));
    for (const row of rows) if (wanted.get(`${row.server}/${row.tool}`) === row.hash) out.set(`${row.server}/${row.tool}`, row);
    return out;
  },
  /** How many distinct tools a server has definitions of. */
  async toolCount(db: Db, server: string): Promise<number> {
    const { rows } = await db.query<{ n: number }>('SELECT count(DISTINCT tool)::int AS n FROM tool_definitions WHERE server = $1', [server]);
    return rows[0]?.n ?? 0;
  },
  /** Which of these servers have any tool definition stored. */
  async serversWithTools(db: Db, servers: string[]): Promise<Set<string>> {
    const { rows } = await db.query<{ server: string }>('SELECT DISTINCT server FROM tool_definitions WHERE server = ANY($1::text[])', [servers]);
    return new Set(rows.map((r) => r.server));
  },
  /**
   * Approving a definition supersedes the previously approved one of the same tool. A pending definition
   * may be approved or rejected; an approved one rejected (trust given on first sight taken back); a
   * rejected or superseded one approved (the operator changed their mind, or the upstream went back to it).
   */
  async decide(db: PoolClient, id: string, status: 'approved' | 'rejected', by: string, reason: string): Promise<ToolDefinitionRow | undefined> {
    // An approved definition can be rejected too: trust given on first sight is taken back (its calls
    // then deny TOOL_CHANGED until an operator approves a definition again).
    const from = status === 'approved' ? ['pending', 'rejected', 'superseded'] : ['pending', 'approved'];
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
