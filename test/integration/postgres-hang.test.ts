import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/chain.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { intentRow } from '../../src/audit/rows.js';
import { AUDIT_WRITER_ROLE, AuditService, createWriterPool } from '../../src/audit/service.js';
import { AuditWriter } from '../../src/audit/writer.js';
import { DEFAULT_QUERY_TIMEOUT_MS, REQUEST_QUERY_TIMEOUT_MS, tolerateConnectionLoss } from '../../src/db/pool.js';
import { CREDENTIAL_LOOKUP_TIMEOUT_MS } from '../../src/db/query-timeout.js';
import { listenMetrics } from '../../src/metrics/routes.js';
import { AGENT_PREFIXES, generateCredential } from '../../src/tokens/format.js';
import { bearer, TestContext } from '../helpers/context.js';
import { withTimeout } from '../helpers/control-plane.js';
import { until as waitUntil } from '../helpers/unleash.js';
import { callContext, PgProxy } from './audit-fixtures.js';

// Postgres that hangs instead of refusing: a frozen backend, or a firewall that silently dropped an idle
// connection. Nothing errors, so only client-side timeouts notice. A proxy of this file's own stands in
// for the network (it drops bytes and closes nothing); the shared Postgres is never paused.

/** What Prometheus waits for a scrape unless told otherwise (`scrape_timeout`). */
const PROMETHEUS_DEFAULT_SCRAPE_TIMEOUT_MS = 10_000;

const ctx = new TestContext();
const proxy = new PgProxy();
let db: pg.Pool;
const pools: pg.Pool[] = [];
const writers: AuditWriter[] = [];
const logs: string[] = [];
/** The fields of each warning, as text (errors by their message), in the order of `logs`' warnings. */
const warnings: Array<{ msg: string; fields: string }> = [];
const fieldsText = (o: unknown) => JSON.stringify(o, (_k, v: unknown) => (v instanceof Error ? v.message : v)) ?? '';
const log = {
  info: (_o: unknown, m?: string) => logs.push(`info ${m}`),
  warn: (o: unknown, m?: string) => {
    warnings.push({ msg: m ?? '', fields: fieldsText(o) });
    return logs.push(`warn ${m}`);
  },
  error: (_o: unknown, m?: string) => logs.push(`error ${m}`),
  debug: () => {},
  child: () => log,
};

const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;

async function openWriter(): Promise<AuditWriter> {
  const pool = createWriterPool(proxy.url(ctx.name));
  pools.push(pool);
  const dataDir = await mkdtemp(join(tmpdir(), 'ks-hang-'));
  const writer = await AuditWriter.open({ pool, database: ctx.name, dataDir, batchMax: 50, log: log as never, replayIntervalMs: 100 });
  writers.push(writer);
  return writer;
}

/** test/helpers/unleash.ts's `until`, in this file's argument order. */
const until = (what: string, check: () => boolean | Promise<boolean>, ms = 15_000) => waitUntil(check, ms, what, 50);

const rowsOf = async (decisionIds: string[]) =>
  (await db.query<AuditRecord>('SELECT * FROM audit_events WHERE decision_id = ANY($1::text[]) ORDER BY seq', [decisionIds])).rows;
const chainLength = async (replicaId: string) => (await db.query<{ n: number }>('SELECT count(*)::int AS n, max(seq) AS max FROM audit_events WHERE replica_id = $1', [replicaId])).rows[0]!.n;

beforeAll(async () => {
  await ctx.setup();
  db = ctx.pool();
  await proxy.reserve();
  await proxy.up();
});
afterAll(async () => {
  await proxy.down();
  for (const w of writers) await w.close().catch(() => {});
  for (const p of pools) await p.end().catch(() => {});
  await ctx.teardown();
});

