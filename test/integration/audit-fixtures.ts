import { mkdtemp } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll } from 'vitest';
import { intentRow } from '../../src/audit/rows.js';
import { createWriterPool } from '../../src/audit/service.js';
import { AuditWriter, type AuditWriterOptions } from '../../src/audit/writer.js';
import type { CallContext } from '../../src/decisions/types.js';
import type { AgentPrincipal, GatewayPrincipal } from '../../src/tokens/authenticator.js';
import { TestContext } from '../helpers/context.js';
import { freePort } from '../helpers/unleash.js';

// Shared by the audit test files: a CallContext as the pipeline builds it, audit writers on a file's own
// database, and a TCP proxy in front of the real Postgres that a test can take down and bring back (the
// writer sees a refused connection).

/** Audit writers straight on a test file's database (limited writer role, own spool directory each). */
export class TestWriters {
  private readonly pools: pg.Pool[] = [];
  private readonly log = { info: () => {}, warn: () => {}, error: () => {} };

  constructor(
    private readonly databaseUrl: string,
    private readonly database: string,
  ) {}

  async open(over: Partial<AuditWriterOptions> = {}): Promise<AuditWriter> {
    const pool = createWriterPool(this.databaseUrl);
    this.pools.push(pool);
    const dataDir = await mkdtemp(join(tmpdir(), 'ks-writer-'));
    return AuditWriter.open({ pool, database: this.database, dataDir, batchMax: 50, log: this.log as never, ...over });
  }

  /** Ends the writers' pools (close the writers first). */
  async close(): Promise<void> {
    for (const p of this.pools) await p.end().catch(() => {});
  }
}

/**
 * A chain written by a real writer on the file's database: its CHAIN_START row, `events` allowed INTENT
 * rows and (the writer closed) its CHAIN_END. Answers the chain's replica_id.
 */
export async function writeChain(file: { writers: TestWriters; db: pg.Pool }, events: number): Promise<string> {
  const writer = await file.writers.open({ batchMax: 1_000 });
  const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;
  const first = callContext();
  writer.enqueue(intentRow(first, allow));
  for (let i = 1; i < events; i++) writer.enqueue(intentRow(callContext(), allow));
  await writer.close();
  const { rows } = await file.db.query<{ replica_id: string }>('SELECT replica_id FROM audit_events WHERE decision_id = $1', [first.decisionId]);
  return rows[0]!.replica_id;
}

/**
 * A test file of audit writers: its own database (set up before and dropped after the file), writers on
 * it, and a pool to read what they wrote (it connects on its first query, after the database exists).
 */
export function writerTestFile(): { writers: TestWriters; db: pg.Pool } {
  const ctx = new TestContext();
  const writers = new TestWriters(ctx.databaseUrl, ctx.name);
  const db = ctx.pool();
  beforeAll(() => ctx.setup());
  afterAll(async () => {
    await writers.close();
    await ctx.teardown();
  });
  return { writers, db };
}

export function agentPrincipal(over: Partial<AgentPrincipal> = {}): AgentPrincipal {
  return {
    kind: 'agent',
    id: uuidv7(),
    tokenType: 'rw',
    scopes: ['storage:read', 'storage:write'],
    role: 'code_agent',
    projectId: 'proj-a',
    environment: 'development',
    displayPrefix: 'mcp_rw_abcd',
    expiresAt: null,
    ...over,
  };
}

export const gatewayPrincipal = (over: Partial<GatewayPrincipal> = {}): GatewayPrincipal => ({ kind: 'gateway', id: uuidv7(), name: 'gw-1', expiresAt: null, ...over });

