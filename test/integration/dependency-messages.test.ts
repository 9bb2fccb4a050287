import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/record.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';
import { PgProxy } from './audit-fixtures.js';

// A denial's message goes to the agent and, through its INTENT row, into the permanent audit trail. When
// Redis or Postgres fails, both say in product words what was unavailable; the driver's own words (hosts,
// ports, "Stream isn't writeable ...") go to the log only, under the decision id the message names
// (docs/operations.md). move_file needs an approval in this policy: the approval step reads Redis, then
// Postgres to open the request.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const DRIVER_TEXT = /ECONNREFUSED|ECONNRESET|127\.0\.0\.1|localhost|:\d{2,5}\b|Stream isn't writeable|enableOfflineQueue|Connection is closed|Connection terminated|timeout exceeded/i;

const t = new TestContext();
let db: pg.Pool;

beforeAll(async () => {
  await t.setup();
  db = t.pool();
});
afterAll(() => t.teardown());

const move = (source: string) => ({ server: 'filesystem', tool: 'move_file', arguments: { source, destination: `${source}.moved` } });

async function intentRowOf(decisionId: string): Promise<AuditRecord> {
  let row: AuditRecord | undefined;
  await until(
    async () => {
      [row] = (await db.query<AuditRecord>("SELECT * FROM audit_events WHERE decision_id = $1 AND kind = 'INTENT'", [decisionId])).rows;
      return row !== undefined;
    },
    30_000,
    `the INTENT row of ${decisionId}`,
  );
  return row!;
}

/** The log lines of this decision: the driver's words are there, once. */
const logOf = (decisionId: string) => t.logs.lines.filter((l) => l.includes(decisionId) && l.includes('"dependency":'));