describe('audit writer on a Postgres that hangs', () => {
  it('an INSERT with no answer fails after the query timeout: the allows are answered from the spool, which is replayed once Postgres answers', async () => {
    proxy.resume();
    const writer = await openWriter();
    // The writer's connection is open and idle, as after a quiet period.
    await writer.recordIntent(intentRow(callContext(), allow));
    const replicaId = writer.replicaId!;
    logs.length = 0;

    proxy.hang('both');
    const calls = Array.from({ length: 5 }, () => callContext());
    warnings.length = 0;
    // Postgres stays silent until proxy.resume() below: the allows are answered while it still hangs,
    // and the INSERT gave up on the client's query timeout (not on a connection error).
    await Promise.all(calls.map((c) => writer.recordIntent(intentRow(c, allow))));
    expect(writer.spooling).toBe(true);
    expect(writer.spoolSize).toBe(5);
    expect(logs.some((l) => l.startsWith('warn audit INSERT failed'))).toBe(true);
    expect(warnings.find((w) => w.msg.startsWith('audit INSERT failed'))?.fields).toContain('Query read timeout');

    proxy.resume();
    await until('the spool to be replayed', () => writer.spoolSize === 0 && !writer.spooling);
    expect((await rowsOf(calls.map((c) => c.decisionId))).map((r) => r.decision_id)).toEqual(calls.map((c) => c.decisionId));
    expect(await chainLength(replicaId)).toBe(7); // CHAIN_START, the first row, the 5 spooled
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);
  });

  it('an INSERT that committed but whose answer was lost is spooled too; the replay adds no duplicate and the chain verifies', async () => {
    proxy.resume();
    const writer = await openWriter();
    await writer.recordIntent(intentRow(callContext(), allow));
    const replicaId = writer.replicaId!;

    proxy.hang('replies');
    const calls = Array.from({ length: 4 }, () => callContext());
    await Promise.all(calls.map((c) => writer.recordIntent(intentRow(c, allow))));
    expect(writer.spooling).toBe(true);
    expect(writer.spoolSize).toBe(4);
    // Postgres has them already: the outcome was only unknown to the writer.
    expect(await rowsOf(calls.map((c) => c.decisionId))).toHaveLength(4);

    // While spooling, later rows follow the spooled ones there.
    const later = callContext();
    await writer.recordIntent(intentRow(later, allow));
    expect(writer.spoolSize).toBe(5);

    proxy.resume();
    await until('the spool to be replayed', () => writer.spoolSize === 0 && !writer.spooling);
    const rows = await rowsOf([...calls, later].map((c) => c.decisionId));
    expect(rows.map((r) => r.decision_id)).toEqual([...calls, later].map((c) => c.decisionId));
    expect(await chainLength(replicaId)).toBe(7);
    const report = await verifyChain(db, { retentionDays: 90 });
    expect(report.ok, JSON.stringify(report)).toBe(true);
  });

  it('rows that become durable nowhere (a hang no timeout catches) make the audit check not ready, with one warning that says so', async () => {
    proxy.resume();
    // A writer pool without the client-side timeout stands in for any hang the timeouts miss.
    const untimed = new pg.Pool({ connectionString: proxy.url(ctx.name), max: 2, idleTimeoutMillis: 0, options: `-c role=${AUDIT_WRITER_ROLE}` });
    tolerateConnectionLoss(untimed);
    pools.push(untimed);
    const dataDir = await mkdtemp(join(tmpdir(), 'ks-hang-'));
    const audit = await AuditService.start(ctx.config({ dataDir }), db, log as never, { writerPool: untimed, retentionJob: false, headLog: false, replayIntervalMs: 100 });
    try {
      await audit.recordIntent(intentRow(callContext(), allow));
      expect(audit.readiness()).toBe(true);
      logs.length = 0;

      proxy.hang('both');
      const stuck = audit.recordIntent(intentRow(callContext(), allow));
      stuck.catch(() => {});
      await new Promise((r) => setTimeout(r, 3_000));
      expect(audit.readiness()).toBe(true);
      await until('the audit check to fail', () => audit.readiness() !== true, 5_000);
      expect(audit.readiness()).toMatch(/^audit rows stalled/);
      await new Promise((r) => setTimeout(r, 500));
      expect(logs.filter((l) => l.startsWith('warn audit rows stalled'))).toHaveLength(1);

      // The connection is cut: the INSERT fails, the row goes to the spool, the check is ok again.
      await proxy.down();
      await stuck;
      await until('the audit check to pass', () => audit.readiness() === true, 1_000);
      await until('the all-clear in the log', () => logs.some((l) => l === 'info audit rows durable again after a stall'), 2_000);
    } finally {
      await proxy.down();
      await proxy.up();
      await audit.close();
    }
  }, 30_000);
});