export function callContext(
  over: { agent?: AgentPrincipal; gateway?: GatewayPrincipal; arguments?: Record<string, unknown>; server?: string; tool?: string; capability?: 'read' | 'write' | 'delete'; sessionId?: string } = {},
): CallContext {
  const server = over.server ?? 'filesystem';
  const tool = over.tool ?? 'write_file';
  const capability = over.capability ?? 'write';
  return {
    decisionId: uuidv7(),
    receivedAt: Date.now(),
    gateway: over.gateway ?? gatewayPrincipal(),
    agent: over.agent ?? agentPrincipal(),
    input: {
      server,
      tool,
      arguments: over.arguments ?? { path: 'docs/a.md', content: 'hello' },
      session_id: over.sessionId ?? 's-042',
      environment: 'development',
      client: { name: 'claude-ai', version: '0.9.2', user_agent: 'Claude/0.9.2 (darwin)' },
    },
    ip: '10.0.0.7',
    call: {
      server,
      serverClass: 'storage',
      tool,
      requiredScope: `storage:${capability}`,
      capability,
      scopeSource: 'map',
      extraFlags: [],
      resourceIds: [`${server}:${tool}`],
      networkIdentities: [],
    },
    flagsEvaluated: [
      { name: 'mcp.enabled', enabled: true },
      { name: `mcp.${server}.${capability}`, enabled: true },
    ],
    session: { id: over.sessionId ?? 's-042', state: 'active', read_only: false, servers: null, purpose: 'update the docs' },
    limits: { session_calls: { used: 1, max: 200 } },
    warnings: [],
    dryRun: false,
    trace: [],
  };
}

/**
 * Which bytes a hanging proxy drops: `both` is a network that went silent (a firewall or NAT that dropped
 * the connection's state, a frozen server); `replies` lets requests through and drops the answers (an
 * INSERT commits, its client never hears so).
 */
export type HangMode = 'both' | 'replies';

interface ProxiedConnection {
  /** The client's first bytes (pg's startup message: user, database, application_name). */
  startup: string;
}

/**
 * A TCP proxy to Postgres on a fixed local port that can be stopped (connections refused), restarted, and
 * made to hang: connections stay open and bytes are dropped silently, so a client waits for an answer
 * that never comes.
 */
export class PgProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private hanging: { mode: HangMode; applicationName: string | undefined } | undefined;
  port = 0;

  constructor(
    private readonly targetPort = 5432,
    private readonly targetHost = '127.0.0.1',
  ) {}

  /**
   * Reserves a free port without listening on it yet: one below the ephemeral range (freePort), since the
   * proxy goes down and up again while the test's connections come and go.
   */
  async reserve(): Promise<number> {
    this.port = await freePort();
    return this.port;
  }

  async up(): Promise<void> {
    if (this.server) return;
    const server = createServer((client) => {
      const upstream = connect(this.targetPort, this.targetHost);
      this.sockets.add(client).add(upstream);
      const conn: ProxiedConnection = { startup: '' };
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.on('data', (chunk: Buffer) => {
        if (!conn.startup) conn.startup = chunk.toString('latin1');
        if (!this.drops(conn, 'request')) upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => {
        if (!this.drops(conn, 'reply')) client.write(chunk);
      });
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(this.port, '127.0.0.1', () => resolve()));
    this.server = server;
  }

  /**
   * From now on drops bytes (see HangMode) of every connection, open or new, or only of those whose
   * application_name is `applicationName` (the audit writer's, the main pool's). Nothing is closed.
   */
  hang(mode: HangMode = 'both', applicationName?: string): void {
    this.hanging = { mode, applicationName };
  }

  /** Forwards again. What was dropped stays lost: a connection that was mid-query never gets its answer. */
  resume(): void {
    this.hanging = undefined;
  }

  private drops(conn: ProxiedConnection, direction: 'request' | 'reply'): boolean {
    const h = this.hanging;
    if (!h) return false;
    if (h.applicationName !== undefined && !conn.startup.includes(`application_name\0${h.applicationName}\0`)) return false;
    return direction === 'reply' || h.mode === 'both';
  }

  /** Refuses new connections and cuts the open ones, like a database that went away. */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.hanging = undefined;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }

  url(database: string): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }
}
