import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_QUERY_TIMEOUT_MS } from '../../src/db/query-timeout.js';
import { sessionStore } from '../../src/sessions/store.js';
import { TestContext } from '../helpers/context.js';
import { withTimeout } from '../helpers/control-plane.js';
import { flushPrefix } from '../helpers/gate-fixtures.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';
import { PgProxy } from './audit-fixtures.js';

// A halt fired while Postgres hangs lives in Redis (enforced) and in the retry journals until Postgres
// takes it. Losing Redis then (restarted empty; here: this file's prefix flushed) must not lift it: the
// reload copies Postgres, which never got it, so this replica's disk journal (DATA_DIR) records it
// first. Chaos review: a frozen Postgres, then a Redis restart, let the halted token's calls through.
// Postgres is a proxy of this file's own (PgProxy): the shared Postgres is never paused.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
const proxy = new PgProxy();

const write = { server: 'filesystem', tool: 'write_file', arguments: { path: 'a.md', content: 'x' } };
const read = { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' } };

beforeAll(async () => {
  await t.setup();
  await proxy.reserve();
  await proxy.up();
});
afterAll(async () => {
  await proxy.down();
  await t.teardown();
});

/** Until the app's Redis state is loaded (again) from Postgres and verified. */
const reloadedFromPostgres = (app: FastifyInstance) =>
  until(async () => (await app.ctx.sessions.ensureState()) !== 'unavailable' && app.ctx.sessions.epoch.stateVerified, 20_000, 'Redis reloaded from Postgres');

/** An app whose main pool goes through the proxy; credentials stay cached while Postgres hangs. */
const replica = () => t.app({ databaseUrl: proxy.url(t.name), policyFile: POLICY, tokenCacheTtlMs: 600_000 });

/** `answerBound`: how long the halting call may take to be answered (the new test holds it to a gateway's budget). */
async function haltWhilePostgresHangs(app: FastifyInstance, gw: GatewayDriver, answerBound = DEFAULT_QUERY_TIMEOUT_MS / 2) {
  const tok = await gw.token('ro');
  const s = await gw.session(tok.raw);
  // Credentials cached, connections open, as on a replica in use.
  expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('OK');
  // The replica's first housekeeping (then once a minute) done before Postgres hangs: on a hung Postgres its
  // queries wait the pool's 30 s and hold the tick that retries the journal behind them.
  await app.ctx.sessions.epoch.tick();
  await app.ctx.sessions.epoch.tick();
  // Only the main pool hangs (application_name killswitch): the audit writer's connections still answer.
  proxy.hang('both', 'killswitch');
  // The halting call is answered with its own denial without waiting for the halt's record (HALT_RECORD_WAIT_MS).
  const halting = await withTimeout(gw.decide(tok.raw, { ...write, session_id: s.session_id }), answerBound, 'the answer');
  expect(halting.code).toBe('PERMISSION_DENIED');
  expect(halting.session).toMatchObject({ state: 'halted', trigger: 'WRITE_IN_READ_SESSION' });
  expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('SESSION_HALTED');
  // The record, still waiting in the background, gives up after REQUEST_QUERY_TIMEOUT_MS (5 s) and is journaled.
  await until(async () => (await app.ctx.sessions.journaledHalts()) === 1, DEFAULT_QUERY_TIMEOUT_MS / 2, 'the halt journaled on disk');
  return { tok, s, halting };
}

/** A gateway's default control-plane timeout (docs/gateway.md): the halting call must be answered before it. */
const GATEWAY_DECISION_BUDGET_MS = 2_000;

/**
 * How long after Postgres answers again a journaled halt may take to be recorded while housekeeping ran
 * on the hung Postgres: the statement it was waiting on times out (REQUEST_QUERY_TIMEOUT_MS, 5 s) and the
 * next tick retries the journal; far under the pool's 30 s default, which housekeeping waited before.
 */
const HOUSEKEEPING_RECORD_BOUND_MS = 15_000;

/**
 * Makes this replica's housekeeping due at its next tick. It runs once a minute (EpochOptions.maintainEveryMs,
 * not configurable through the app) and once per minute across replicas (a Redis lock): a test cannot wait.
 */
async function housekeepingDue(app: FastifyInstance): Promise<void> {
  (app.ctx.sessions.epoch as unknown as { lastMaintain: number }).lastMaintain = 0;
  await app.ctx.redis.redis.del(app.ctx.redis.key('maintain-lock'));
}

/** Every line of every halt journal file in DATA_DIR. */
async function journalLines(): Promise<string[]> {
  const names = (await readdir(t.dataDir)).filter((n) => /^halt-journal\..*\.jsonl$/.test(n));
  const texts = await Promise.all(names.map((n) => readFile(join(t.dataDir, n), 'utf8')));
  return texts.flatMap((text) => text.split('\n').filter(Boolean));
}

/** How many times Postgres recorded the token's halt and the session's: once each, never twice. */
async function haltCounts(tokenId: string, sessionId: string) {
  const db = t.pool();
  const count = async (sql: string, id: string) => (await db.query<{ n: number }>(sql, [id])).rows[0]!.n;
  return {
    token_halts: await count('SELECT count(*)::int AS n FROM token_halts WHERE token_id = $1', tokenId),
    session_halts: await count('SELECT count(*)::int AS n FROM session_halts WHERE session_id = $1', sessionId),
  };
}

async function haltRows(tokenId: string, sessionId: string) {
  const db = t.pool();
  const session = (await db.query('SELECT state, trigger FROM sessions WHERE id = $1', [sessionId])).rows[0];
  const tokenHalt = (await db.query('SELECT trigger FROM token_halts WHERE token_id = $1 AND resumed_at IS NULL', [tokenId])).rows[0];
  return { session, tokenHalt };
}

describe('a halt fired while Postgres hangs', () => {
  it('survives Redis coming back empty before Postgres answers again: recorded from the disk journal, still denied', async () => {
    proxy.resume();
    const app = await replica();
    const gw = await new GatewayDriver(t, app).init();
    const { tok, s } = await haltWhilePostgresHangs(app, gw);
    try {
      // Redis loses everything of this control plane, the Redis journal of the halt included.
      await flushPrefix(app.ctx.redis);
      expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).decision).toBe('deny');
    } finally {
      proxy.resume();
    }
    await reloadedFromPostgres(app);
    const after = await gw.decide(tok.raw, { ...read, session_id: s.session_id });
    expect(after.code).toBe('SESSION_HALTED');
    expect(await haltRows(tok.id, s.session_id)).toEqual({ session: { state: 'halted', trigger: 'WRITE_IN_READ_SESSION' }, tokenHalt: { trigger: 'WRITE_IN_READ_SESSION' } });
    expect(await app.ctx.sessions.journaledHalts()).toBe(0);
    // Connections whose bytes the proxy dropped stay open until it cuts them.
    await proxy.down();
    await proxy.up();
    await t.close(app);
  }, 60_000);

  it('is answered with its denial within a gateway\'s budget; recorded once from the journal when Postgres answers, it survives Redis flushed', async () => {
    proxy.resume();
    const app = await replica();
    try {
      const gw = await new GatewayDriver(t, app).init();
      // Answered within 2 s, then journaled when its record gives up (haltWhilePostgresHangs).
      const { tok, s, halting } = await haltWhilePostgresHangs(app, gw, GATEWAY_DECISION_BUDGET_MS);
      expect(await haltCounts(tok.id, s.session_id)).toEqual({ token_halts: 0, session_halts: 0 });
      proxy.resume();
      await until(async () => (await app.ctx.sessions.journaledHalts()) === 0, 10_000, 'the journal drained into Postgres');
      expect(await haltRows(tok.id, s.session_id)).toEqual({ session: { state: 'halted', trigger: 'WRITE_IN_READ_SESSION' }, tokenHalt: { trigger: 'WRITE_IN_READ_SESSION' } });
      expect(await app.ctx.redis.redis.llen(app.ctx.redis.key('halts', 'unrecorded'))).toBe(0);
      // Both journals held it (Redis and disk) and both were drained: recorded once.
      expect(await haltCounts(tok.id, s.session_id)).toEqual({ token_halts: 1, session_halts: 1 });
      // The audit trail (its writer's pool never hung) has the denial with the halt it fired.
      const intent = await t.pool().query("SELECT code, details->>'halt' AS halt FROM audit_events WHERE decision_id = $1 AND kind = 'INTENT'", [halting.decision_id]);
      expect(intent.rows).toEqual([{ code: 'PERMISSION_DENIED', halt: 'WRITE_IN_READ_SESSION' }]);
      // Redis loses everything; the reload from Postgres brings the halt back.
      await flushPrefix(app.ctx.redis);
      await reloadedFromPostgres(app);
      expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('SESSION_HALTED');
    } finally {
      await proxy.down();
      await proxy.up();
      await t.close(app);
    }
  }, 60_000);

  it('is not lifted by a reload of Redis while its record is still waiting on Postgres: the reload waits for it', async () => {
    proxy.resume();
    const app = await replica();
    try {
      const gw = await new GatewayDriver(t, app).init();
      const tok = await gw.token('ro');
      const s = await gw.session(tok.raw);
      expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('OK');
      await app.ctx.sessions.epoch.tick();
      await app.ctx.sessions.epoch.tick();
      proxy.hang('both', 'killswitch');
      const halting = await withTimeout(gw.decide(tok.raw, { ...write, session_id: s.session_id }), GATEWAY_DECISION_BUDGET_MS, 'the answer');
      expect(halting.code).toBe('PERMISSION_DENIED');
      // Postgres answers again, but the record's connection lost its bytes: it fails only at its timeout
      // (REQUEST_QUERY_TIMEOUT_MS). Redis loses everything meanwhile and is reloaded from Postgres.
      proxy.resume();
      await flushPrefix(app.ctx.redis);
      await reloadedFromPostgres(app);
      // Had the reload copied Postgres before the record failed and was journaled, this call was allowed.
      expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('SESSION_HALTED');
      expect(await haltCounts(tok.id, s.session_id)).toEqual({ token_halts: 1, session_halts: 1 });
    } finally {
      await proxy.down();
      await proxy.up();
      await t.close(app);
    }
  }, 60_000);

  it('is recorded within seconds of Postgres answering again although housekeeping ran while it hung: housekeeping holds the tick at most REQUEST_QUERY_TIMEOUT_MS', async () => {
    proxy.resume();
    const app = await replica();
    try {
      const gw = await new GatewayDriver(t, app).init();
      const tok = await gw.token('ro');
      const s = await gw.session(tok.raw);
      expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('OK');
      // No tick in progress; the pool keeps idle connections (min 2), as on a replica in use.
      await app.ctx.sessions.epoch.tick();
      proxy.hang('both', 'killswitch');
      // Housekeeping, due once a minute, starts while Postgres hangs: its first statement goes to an idle
      // connection whose bytes are lost, and holds this tick (and the journal's retry) until its timeout.
      await housekeepingDue(app);
      const held = app.ctx.sessions.epoch.tick();
      const halting = await withTimeout(gw.decide(tok.raw, { ...write, session_id: s.session_id }), GATEWAY_DECISION_BUDGET_MS, 'the answer');
      expect(halting.code).toBe('PERMISSION_DENIED');
      await until(async () => (await app.ctx.sessions.journaledHalts()) === 1, DEFAULT_QUERY_TIMEOUT_MS / 2, 'the halt journaled on disk');
      proxy.resume();
      const resumedAt = Date.now();
      await until(async () => (await haltCounts(tok.id, s.session_id)).session_halts === 1, DEFAULT_QUERY_TIMEOUT_MS + 10_000, 'the journaled halt recorded in Postgres');
      // With housekeeping on the pool's 30 s, the record waited for its query to time out (about 24 s here).
      expect(Date.now() - resumedAt).toBeLessThan(HOUSEKEEPING_RECORD_BOUND_MS);
      await held;
      expect(await haltRows(tok.id, s.session_id)).toEqual({ session: { state: 'halted', trigger: 'WRITE_IN_READ_SESSION' }, tokenHalt: { trigger: 'WRITE_IN_READ_SESSION' } });
      expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('SESSION_HALTED');
    } finally {
      await proxy.down();
      await proxy.up();
      await t.close(app);
    }
  }, 90_000);

  it('is answered before a slow record commits; the record commits in the background, once, and nothing is journaled', async () => {
    proxy.resume();
    const app = await replica();
    // A resume in progress elsewhere holds the halt-copy lock: the halt's record waits for it.
    const blocker = await t.pool().connect();
    try {
      const gw = await new GatewayDriver(t, app).init();
      const tok = await gw.token('ro');
      const s = await gw.session(tok.raw);
      await blocker.query('BEGIN');
      await sessionStore.lockHaltCopies(blocker, 'resume');
      const halting = await withTimeout(gw.decide(tok.raw, { ...write, session_id: s.session_id }), GATEWAY_DECISION_BUDGET_MS, 'the answer');
      expect(halting.code).toBe('PERMISSION_DENIED');
      expect(halting.session).toMatchObject({ state: 'halted', trigger: 'WRITE_IN_READ_SESSION' });
      expect(await haltCounts(tok.id, s.session_id)).toEqual({ token_halts: 0, session_halts: 0 });
      await blocker.query('COMMIT');
      await until(async () => (await haltCounts(tok.id, s.session_id)).session_halts === 1, 5_000, 'the late record committed');
      expect(await haltCounts(tok.id, s.session_id)).toEqual({ token_halts: 1, session_halts: 1 });
      expect(await app.ctx.sessions.journaledHalts()).toBe(0);
      expect(await app.ctx.redis.redis.llen(app.ctx.redis.key('halts', 'unrecorded'))).toBe(0);
      expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('SESSION_HALTED');
    } finally {
      await blocker.query('ROLLBACK').catch(() => {});
      blocker.release();
      await t.close(app);
    }
  }, 30_000);

  it('is recorded at the next start when its replica stopped before Postgres came back and Redis lost it meanwhile', async () => {
    proxy.resume();
    const first = await replica();
    const gw = await new GatewayDriver(t, first).init();
    const { tok, s } = await haltWhilePostgresHangs(first, gw);
    // Postgres goes away altogether; the replica stops with the halt journaled only (Redis and disk).
    await proxy.down();
    await flushPrefix(first.ctx.redis);
    await t.close(first);
    expect(await journalLines()).toHaveLength(1);
    await proxy.up();
    proxy.resume();

    const next = await replica();
    const gw2 = Object.assign(new GatewayDriver(t, next), { owner: gw.owner, gatewayKey: gw.gatewayKey });
    await reloadedFromPostgres(next);
    expect((await gw2.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('SESSION_HALTED');
    expect(await haltRows(tok.id, s.session_id)).toEqual({ session: { state: 'halted', trigger: 'WRITE_IN_READ_SESSION' }, tokenHalt: { trigger: 'WRITE_IN_READ_SESSION' } });
    // Recorded: no journal file holds it any more.
    expect(await journalLines()).toEqual([]);

    // Resumed by an operator, it stays resumed: a copy of the entry replayed later (a journal of another
    // process, adopted late) records nothing and halts nothing.
    const resumed = await next.inject({ method: 'POST', url: `/v1/keys/${tok.id}/resume`, headers: { authorization: `Bearer ${gw.owner}` }, payload: { reason: 'checked' } });
    expect(resumed.statusCode, resumed.body).toBe(200);
    const stale = { tokenId: tok.id, sessionId: s.session_id, trigger: 'WRITE_IN_READ_SESSION', haltToken: true, summary: {}, at: new Date(Date.now() - 60_000).toISOString() };
    const journalKey = next.ctx.redis.key('halts', 'unrecorded');
    await next.ctx.redis.redis.rpush(journalKey, JSON.stringify(stale));
    await until(async () => (await next.ctx.redis.redis.llen(journalKey)) === 0, 5_000, 'the journal drained');
    expect(await haltRows(tok.id, s.session_id)).toEqual({ session: { state: 'active', trigger: null }, tokenHalt: undefined });
    expect((await gw2.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('OK');
    await t.close(next);
  }, 60_000);
});