describe('request path on a Postgres that hangs', () => {
  it('an admin read or write with no answer is a 503 SERVICE_UNAVAILABLE after the query timeout, not a 500; only the read says nothing changed', async () => {
    proxy.resume();
    const app = await ctx.app({ databaseUrl: proxy.url(ctx.name) });
    try {
      const owner = await ctx.operatorKey(app, 'owner');
      const viewer = await ctx.operatorKey(app, 'viewer');
      // The keys' lookups are cached: only the audit read and the key's creation meet the silent Postgres.
      expect((await app.inject({ method: 'GET', url: '/v1/audit?limit=1', headers: bearer(viewer) })).statusCode).toBe(200);
      // Connections opened before the hang, several at once: the write must find one idle (a new one would
      // meet the hang in its connect and be the other 503, "Postgres is unavailable", nothing sent).
      const warm = await Promise.all(Array.from({ length: 4 }, () => app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(owner) })));
      expect(warm.map((r) => r.statusCode)).toEqual([200, 200, 200, 200]);
      expect(app.ctx.pool.idleCount).toBeGreaterThanOrEqual(2);
      proxy.hang('both', 'killswitch');
      // Both at once: one query timeout's wait for the two.
      // An agent token pasted where its id goes: the warning below names the route, not the query string.
      const pasted = generateCredential(AGENT_PREFIXES.ro);
      const [read, write] = await Promise.all([
        app.inject({ method: 'GET', url: `/v1/audit?server=payments&token=${pasted}`, headers: bearer(viewer) }),
        app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { type: 'ro', role: 'code_agent', project_id: 'hang', environment: 'development' } }),
      ]);
      for (const res of [read, write]) {
        expect(res.statusCode, res.body).toBe(503);
        expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
        expect(res.headers['retry-after']).toBeDefined();
      }
      expect(read.json().error.message).toContain('nothing was changed');
      // A write's COMMIT may have been made with its answer lost: the operator is told to check, not that nothing happened.
      expect(write.json().error.message).not.toContain('nothing was changed');
      expect(write.json().error.message).toContain('whether this change was made is unknown');
      expect(ctx.logs.lines.filter((l) => l.includes('a query got no answer from Postgres') && l.includes('"url":"/v1/audit"'))).toHaveLength(1);
      expect(ctx.logs.text).not.toContain(pasted);
    } finally {
      await proxy.down();
      await proxy.up();
      await ctx.close(app);
    }
  }, DEFAULT_QUERY_TIMEOUT_MS + 30_000);

  it("GET /metrics answers within Prometheus's default scrape_timeout (10 s) while Postgres hangs, with the last installation-wide counts and every other series", async () => {
    proxy.resume();
    const app = await ctx.app({ databaseUrl: proxy.url(ctx.name), metricsPort: 0, metricsHost: '127.0.0.1' });
    try {
      app.ctx.metrics.stateCountsTtlMs = 0;
      const address = await listenMetrics(app);
      const scrape = async () => {
        const res = await fetch(`http://127.0.0.1:${address!.port}/metrics`);
        expect(res.status).toBe(200);
        return res.text();
      };
      const before = await scrape();
      const kills = /^killswitch_kills_active (\d+)$/m.exec(before)?.[1];
      expect(kills).toBeDefined();
      // The count query finds an idle connection of the main pool, which now never answers (pg's own
      // timeout for it was 30 s: the scrape waited that long, and Prometheus had given up at 10 s).
      proxy.hang('both', 'killswitch');
      const during = await withTimeout(scrape(), PROMETHEUS_DEFAULT_SCRAPE_TIMEOUT_MS, 'the scrape while Postgres hangs');
      expect(during).toMatch(new RegExp(`^killswitch_kills_active ${kills}$`, 'm'));
      expect(during).toMatch(/^killswitch_redis_up 1$/m);
      expect(during).toMatch(/^killswitch_audit_spooling \d$/m);
    } finally {
      await proxy.down();
      await proxy.up();
      await ctx.close(app);
    }
  }, DEFAULT_QUERY_TIMEOUT_MS + 30_000);

  it("a credential lookup with no answer fails closed after CREDENTIAL_LOOKUP_TIMEOUT_MS (503), instead of holding the request", async () => {
    proxy.resume();
    const app = await ctx.app({ databaseUrl: proxy.url(ctx.name) });
    try {
      await ctx.operatorKey(app, 'owner');
      const fresh = await ctx.operatorKey(app, 'viewer');
      // Only the main pool's connections hang: the audit writer's still answer.
      proxy.hang('both', 'killswitch');
      // Postgres stays silent until the finally below: a request that held would never be answered.
      const res = await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(fresh) });
      expect(res.statusCode, res.body).toBe(503);
      expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
    } finally {
      await proxy.down();
      await proxy.up();
      await ctx.close(app);
    }
  }, 30_000);

  it('a credential lookup that times out is answered by its own timeout (CREDENTIAL_LOOKUP_TIMEOUT_MS), not REQUEST_QUERY_TIMEOUT_MS, and the next ones fail at once until Postgres answers again', async () => {
    proxy.resume();
    const app = await ctx.app({ databaseUrl: proxy.url(ctx.name) });
    try {
      await ctx.operatorKey(app, 'owner');
      const fresh = [await ctx.operatorKey(app, 'viewer'), await ctx.operatorKey(app, 'viewer')];
      const logged = ctx.logs.lines.length;
      proxy.hang('both', 'killswitch');
      // Postgres stays silent until proxy.resume() below.
      const first = await withTimeout(app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(fresh[0]!) }), LOOKUP_ANSWER_BOUND_MS, 'the answer');
      expect(first.statusCode, first.body).toBe(503);
      expect(first.json().error.code).toBe('SERVICE_UNAVAILABLE');
      expect(app.ctx.auth.failingFast).toBe(true);
      expect(ctx.logs.lines.slice(logged).filter((l) => l.includes(`credential lookup got no answer from Postgres within ${CREDENTIAL_LOOKUP_TIMEOUT_MS} ms`))).toHaveLength(1);
      // Another credential not in the cache: refused at once, while Postgres still hangs.
      const second = await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(fresh[1]!) });
      expect(second.statusCode, second.body).toBe(503);
      expect(second.json().error.code).toBe('SERVICE_UNAVAILABLE');
      proxy.resume();
      // A lookup in the background finds Postgres answering: the credential is accepted again.
      await until('the credential to be accepted again', async () => (await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(fresh[1]!) })).statusCode === 200, 20_000);
      expect(app.ctx.auth.failingFast).toBe(false);
    } finally {
      await proxy.down();
      await proxy.up();
      await ctx.close(app);
    }
  }, 60_000);
});

/**
 * The lookup gives up after CREDENTIAL_LOOKUP_TIMEOUT_MS (1.5 s, under a gateway's 2 s decision budget),
 * not after REQUEST_QUERY_TIMEOUT_MS (5 s) as before: its warning (which names the 1.5 s) and
 * `failingFast` show that its own timeout answered. This bound only keeps a hang from running into the
 * test's timeout: a wall-clock bound near the 5 s failed on a loaded machine (4 s exceeded, 2026-12-07).
 */
const LOOKUP_ANSWER_BOUND_MS = 4 * REQUEST_QUERY_TIMEOUT_MS;
