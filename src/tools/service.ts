import { v7 as uuidv7 } from 'uuid';
import { type Pool, withTransaction } from '../db/pool.js';
import { AppError, notFound } from '../errors.js';
import { PROTOCOL_READS } from '../policy/resolve.js';
import { keepSubscribed, type RedisHandle } from '../redis/client.js';
import { type ToolDefinition, toolHash } from './hash.js';
import { type ToolDefinitionRow, toolStore } from './store.js';

export interface UpstreamIdentity {
  url?: string;
  command?: string;
  args?: string[];
}

export interface ReportedServer {
  name: string;
  identity: UpstreamIdentity;
  tools: Array<ToolDefinition & { hash?: string }>;
}

export type ToolPinStatus = 'approved' | 'changed' | 'rejected';

/** One reported definition as the control plane sees it; `refused` ones were never stored. */
export interface ToolReportResult {
  server: string;
  tool: string;
  hash: string;
  status: ToolPinStatus | 'refused';
  /** The tool_definitions row; null for a refused definition. */
  id: string | null;
  newlyChanged: boolean;
  /** Why a refused definition can never be called. */
  refusal?: string;
}

/**
 * Why a reported tool name can never be a tool, or undefined. `resources/read` and `prompts/get` are
 * MCP protocol reads that resolveCall gives the read scope whatever the annotations: a gateway that
 * passed an upstream tool of that name through would let read-only tokens call it.
 */
export function refusedToolName(name: string): string | undefined {
  if (PROTOCOL_READS.has(name)) {
    return `"${name}" is an MCP protocol method, not a tool name: the definition is not pinned and no token may call it (a gateway must not pass such an upstream tool through)`;
  }
  return undefined;
}

interface PinEntry {
  approved: string | null;
  rejected: Set<string>;
}

// Server names cannot contain "/" (schema pattern), so this key is unambiguous.
const key = (server: string, tool: string) => `${server}/${tool}`;

/** How often every replica reloads the pins, besides on every announcement (one it missed is caught up). */
export const TOOLS_RELOAD_EVERY_MS = 5_000;

/**
 * Tool definitions pinned on first sight. A definition that changes later ("rug pull") is pending until
 * an operator approves it; decisions naming a hash other than the approved one answer TOOL_CHANGED.
 * Every replica holds the pins in memory (reloaded on a Redis announcement and every
 * TOOLS_RELOAD_EVERY_MS, so a missed announcement is caught up), so the check is free.
 */
export class ToolRegistry {
  private pins = new Map<string, PinEntry>();
  private identities = new Map<string, UpstreamIdentity>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly channel: string;
  private readonly onMessage = (channel: string) => {
    if (channel === this.channel) void this.reload();
  };

  constructor(
    private readonly pool: Pool,
    private readonly redis: RedisHandle,
    private readonly reloadEveryMs = TOOLS_RELOAD_EVERY_MS,
  ) {
    this.channel = redis.channel('tools:changed');
  }

  async start(): Promise<void> {
    this.redis.sub.on('message', this.onMessage);
    // Announcements reach this replica once Redis answers; the periodic reload covers the gap.
    this.unsubscribe = await keepSubscribed(this.redis, this.channel, () => {});
    await this.reload();
    this.timer = setInterval(() => void this.reload(), this.reloadEveryMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.redis.sub.off('message', this.onMessage);
    await this.unsubscribe?.();
  }

  async reload(): Promise<void> {
    const next = new Map<string, PinEntry>();
    const identities = new Map<string, UpstreamIdentity>();
    let rows: ToolDefinitionRow[];
    try {
      rows = await toolStore.all(this.pool);
    } catch {
      return; // Postgres unreachable: keep the pins we have (a pin can only be stale, never invented).
    }
    for (const row of rows) {
      const entry = next.get(key(row.server, row.tool)) ?? { approved: null, rejected: new Set<string>() };
      if (row.status === 'approved') entry.approved = row.hash;
      next.set(key(row.server, row.tool), entry);
      if (row.upstream_identity && row.status === 'approved') identities.set(row.server, row.upstream_identity as UpstreamIdentity);
    }
    this.pins = next;
    this.identities = identities;
  }

  /** Status of a tool hash named by a decision; undefined when the tool was never reported. */
  statusOf(server: string, tool: string, hash: string): ToolPinStatus | undefined {
    const entry = this.pins.get(key(server, tool));
    if (!entry) return undefined;
    if (entry.approved === hash) return 'approved';
    return 'changed';
  }

  /** The upstream identity gateways reported for a server (its URL host is matched against production patterns). */
  identityOf(server: string): UpstreamIdentity | undefined {
    return this.identities.get(server);
  }

  /**
   * Records what a gateway runs; returns each tool's pin status. First sight pins; a new hash waits. A
   * definition whose name is a protocol method is answered `refused` and never stored: the rest of the
   * report still counts, so one bad upstream tool does not empty the agent's whole tool list.
   */
  async report(gatewayId: string, servers: ReportedServer[]): Promise<ToolReportResult[]> {
    const out: ToolReportResult[] = [];
    for (const server of servers) {
      for (const def of server.tools) {
        const hash = toolHash(def);
        if (def.hash && def.hash !== hash) {
          throw new AppError('INVALID_REQUEST', `servers.${server.name}.tools.${def.name}.hash: does not match the definition (expected ${hash})`, [
            { field: `servers.${server.name}.tools.${def.name}.hash`, problem: `does not match the definition; expected ${hash}` },
          ]);
        }
        const refusal = refusedToolName(def.name);
        if (refusal) {
          out.push({ server: server.name, tool: def.name, hash, status: 'refused', id: null, newlyChanged: false, refusal });
          continue;
        }
        const { row, inserted } = await withTransaction(this.pool, async (db) => {
          await db.query('SELECT pg_advisory_xact_lock(hashtext($1))', [key(server.name, def.name)]);
          const first = !(await toolStore.hasApproved(db, server.name, def.name));
          return toolStore.upsert(db, {
            id: uuidv7(),
            server: server.name,
            tool: def.name,
            hash,
            definition: def,
            status: first ? 'approved' : 'pending',
            gatewayId,
            identity: server.identity,
          });
        });
        const status: ToolPinStatus = row.status === 'approved' ? 'approved' : row.status === 'rejected' ? 'rejected' : 'changed';
        out.push({ server: server.name, tool: def.name, hash, status, id: row.id, newlyChanged: inserted && row.status === 'pending' });
      }
    }
    await this.reload();
    await this.redis.redis.publish(this.channel, '1').catch(() => {});
    return out;
  }

  list(f: { status?: 'approved' | 'pending' | 'rejected' | 'superseded'; server?: string }): Promise<ToolDefinitionRow[]> {
    return toolStore.list(this.pool, f);
  }

  async decide(id: string, status: 'approved' | 'rejected', by: string, reason: string): Promise<ToolDefinitionRow> {
    const row = await withTransaction(this.pool, async (db) => {
      const existing = await toolStore.get(db, id);
      if (!existing) throw notFound('tool definition');
      await db.query('SELECT pg_advisory_xact_lock(hashtext($1))', [key(existing.server, existing.tool)]);
      const decided = await toolStore.decide(db, id, status, by, reason);
      if (!decided) throw new AppError('CONFLICT', `tool definition ${id} is ${existing.status}, not pending`);
      return decided;
    });
    await this.reload();
    await this.redis.redis.publish(this.channel, '1').catch(() => {});
    return row;
  }
}