describe('Redis unreachable: the decision message and the audit row name Redis, not the driver error', () => {
  let healthy: FastifyInstance;
  let cut: FastifyInstance;
  let gw: GatewayDriver;

  beforeAll(async () => {
    healthy = await t.app({ policyFile: POLICY });
    gw = await new GatewayDriver(t, healthy).init();
    // A port nothing listens on: every Redis command of this replica fails.
    cut = await t.app({ policyFile: POLICY, redisUrl: 'redis://127.0.0.1:1' });
  }, 60_000);

  it('a step that throws (the approval queue on Redis) → DEPENDENCY_UNAVAILABLE in product words; the driver error is logged with the decision id', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const res = await cut.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers(tok.raw), payload: { ...move('a.md'), session_id: s.session_id } });
    expect(res.statusCode).toBe(200);
    const d = res.json<{ decision: string; code: string; message: string; decision_id: string }>();
    expect(d).toMatchObject({ decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE' });
    expect(d.message).toMatch(/Redis/);
    expect(d.message).toContain(d.decision_id);
    expect(d.message).not.toMatch(DRIVER_TEXT);

    const row = await intentRowOf(d.decision_id);
    expect(row.message).toBe(d.message);
    expect(JSON.stringify(row.details ?? {})).not.toMatch(DRIVER_TEXT);
    expect(JSON.stringify(row)).not.toMatch(/ECONNREFUSED|Stream isn't writeable|enableOfflineQueue|Connection is closed/);

    const logged = logOf(d.decision_id);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(/"err":"[^"]*(ECONNREFUSED|Stream isn't writeable|Connection is closed|enableOfflineQueue|MaxRetriesPerRequest)/);
  });

  it('explain without a session: the open sessions could not be read from Redis, without the driver error', async () => {
    const tok = await gw.token('rw');
    const owner = await t.operatorKey(healthy);
    const res = await cut.inject({ method: 'POST', url: '/v1/decisions/explain', headers: bearer(owner), payload: { token_id: tok.id, server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' } } });
    expect(res.statusCode).toBe(200);
    const e = res.json<{ code: string; message: string }>();
    expect(e.code).toBe('DEPENDENCY_UNAVAILABLE');
    expect(e.message).toMatch(/Redis/);
    expect(e.message).not.toMatch(DRIVER_TEXT);
  });
});

describe('Redis answering the gate with an error (not a timeout): the message names its code, the log has its words', () => {
  let app: FastifyInstance;
  let gw: GatewayDriver;

  beforeAll(async () => {
    // An app of its own: the log line of a dependency is rate-limited per app.
    app = await t.app({ policyFile: POLICY });
    gw = await new GatewayDriver(t, app).init();
  }, 60_000);

  it('WRONGTYPE on the session key → DEPENDENCY_UNAVAILABLE saying Redis answered with an error (WRONGTYPE), not "unreachable or slower"; logged once with the decision id', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    // The session's hash, inside this file's key prefix, made a string: the gate script's read of it fails.
    const key = app.ctx.redis.key('s', s.session_id);
    await app.ctx.redis.redis.del(key);
    await app.ctx.redis.redis.set(key, 'not a hash');
    const read = { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id: s.session_id };
    const d = await gw.decide(tok.raw, read);
    expect(d).toMatchObject({ decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE' });
    expect(d.message).toContain('Redis (sessions, halts and limits) answered with an error (WRONGTYPE)');
    expect(d.message).not.toMatch(/unreachable|slower than|did not answer/);
    expect(d.message).toContain(d.decision_id);
    // Only the code: not the rest of Redis's reply (it quotes the script's sha and line).
    expect(d.message).not.toMatch(/Operation against|user_script|[0-9a-f]{40}/);

    const logged = logOf(d.decision_id);
    expect(logged).toHaveLength(1);
    expect(JSON.parse(logged[0]!)).toMatchObject({ level: 50, dependency: 'Redis', step: 'gate' });
    expect(logged[0]).toMatch(/"err":"ReplyError: WRONGTYPE Operation against a key holding the wrong kind of value/);

    // The next failures of Redis within the interval are counted, not logged line by line.
    const again = await gw.decide(tok.raw, read);
    expect(again).toMatchObject({ code: 'DEPENDENCY_UNAVAILABLE' });
    expect(logOf(again.decision_id)).toEqual([]);

    // GET /readyz: Redis answers PING, so its check passes; the warning says decisions fail all the same.
    const ready = (await app.inject({ url: '/readyz' })).json();
    expect(ready.checks.redis).toBe('ok');
    expect(ready.warnings).toContain(
      'decisions failed closed in the last 30 s: Redis answered with an error (WRONGTYPE) (the log has each failure: decision denied (DEPENDENCY_UNAVAILABLE))',
    );
  });

  it('a session Redis refuses with an error answer (WRONGTYPE on the token\'s open-sessions key): 503 naming the code, not "unavailable"', async () => {
    const tok = await gw.token('rw');
    await app.ctx.redis.redis.set(app.ctx.redis.key('so', tok.id), 'not a sorted set');
    const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(tok.raw), payload: {} });
    expect(res.statusCode).toBe(503);
    expect(res.json().error.message).toBe('Redis answered with an error (WRONGTYPE), so no session was opened (fail closed); try again shortly.');
    const logged = t.logs.lines.filter((l) => l.includes('session not opened: Redis unavailable') && l.includes(tok.id));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain('WRONGTYPE Operation against a key');
  });
});

describe('Postgres refusing connections: the approval step names the approval queue, not the driver error', () => {
  const proxy = new PgProxy();
  let app: FastifyInstance;
  let gw: GatewayDriver;

  beforeAll(async () => {
    await proxy.reserve();
    await proxy.up();
    app = await t.app({ policyFile: POLICY, databaseUrl: proxy.url(t.name) });
    gw = await new GatewayDriver(t, app).init();
  }, 60_000);
  afterAll(() => proxy.down());

  it('→ DEPENDENCY_UNAVAILABLE naming the approval queue; the INTENT row (replayed from the spool) and the answer carry no host:port; the log does', { timeout: 60_000 }, async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    // Credentials were just checked: the cache answers while Postgres is away.
    await proxy.down();
    // The pool must have seen its connections cut: a query on one it still took for idle fails with
    // "Connection terminated unexpectedly" instead of the refused connect whose host:port the log names.
    await until(() => app.ctx.pool.totalCount === 0, 10_000, 'the pool to drop its cut connections');
    const res = await app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers(tok.raw), payload: { ...move('b.md'), session_id: s.session_id } });
    expect(res.statusCode).toBe(200);
    const d = res.json<{ decision: string; code: string; message: string; decision_id: string }>();
    expect(d).toMatchObject({ decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE' });
    expect(d.message).toMatch(/approval queue \(Redis or Postgres\)/);
    expect(d.message).not.toMatch(DRIVER_TEXT);
    expect(d.message).not.toContain(String(proxy.port));

    const logged = logOf(d.decision_id);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain(`127.0.0.1:${proxy.port}`);

    await proxy.up();
    const row = await intentRowOf(d.decision_id);
    expect(row.message).toBe(d.message);
    expect(JSON.stringify(row)).not.toContain(String(proxy.port));
    expect(JSON.stringify(row)).not.toMatch(/ECONNREFUSED/);
  });
});
