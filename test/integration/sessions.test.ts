import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.js';
import type { GateLimits } from '../../src/limits/limits.js';
import { SessionService } from '../../src/sessions/service.js';
import type { OperatorPrincipal } from '../../src/tokens/authenticator.js';
import { replicaWithoutAudit } from '../helpers/audit-down.js';
import { bearer, TestContext } from '../helpers/context.js';
import { ALL_TRIGGERS, callContext, flushPrefix, gateStep, type World, world } from '../helpers/gate-fixtures.js';
import { until } from '../helpers/unleash.js';

// Sessions through HTTP: opening (gateway key + agent token), reading, halts and resumes by operators.

/** The token with its last character changed (to 'x', or 'y' when it already ends in 'x': 1 in 62 do). */
const mangled = (raw: string) => `${raw.slice(0, -1)}${raw.endsWith('x') ? 'y' : 'x'}`;
const t = new TestContext();
let w: World;
let db: ReturnType<TestContext['pool']>;

beforeAll(async () => {
  await t.setup();
  w = await world(t);
  db = t.pool();
});
afterAll(() => t.teardown());

const HIGH: GateLimits = { sessionCalls: 100_000, pauseAtPercent: 0, cascade: { threshold: 0, windowCalls: 5 } };
const gw = (agentToken?: string, key = w.gatewayKey) => ({ ...bearer(key), ...(agentToken ? { 'x-agent-token': agentToken } : {}) });

async function openHttp(agentToken: string, payload: Record<string, unknown> = {}) {
  return w.app.inject({ method: 'POST', url: '/v1/sessions', headers: gw(agentToken), payload });
}

describe('POST /v1/sessions (gateway)', () => {
  it('opens a session bound to the token with an id we issue, and records it with the gateway', async () => {
    const { raw, agent } = await w.token('rw');
    const res = await openHttp(raw, { read_only: true, servers: ['filesystem'], purpose: 'update the docs' });
    expect(res.statusCode).toBe(201);
    const body = res.json();
    expect(body.session_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-/);
    expect(body).toMatchObject({ state: 'active', trigger: null, read_only: true, servers: ['filesystem'], purpose: 'update the docs', idle_timeout_s: 3600 });
    const { rows } = await db.query('SELECT token_id, gateway_id, read_only, servers, purpose, state FROM sessions WHERE id = $1', [body.session_id]);
    expect(rows[0]).toEqual({ token_id: agent.id, gateway_id: w.gateway.id, read_only: true, servers: ['filesystem'], purpose: 'update the docs', state: 'active' });
  });

  it('writes a session.opened row with its scope (purpose masked), the gateway and the state: halted when its token is', async () => {
    const { raw, agent } = await w.token('rw');
    const res = await openHttp(raw, { read_only: true, servers: ['filesystem', 'github'], purpose: 'fix CI, password=hunter2hunter2' });
    expect(res.statusCode).toBe(201);
    const sid = res.json().session_id as string;
    const opened = "SELECT kind, actor_type, actor_id, project_id, session_id, details FROM audit_events WHERE action = 'session.opened' AND target = $1";
    const { rows } = await db.query(opened, [`session:${sid}`]);
    expect(rows).toEqual([
      {
        kind: 'ADMIN',
        actor_type: 'system',
        actor_id: `gateway:${w.gateway.id}`,
        project_id: 'alpha',
        session_id: sid,
        details: { token_id: agent.id, read_only: true, servers: ['filesystem', 'github'], purpose: 'fix CI, password=[REDACTED]', state: 'active', gateway_id: w.gateway.id },
      },
    ]);
    await w.app.ctx.sessions.halt({ tokenId: agent.id, sessionId: sid, trigger: 'UNAUTHORIZED_SERVER', haltToken: true, summary: {} });
    const halted = await openHttp(raw);
    expect(halted.json().state).toBe('halted');
    const again = await db.query(opened, [`session:${halted.json().session_id}`]);
    expect(again.rows[0].details).toMatchObject({ state: 'halted', trigger: 'UNAUTHORIZED_SERVER', read_only: false, servers: null, purpose: '' });
  });

  it('opens no session when the audit trail cannot take its row: 503, nothing in Postgres, the id unknown to Redis', async () => {
    const { raw, agent } = await w.token('rw');
    const { app: replica, restore } = await replicaWithoutAudit(t, 'session.opened');
    try {
      const res = await replica.inject({ method: 'POST', url: '/v1/sessions', headers: gw(raw), payload: { purpose: 'unrecorded' } });
      expect(res.statusCode).toBe(503);
      expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
      expect(res.json().error.message).toContain('audit trail');
      expect((await db.query('SELECT count(*)::int AS n FROM sessions WHERE token_id = $1', [agent.id])).rows[0].n).toBe(0);
      expect(await replica.ctx.sessions.openSessionsOf(agent.id)).toEqual([]);
    } finally {
      await restore();
    }
    expect((await openHttp(raw)).statusCode).toBe(201);
  });

  it('every field is optional, so no body opens a session as {} does; a non-JSON body is still 415', async () => {
    const { raw } = await w.token('rw');
    const none = await w.app.inject({ method: 'POST', url: '/v1/sessions', headers: gw(raw) });
    expect(none.statusCode, none.body).toBe(201);
    expect(none.json()).toMatchObject({ state: 'active', read_only: false });
    const text = await w.app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...gw(raw), 'content-type': 'text/plain' }, payload: 'read_only' });
    expect(text.statusCode).toBe(415);
    expect(text.json().error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
  });

  it('never lets the caller choose the id; bad fields are 400 naming the field', async () => {
    const { raw } = await w.token('rw');
    const chosen = await openHttp(raw, { session_id: 's-042' });
    expect(chosen.statusCode).toBe(400);
    expect(chosen.json().error.details[0].field).toBe('session_id');
    const servers = await openHttp(raw, { servers: 'filesystem' });
    expect(servers.statusCode).toBe(400);
    expect(servers.json().error.details[0].field).toBe('servers');
    const ro = await openHttp(raw, { read_only: 'yes' });
    expect(ro.statusCode).toBe(400);
  });

  it('an mcp_ro_ token always gets a read-only session', async () => {
    const { raw } = await w.token('ro');
    const res = await openHttp(raw, { read_only: false });
    expect(res.statusCode).toBe(201);
    expect(res.json().read_only).toBe(true);
  });

  it('401 for a missing or bad gateway key, and for any agent token that is not a valid agent token', async () => {
    const { raw, agent } = await w.token('rw');
    expect((await w.app.inject({ method: 'POST', url: '/v1/sessions', headers: { 'x-agent-token': raw }, payload: {} })).statusCode).toBe(401);
    expect((await w.app.inject({ method: 'POST', url: '/v1/sessions', headers: gw(raw, w.owner), payload: {} })).statusCode).toBe(401);
    expect((await w.app.inject({ method: 'POST', url: '/v1/sessions', headers: gw(raw, raw), payload: {} })).statusCode).toBe(401);
    expect((await openHttp(mangled(raw))).statusCode).toBe(401);
    expect((await openHttp(w.gatewayKey)).statusCode).toBe(401);
    expect((await openHttp(w.owner)).statusCode).toBe(401);
    expect((await w.app.inject({ method: 'POST', url: '/v1/sessions', headers: gw(), payload: {} })).statusCode).toBe(401);
    await w.app.ctx.credentials.revokeAgentToken(w.ownerPrincipal, agent.id, 'test');
    const revoked = await openHttp(raw);
    expect(revoked.statusCode).toBe(401);
    expect(revoked.json().error.code).toBe('UNAUTHENTICATED');
  });

  it('the sweeper does not close a session Redis got back from Postgres after a flush between its look and its close', async () => {
    const { agent } = await w.token('rw');
    const svc = w.app.ctx.sessions;
    const s = await svc.open(agent, w.gateway, {});
    const r = w.app.ctx.redis;
    // The app's own minute sweep stays out of the way meanwhile.
    await r.redis.set(r.key('maintain-lock'), 'test', 'PX', 30_000);
    // The sweep looks while the session's keys are gone (as when it idled out)...
    await r.redis.del(r.key('s', s.session_id));
    const swept = await svc.mirror.gone([s.session_id]);
    expect(swept?.gone).toEqual([s.session_id]);
    // ...then Redis loses everything and one replica reloads it from Postgres, where the session is active.
    await flushPrefix(r);
    await r.redis.set(r.key('maintain-lock'), 'test', 'PX', 30_000);
    // (this replica or the app's ticker, whichever gets the reload lock first)
    await until(async () => (await svc.epoch.ensure()) !== 'unavailable' && (await r.redis.exists(r.key('epoch'))) === 1, 10_000, 'the state reloaded');
    expect(await r.redis.hget(r.key('s', s.session_id), 'st')).toBe('active');
    // Closing now would leave a session live in Redis that Postgres calls closed.
    expect(await svc.epoch.closeGone(swept!.gone, swept!.epoch)).toBe(0);
    expect((await db.query('SELECT state FROM sessions WHERE id = $1', [s.session_id])).rows[0].state).toBe('active');
    // Under the epoch it was seen with, an absent session is closed.
    await r.redis.del(r.key('s', s.session_id));
    const again = await svc.mirror.gone([s.session_id]);
    expect(await svc.epoch.closeGone(again!.gone, again!.epoch)).toBe(1);
    expect((await db.query('SELECT state FROM sessions WHERE id = $1', [s.session_id])).rows[0].state).toBe('closed');
    await r.redis.del(r.key('maintain-lock'));
  });

  it('caps open sessions per token (429 TOO_MANY_SESSIONS); an idled-out session frees its place and is closed by the sweeper', async () => {
    const { raw, agent } = await w.token('rw');
    const svc = new SessionService(w.app.ctx.pool, w.app.ctx.redis, pino({ level: 'silent' }), { idleTimeoutMs: 1_000, maxOpenPerToken: 2, maxNewPerHour: 100 });
    const first = await svc.open(agent, w.gateway, {});
    await svc.open(agent, w.gateway, {});
    await expect(svc.open(agent, w.gateway, {})).rejects.toMatchObject({ code: 'TOO_MANY_SESSIONS', status: 429 });
    await new Promise((r) => setTimeout(r, 1_300));
    await svc.open(agent, w.gateway, {});
    // the sweeper closes what Redis let expire (Postgres follows)
    await w.app.ctx.redis.redis.del(w.app.ctx.redis.key('maintain-lock'));
    const done = await svc.epoch.maintain();
    expect(done?.closed).toBeGreaterThanOrEqual(2);
    const { rows } = await db.query('SELECT state, closed_at FROM sessions WHERE id = $1', [first.session_id]);
    expect(rows[0].state).toBe('closed');
    expect(rows[0].closed_at).not.toBeNull();
    // through HTTP with the policy's caps
    w.app.ctx.sessions.setCapsSource(() => ({ maxOpen: 1, maxNewPerHour: null }));
    try {
      const other = await w.token('rw');
      expect((await openHttp(other.raw)).statusCode).toBe(201);
      const refused = await openHttp(other.raw);
      expect(refused.statusCode).toBe(429);
      expect(refused.json().error.code).toBe('TOO_MANY_SESSIONS');
    } finally {
      w.app.ctx.sessions.setCapsSource(() => ({ maxOpen: null, maxNewPerHour: null }));
    }
    void raw;
  });

  it('after Redis lost its state, the reloaded sessions count against the open-session cap again', async () => {
    const { agent } = await w.token('rw');
    const svc = new SessionService(w.app.ctx.pool, w.app.ctx.redis, pino({ level: 'silent' }), { idleTimeoutMs: 60_000, maxOpenPerToken: 2, maxNewPerHour: 100 });
    await svc.open(agent, w.gateway, {});
    await svc.open(agent, w.gateway, {});
    await flushPrefix(w.app.ctx.redis); // this installation's Redis state is gone (a restart without persistence)
    const deadline = Date.now() + 10_000;
    while ((await svc.ensureState()) !== 'present' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await expect(svc.open(agent, w.gateway, {})).rejects.toMatchObject({ code: 'TOO_MANY_SESSIONS', status: 429 });
  });

  it('SESSION_MAX_OPEN_PER_TOKEN applies when the policy names no open-session cap', async () => {
    const source = readFileSync('test/fixtures/decisions/policy.yaml', 'utf8');
    const stripped = source.replace(/,\s*max_open_sessions: \d+/, '').replace(/,\s*max_new_sessions_per_hour: \d+/, '');
    expect(stripped).not.toMatch(/max_open_sessions|max_new_sessions_per_hour/);
    mkdirSync(t.dataDir, { recursive: true });
    const policyFile = join(t.dataDir, 'no-session-caps.yaml');
    writeFileSync(policyFile, stripped);
    const app = await t.app({ policyFile, sessionMaxOpenPerToken: 1 });
    const { raw } = await w.token('rw');
    const open = () => app.inject({ method: 'POST', url: '/v1/sessions', headers: gw(raw), payload: {} });
    expect((await open()).statusCode).toBe(201);
    const refused = await open();
    expect(refused.statusCode).toBe(429);
    expect(refused.json().error.code).toBe('TOO_MANY_SESSIONS');
  });

  it('a halt Postgres could not record is kept in Redis and recorded by another replica, so a restart cannot strand it', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent);
    // A replica whose Postgres is gone halts the token (Redis takes it), then dies without retrying.
    const deadPool = createPool('postgres://postgres@127.0.0.1:1/nowhere', { max: 1 });
    const cut = new SessionService(deadPool, w.app.ctx.redis, pino({ level: 'silent' }), { idleTimeoutMs: 60_000, maxOpenPerToken: 20, maxNewPerHour: 100 });
    const result = await cut.halt({ tokenId: agent.id, sessionId: sid, trigger: 'CASCADE_WRITE', haltToken: true, summary: { message: 'test' } });
    expect(result).toMatchObject({ recorded: false, enforced: true });
    await deadPool.end();
    const { step } = gateStep(w, { limits: HIGH });
    expect((await step.run(callContext(w, agent, sid)))?.code).toBe('SESSION_HALTED');
    // A healthy replica's tick records it in Postgres.
    const recorded = async () => (await db.query('SELECT trigger FROM token_halts WHERE token_id = $1 AND resumed_at IS NULL', [agent.id])).rows;
    const deadline = Date.now() + 5_000;
    while ((await recorded()).length === 0 && Date.now() < deadline) await w.app.ctx.sessions.epoch.tick();
    expect(await recorded()).toEqual([{ trigger: 'CASCADE_WRITE' }]);
    // So an operator can see it and lift it.
    const resume = await w.app.inject({ method: 'POST', url: `/v1/keys/${agent.id}/resume`, headers: bearer(w.owner), payload: { reason: 'checked' } });
    expect(resume.statusCode).toBe(200);
    expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
  });

  it('caps newly opened sessions per hour with retry_after_s', async () => {
    const { raw } = await w.token('rw');
    w.app.ctx.sessions.setCapsSource(() => ({ maxOpen: null, maxNewPerHour: 3 }));
    try {
      for (let i = 0; i < 3; i++) expect((await openHttp(raw)).statusCode).toBe(201);
      const refused = await openHttp(raw);
      expect(refused.statusCode).toBe(429);
      expect(refused.json().error.details.retry_after_s).toBeGreaterThan(0);
      expect(refused.json().error.details.retry_after_s).toBeLessThanOrEqual(3600);
    } finally {
      w.app.ctx.sessions.setCapsSource(() => ({ maxOpen: null, maxNewPerHour: null }));
    }
  });
});

describe('halts', () => {
  it('halt() never halts a session of another token named by id', async () => {
    const victim = await w.token('rw');
    const attacker = await w.token('rw');
    const sid = await w.open(victim.agent);
    const res = await w.app.ctx.sessions.halt({ tokenId: attacker.agent.id, sessionId: sid, trigger: 'CASCADE_WRITE', haltToken: false, summary: {} });
    expect(res).toMatchObject({ session_halted: false, session_id: null, recorded: true, enforced: true });
    const got = await w.app.inject({ method: 'GET', url: `/v1/sessions/${sid}`, headers: bearer(w.owner) });
    expect(got.json().state).toBe('active');
    const { step } = gateStep(w, { limits: HIGH });
    expect(await step.run(callContext(w, victim.agent, sid))).toBeUndefined();
    // with haltToken, only the attacker's own token is halted
    await w.app.ctx.sessions.halt({ tokenId: attacker.agent.id, sessionId: sid, trigger: 'CASCADE_WRITE', haltToken: true, summary: {} });
    expect(await step.run(callContext(w, victim.agent, sid))).toBeUndefined();
    expect((await w.app.ctx.sessions.open(attacker.agent, w.gateway, {})).state).toBe('halted');
  });

  it('halt() is idempotent: the first trigger is kept', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent);
    await w.app.ctx.sessions.halt({ tokenId: agent.id, sessionId: sid, trigger: 'UNAUTHORIZED_SERVER', haltToken: true, summary: { n: 1 } });
    const again = await w.app.ctx.sessions.halt({ tokenId: agent.id, sessionId: sid, trigger: 'PRODUCTION_ENVIRONMENT', haltToken: true, summary: { n: 2 } });
    expect(again.session_halted).toBe(true);
    const detail = await w.app.ctx.sessions.get(sid);
    expect(detail.trigger).toBe('UNAUTHORIZED_SERVER');
    const { rows } = await db.query('SELECT count(*)::int AS n FROM token_halts WHERE token_id = $1', [agent.id]);
    expect(rows[0].n).toBe(1);
  });
});

describe('operators: read and resume', () => {
  let roOperator: OperatorPrincipal;
  let viewerKey: string;
  let operatorKey: string;
  let betaOperatorKey: string;

  beforeAll(async () => {
    viewerKey = await t.operatorKey(w.app, 'viewer');
    operatorKey = await t.operatorKey(w.app, 'operator');
    betaOperatorKey = await t.operatorKey(w.app, 'operator', ['beta']);
    roOperator = (await w.app.ctx.auth.authenticate(operatorKey)) as OperatorPrincipal;
  });

  it('GET /v1/sessions/:id shows state, trigger and the last 3 calls with arguments and outcomes', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent, { read_only: true, purpose: 'triage' });
    const { step, gate } = gateStep(w, { limits: HIGH, haltTokenOn: [] });
    const first = callContext(w, agent, sid, { args: { path: 'a.md' } });
    await step.run(first);
    await gate.recordOutcome(first.decisionId, { status: 'success', result_bytes: 120 });
    await step.run(callContext(w, agent, sid, { args: { path: 'b.md' } }));
    await step.run(callContext(w, agent, sid, { args: { path: 'c.md' } }));
    await step.run(callContext(w, agent, sid, { capability: 'write', args: { path: 'd.md', content: 'x' } }));
    const res = await w.app.inject({ method: 'GET', url: `/v1/sessions/${sid}`, headers: bearer(viewerKey) });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({ id: sid, state: 'halted', trigger: 'WRITE_IN_READ_SESSION', halted_by: 'session', read_only: true, purpose: 'triage', token_id: agent.id, project_id: 'alpha' });
    expect(body.last_calls.map((c: { args: string; decision: string; code: string }) => [c.args, c.decision, c.code])).toEqual([
      ['{"path":"d.md","content":"x"}', 'deny', 'PERMISSION_DENIED'],
      ['{"path":"c.md"}', 'allow', 'OK'],
      ['{"path":"b.md"}', 'allow', 'OK'],
    ]);
    expect(body.halts).toHaveLength(1);
    expect(body.halt_summary.last_calls).toHaveLength(3);
    const old = await w.app.ctx.sessions.lastCalls(sid, 4);
    expect(old[3]?.outcome).toEqual({ status: 'success', result_bytes: 120 });
  });

  it('GET /v1/sessions?state=halted lists sessions halted directly or through their token; filters by token; pages', async () => {
    const { agent } = await w.token('rw');
    const a = await w.open(agent);
    const b = await w.open(agent);
    const c = await w.open(agent);
    await w.app.ctx.sessions.halt({ tokenId: agent.id, sessionId: a, trigger: 'CASCADE_WRITE', haltToken: true, summary: {} });
    const res = await w.app.inject({ method: 'GET', url: `/v1/sessions?state=halted&token=${agent.id}`, headers: bearer(viewerKey) });
    expect(res.statusCode).toBe(200);
    const list = res.json().sessions as Array<{ id: string; state: string; halted_by: string; trigger: string }>;
    expect(list.map((s) => [s.id, s.state, s.halted_by, s.trigger])).toEqual([
      [c, 'halted', 'token', 'CASCADE_WRITE'],
      [b, 'halted', 'token', 'CASCADE_WRITE'],
      [a, 'halted', 'session', 'CASCADE_WRITE'],
    ]);
    const page1 = await w.app.inject({ method: 'GET', url: `/v1/sessions?token=${agent.id}&limit=2`, headers: bearer(viewerKey) });
    expect(page1.json().sessions).toHaveLength(2);
    const page2 = await w.app.inject({ method: 'GET', url: `/v1/sessions?token=${agent.id}&limit=2&cursor=${page1.json().next_cursor}`, headers: bearer(viewerKey) });
    expect(page2.json().sessions.map((s: { id: string }) => s.id)).toEqual([a]);
    expect(page2.json().next_cursor).toBeNull();
    const bad = await w.app.inject({ method: 'GET', url: '/v1/sessions?state=stopped', headers: bearer(viewerKey) });
    expect(bad.statusCode).toBe(400);
  });

  it('project-limited operators see only their projects; agent tokens and gateway keys are refused', async () => {
    const alpha = await w.token('rw', 'alpha');
    const beta = await w.token('rw', 'beta');
    const sa = await w.open(alpha.agent);
    const sb = await w.open(beta.agent);
    expect((await w.app.inject({ method: 'GET', url: `/v1/sessions/${sa}`, headers: bearer(betaOperatorKey) })).statusCode).toBe(404);
    expect((await w.app.inject({ method: 'GET', url: `/v1/sessions/${sb}`, headers: bearer(betaOperatorKey) })).statusCode).toBe(200);
    const list = await w.app.inject({ method: 'GET', url: '/v1/sessions?limit=500', headers: bearer(betaOperatorKey) });
    const projects = new Set(list.json().sessions.map((s: { project_id: string }) => s.project_id));
    expect([...projects]).toEqual(['beta']);
    await w.app.ctx.sessions.halt({ tokenId: alpha.agent.id, sessionId: sa, trigger: 'CASCADE_WRITE', haltToken: true, summary: {} });
    const resume = await w.app.inject({ method: 'POST', url: `/v1/sessions/${sa}/resume`, headers: bearer(betaOperatorKey), payload: { reason: 'x' } });
    expect(resume.statusCode).toBe(404);
    const resumeKey = await w.app.inject({ method: 'POST', url: `/v1/keys/${alpha.agent.id}/resume`, headers: bearer(betaOperatorKey), payload: { reason: 'x' } });
    expect(resumeKey.statusCode).toBe(404);
    const asAgent = await w.app.inject({ method: 'GET', url: '/v1/sessions', headers: bearer(alpha.raw) });
    expect(asAgent.statusCode).toBe(403);
    expect(asAgent.json().error.code).toBe('MCP_TOKEN_FORBIDDEN');
    expect((await w.app.inject({ method: 'GET', url: '/v1/sessions', headers: bearer(w.gatewayKey) })).statusCode).toBe(403);
    expect((await w.app.inject({ method: 'GET', url: '/v1/sessions/not-a-uuid', headers: bearer(viewerKey) })).statusCode).toBe(400);
  });

  it('a resume waits while halts are being copied to Redis, so a copy read before it is never written after it', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent);
    await w.app.ctx.sessions.halt({ tokenId: agent.id, sessionId: sid, trigger: 'CASCADE_WRITE', haltToken: false, summary: {} });
    const { step } = gateStep(w, { limits: HIGH });
    expect((await step.run(callContext(w, agent, sid)))?.code).toBe('SESSION_HALTED');
    // A copy in progress (the reconciler or the epoch reload) holds the halt-copy lock.
    const copy = await db.connect();
    let done = false;
    let resume: Promise<{ statusCode: number }> | undefined;
    try {
      await copy.query('BEGIN');
      await copy.query('SELECT pg_advisory_xact_lock_shared(7008, 1)');
      resume = w.app.inject({ method: 'POST', url: `/v1/sessions/${sid}/resume`, headers: bearer(operatorKey), payload: { reason: 'checked' } }).then((r) => {
        done = true;
        return r;
      });
      await new Promise((r) => setTimeout(r, 400));
      expect(done).toBe(false);
      expect((await step.run(callContext(w, agent, sid)))?.code).toBe('SESSION_HALTED');
    } finally {
      await copy.query('COMMIT').catch(() => {});
      copy.release();
    }
    expect((await resume!).statusCode).toBe(200);
    expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    // The reconciler after the resume copies nothing back.
    await w.app.ctx.sessions.epoch.reconcileHalts();
    expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
  });

  it('resume: viewers cannot; a reason is required; a session stopped only by its token is 409; the token resume lifts all, audited', async () => {
    const { agent } = await w.token('rw');
    const s1 = await w.open(agent, { read_only: true });
    const s2 = await w.open(agent);
    const { step } = gateStep(w, { limits: HIGH, haltTokenOn: ALL_TRIGGERS });
    expect((await step.run(callContext(w, agent, s1, { capability: 'write' })))?.halt).toBe('WRITE_IN_READ_SESSION');
    const born = await w.app.ctx.sessions.open(agent, w.gateway, {});
    expect(born.state).toBe('halted');

    const asViewer = await w.app.inject({ method: 'POST', url: `/v1/sessions/${s1}/resume`, headers: bearer(viewerKey), payload: { reason: 'ok' } });
    expect(asViewer.statusCode).toBe(403);
    const noReason = await w.app.inject({ method: 'POST', url: `/v1/sessions/${s1}/resume`, headers: bearer(operatorKey), payload: {} });
    expect(noReason.statusCode).toBe(400);
    expect(noReason.json().error.details[0].field).toBe('reason');

    // s2 is stopped by the token halt only
    const onlyToken = await w.app.inject({ method: 'POST', url: `/v1/sessions/${s2}/resume`, headers: bearer(operatorKey), payload: { reason: 'ok' } });
    expect(onlyToken.statusCode).toBe(409);
    expect(onlyToken.json().error.message).toContain(`/v1/keys/${agent.id}/resume`);

    // resuming s1 alone leaves the token halted, and says so
    const r1 = await w.app.inject({ method: 'POST', url: `/v1/sessions/${s1}/resume`, headers: bearer(operatorKey), payload: { reason: 'reviewed the write' } });
    expect(r1.statusCode).toBe(200);
    expect(r1.json()).toMatchObject({ resumed_trigger: 'WRITE_IN_READ_SESSION', token_still_halted: true, session: { state: 'halted', halted_by: 'token' } });
    expect((await step.run(callContext(w, agent, s1)))?.code).toBe('SESSION_HALTED');

    const rk = await w.app.inject({ method: 'POST', url: `/v1/keys/${agent.id}/resume`, headers: bearer(operatorKey), payload: { reason: 'agent fixed' } });
    expect(rk.statusCode).toBe(200);
    expect(rk.json().token_halt).toMatchObject({ trigger: 'WRITE_IN_READ_SESSION', session_id: s1 });
    expect(rk.json().sessions_resumed).toEqual([born.session_id]);
    for (const sid of [s1, s2, born.session_id]) expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    expect((await w.app.ctx.sessions.open(agent, w.gateway, {})).state).toBe('active');

    const again = await w.app.inject({ method: 'POST', url: `/v1/keys/${agent.id}/resume`, headers: bearer(operatorKey), payload: { reason: 'again' } });
    expect(again.statusCode).toBe(409);

    const { rows } = await db.query(
      "SELECT action, target, actor_id, details->>'reason' AS reason FROM audit_events WHERE action IN ('session.resumed', 'agent_token.resumed') AND (target = $1 OR target = $2) ORDER BY ts",
      [`session:${s1}`, `agent_token:${agent.id}`],
    );
    expect(rows).toEqual([
      { action: 'session.resumed', target: `session:${s1}`, actor_id: roOperator.id, reason: 'reviewed the write' },
      { action: 'agent_token.resumed', target: `agent_token:${agent.id}`, actor_id: roOperator.id, reason: 'agent fixed' },
    ]);
    const history = await db.query('SELECT resumed_by, resume_reason FROM token_halts WHERE token_id = $1', [agent.id]);
    expect(history.rows).toEqual([{ resumed_by: `operator:${roOperator.id}`, resume_reason: 'agent fixed' }]);
  });

  it('a credential pasted into a resume reason is masked where it is stored and shown: session_halts, token_halts, GET /v1/sessions/:id', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent, { read_only: true });
    const { step } = gateStep(w, { limits: HIGH, haltTokenOn: ALL_TRIGGERS });
    expect((await step.run(callContext(w, agent, sid, { capability: 'write' })))?.halt).toBe('WRITE_IN_READ_SESSION');
    const github = `ghp_${'z9Y8'.repeat(9)}`;
    const clear = (text: unknown) => {
      for (const secret of [w.gatewayKey, github, 'hunter2']) expect(JSON.stringify(text)).not.toContain(secret);
      expect(JSON.stringify(text)).toContain('[REDACTED]');
    };
    const r1 = await w.app.inject({ method: 'POST', url: `/v1/sessions/${sid}/resume`, headers: bearer(operatorKey), payload: { reason: `rotated ${w.gatewayKey}; password=hunter2` } });
    expect(r1.statusCode).toBe(200);
    clear(r1.json().session.halts.map((h: { resume_reason: string | null }) => h.resume_reason));
    clear((await db.query('SELECT resume_reason FROM session_halts WHERE session_id = $1', [sid])).rows);
    const rk = await w.app.inject({ method: 'POST', url: `/v1/keys/${agent.id}/resume`, headers: bearer(operatorKey), payload: { reason: `the agent had ${github}` } });
    expect(rk.statusCode).toBe(200);
    clear((await db.query('SELECT resume_reason FROM token_halts WHERE token_id = $1', [agent.id])).rows);
    clear((await w.app.inject({ url: `/v1/sessions/${sid}`, headers: bearer(viewerKey) })).json().halts);

    // A reason recorded in clear by an earlier version is masked where it is shown.
    await db.query('UPDATE session_halts SET resume_reason = $2 WHERE session_id = $1', [sid, `old ${github}`]);
    clear((await w.app.inject({ url: `/v1/sessions/${sid}`, headers: bearer(viewerKey) })).json().halts);
  });

  it('resuming a session that hit its total limit starts its count again', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: { ...HIGH, sessionCalls: 3 } });
    for (let i = 0; i < 3; i++) expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    expect((await step.run(callContext(w, agent, sid)))?.halt).toBe('SESSION_LIMIT');
    const res = await w.app.inject({ method: 'POST', url: `/v1/sessions/${sid}/resume`, headers: bearer(operatorKey), payload: { reason: 'more work approved' } });
    expect(res.statusCode).toBe(200);
    expect(res.json().token_still_halted).toBe(false);
    const ctx = callContext(w, agent, sid);
    expect(await step.run(ctx)).toBeUndefined();
    expect(ctx.limits['session_calls']).toEqual({ used: 1, max: 3 });
    expect((await w.app.inject({ method: 'POST', url: `/v1/sessions/${sid}/resume`, headers: bearer(operatorKey), payload: { reason: 'x' } })).statusCode).toBe(409);
  });

  it('unknown ids are 404', async () => {
    const id = '0190aaaa-0000-7000-8000-000000000000';
    expect((await w.app.inject({ method: 'GET', url: `/v1/sessions/${id}`, headers: bearer(viewerKey) })).statusCode).toBe(404);
    expect((await w.app.inject({ method: 'POST', url: `/v1/sessions/${id}/resume`, headers: bearer(operatorKey), payload: { reason: 'x' } })).statusCode).toBe(404);
    expect((await w.app.inject({ method: 'POST', url: `/v1/keys/${id}/resume`, headers: bearer(operatorKey), payload: { reason: 'x' } })).statusCode).toBe(404);
  });
});

describe('POST /v1/sessions/:id/close (its gateway, or an operator)', () => {
  const close = (sid: string, headers: Record<string, string>) => w.app.inject({ method: 'POST', url: `/v1/sessions/${sid}/close`, headers });
  const state = async (sid: string) => (await db.query('SELECT state, closed_at FROM sessions WHERE id = $1', [sid])).rows[0] as { state: string; closed_at: Date | null };

  it('its gateway closes it like an idle timeout: closed in Postgres, gone from Redis, calls SESSION_UNKNOWN, its place freed; audited; again is 200 already_closed', async () => {
    const { raw, agent } = await w.token('rw');
    w.app.ctx.sessions.setCapsSource(() => ({ maxOpen: 1, maxNewPerHour: null }));
    try {
      const sid = (await openHttp(raw)).json().session_id as string;
      const full = await openHttp(raw);
      expect(full.statusCode).toBe(429);
      expect(full.json().error.message).toContain('/v1/sessions/:id/close');

      const res = await close(sid, gw(raw));
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ already_closed: false, session: { id: sid, state: 'closed', token_id: agent.id, closed_by: `gateway:${w.gateway.id}` } });
      expect((await state(sid)).state).toBe('closed');
      expect((await state(sid)).closed_at).not.toBeNull();
      expect(await w.app.ctx.redis.redis.exists(w.app.ctx.redis.key('s', sid))).toBe(0);
      const { step } = gateStep(w, { limits: HIGH });
      expect((await step.run(callContext(w, agent, sid)))?.code).toBe('SESSION_UNKNOWN');
      expect((await openHttp(raw)).statusCode).toBe(201);

      const again = await close(sid, gw(raw));
      expect(again.statusCode).toBe(200);
      expect(again.json().already_closed).toBe(true);
      const { rows } = await db.query("SELECT actor_type, actor_id, project_id, details FROM audit_events WHERE action = 'session.closed' AND target = $1", [`session:${sid}`]);
      expect(rows).toEqual([{ actor_type: 'system', actor_id: `gateway:${w.gateway.id}`, project_id: 'alpha', details: { token_id: agent.id, closed_by: 'gateway', gateway_id: w.gateway.id } }]);
    } finally {
      w.app.ctx.sessions.setCapsSource(() => ({ maxOpen: null, maxNewPerHour: null }));
    }
  });

  it('another token, unknown ids, bad ids and credentials are refused and close nothing', async () => {
    const owner = await w.token('rw');
    const other = await w.token('rw');
    const sid = await w.open(owner.agent);
    const cross = await close(sid, gw(other.raw));
    expect(cross.statusCode).toBe(404);
    expect(cross.json().error.code).toBe('NOT_FOUND');
    expect((await close('0190aaaa-0000-7000-8000-000000000000', gw(owner.raw))).statusCode).toBe(404);
    const bad = await close('s-042', gw(owner.raw));
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details[0].field).toBe('id');
    expect((await close(sid, gw())).statusCode).toBe(401);
    expect((await close(sid, gw(mangled(owner.raw)))).statusCode).toBe(401);
    // An agent token as Bearer is a gateway's headers swapped: 401 naming Authorization, as on every gateway route.
    const agentAsBearer = await close(sid, bearer(owner.raw));
    expect(agentAsBearer.statusCode).toBe(401);
    expect(agentAsBearer.json().error).toMatchObject({ code: 'UNAUTHENTICATED', message: expect.stringContaining('Authorization holds an agent token') });
    const viewer = await close(sid, bearer(await t.operatorKey(w.app, 'viewer')));
    expect(viewer.statusCode).toBe(403);
    expect(viewer.json().error.code).toBe('FORBIDDEN');
    expect((await close(sid, bearer(await t.operatorKey(w.app, 'operator', ['beta'])))).statusCode).toBe(404);
    expect((await state(sid)).state).toBe('active');
  });

  it('an operator closes a session; audited with the operator', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent);
    const key = await t.operatorKey(w.app, 'operator');
    const op = (await w.app.ctx.auth.authenticate(key)) as OperatorPrincipal;
    const res = await close(sid, bearer(key));
    expect(res.statusCode).toBe(200);
    expect((await state(sid)).state).toBe('closed');
    const shown = await w.app.inject({ method: 'GET', url: `/v1/sessions/${sid}`, headers: bearer(w.owner) });
    expect(shown.json()).toMatchObject({ state: 'closed', closed_by: `operator:${op.id}` });
    const { rows } = await db.query("SELECT actor_type, actor_id, details->>'closed_by' AS by FROM audit_events WHERE action = 'session.closed' AND target = $1", [`session:${sid}`]);
    expect(rows).toEqual([{ actor_type: 'operator', actor_id: op.id, by: 'operator' }]);
  });

  it('never closes a halted session, one whose token is halted, or one Redis holds halted before Postgres knows: 409 naming the state', async () => {
    const { raw, agent } = await w.token('rw');
    const sid = await w.open(agent);
    await w.app.ctx.sessions.halt({ tokenId: agent.id, sessionId: sid, trigger: 'CASCADE_WRITE', haltToken: false, summary: {} });
    const res = await close(sid, gw(raw));
    expect(res.statusCode).toBe(409);
    expect(res.json().error).toMatchObject({ code: 'CONFLICT', details: { state: 'halted', halted_by: 'session', trigger: 'CASCADE_WRITE' } });
    expect(res.json().error.message).toContain(`/v1/sessions/${sid}/resume`);
    const { step } = gateStep(w, { limits: HIGH });
    expect((await step.run(callContext(w, agent, sid)))?.code).toBe('SESSION_HALTED');
    expect((await state(sid)).state).toBe('halted');
    // an operator cannot either
    expect((await close(sid, bearer(await t.operatorKey(w.app, 'operator')))).statusCode).toBe(409);

    const second = await w.token('rw');
    const s2 = await w.open(second.agent);
    const s3 = await w.open(second.agent);
    await w.app.ctx.sessions.halt({ tokenId: second.agent.id, sessionId: s3, trigger: 'UNAUTHORIZED_SERVER', haltToken: true, summary: {} });
    const byToken = await close(s2, gw(second.raw));
    expect(byToken.statusCode).toBe(409);
    expect(byToken.json().error.details).toMatchObject({ state: 'halted', halted_by: 'token', trigger: 'UNAUTHORIZED_SERVER' });
    expect(byToken.json().error.message).toContain(`/v1/keys/${second.agent.id}/resume`);
    expect((await state(s2)).state).toBe('active');
    // The session that fired a token-halting trigger: both are halted, so the session's resume alone would not do.
    const both = await close(s3, gw(second.raw));
    expect(both.statusCode).toBe(409);
    expect(both.json().error.details).toMatchObject({ state: 'halted', halted_by: 'session and token', trigger: 'UNAUTHORIZED_SERVER' });
    expect(both.json().error.message).toContain(`resumes both with POST /v1/keys/${second.agent.id}/resume`);
    expect(both.json().error.message).not.toContain(`/v1/sessions/${s3}/resume`);

    const third = await w.token('rw');
    const s4 = await w.open(third.agent);
    await w.app.ctx.redis.redis.hset(w.app.ctx.redis.key('s', s4), 'st', 'halted', 'trg', 'CASCADE_WRITE');
    const onlyRedis = await close(s4, gw(third.raw));
    expect(onlyRedis.statusCode).toBe(409);
    expect(await w.app.ctx.redis.redis.hget(w.app.ctx.redis.key('s', s4), 'st')).toBe('halted');
    expect((await state(s4)).state).toBe('active');

    // A token halt Redis enforces before Postgres has its record: not closed either.
    const fourth = await w.token('rw');
    const s5 = await w.open(fourth.agent);
    await w.app.ctx.redis.redis.set(w.app.ctx.redis.key('th', fourth.agent.id), 'CASCADE_WRITE');
    const tokenOnlyRedis = await close(s5, gw(fourth.raw));
    expect(tokenOnlyRedis.statusCode).toBe(409);
    expect(tokenOnlyRedis.json().error.details).toMatchObject({ state: 'halted', halted_by: 'token', trigger: 'CASCADE_WRITE' });
    expect(await w.app.ctx.redis.redis.exists(w.app.ctx.redis.key('s', s5))).toBe(1);
    expect((await state(s5)).state).toBe('active');
  });

  it('503 while Redis has lost its state (nothing changed)', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent);
    const r = w.app.ctx.redis;
    // A service over a prefix without a state epoch: as right after Redis lost its data.
    const lost = { ...r, prefix: `${r.prefix}lost:`, key: (...parts: string[]) => `${r.prefix}lost:${parts.join(':')}` };
    const svc = new SessionService(w.app.ctx.pool, lost, pino({ level: 'silent' }), { idleTimeoutMs: 60_000, maxOpenPerToken: 5, maxNewPerHour: 100 });
    await expect(svc.close(sid, { agent, gateway: w.gateway })).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE', status: 503 });
    expect((await state(sid)).state).toBe('active');
    await svc.stop(); // the reload it asked for (under its own prefix) is done before the file's teardown
  });
});

describe('admin rows about one session carry its id (GET /v1/audit?session=)', () => {
  it('its halt resumed, a kill and a grant limited to it, and its close are found by the session filter; the chain verifies', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent);
    const other = await w.open(agent);
    const owner = bearer(w.owner);
    await w.app.ctx.sessions.halt({ tokenId: agent.id, sessionId: sid, trigger: 'CASCADE_WRITE', haltToken: false, summary: { message: 'test' } });
    expect((await w.app.inject({ method: 'POST', url: `/v1/sessions/${sid}/resume`, headers: owner, payload: { reason: 'reviewed' } })).statusCode).toBe(200);
    const kill = await w.app.inject({ method: 'POST', url: '/v1/kills', headers: owner, payload: { target: 'session', session_id: sid, reason: 'INC-1 runaway' } });
    expect(kill.statusCode).toBe(201);
    expect((await w.app.inject({ method: 'DELETE', url: `/v1/kills/${kill.json().kill.id}`, headers: owner, payload: { reason: 'contained' } })).statusCode).toBe(200);
    const grant = await w.app.inject({ method: 'POST', url: '/v1/grants', headers: owner, payload: { token_id: agent.id, session_id: sid, reason: 'INC-1 prod read', expires_in: 600 } });
    expect(grant.statusCode).toBe(201);
    expect((await w.app.inject({ method: 'DELETE', url: `/v1/grants/${grant.json().id}`, headers: owner })).statusCode).toBe(200);
    expect((await w.app.inject({ method: 'POST', url: `/v1/sessions/${sid}/close`, headers: owner })).statusCode).toBe(200);
    // another session's row, for contrast
    expect((await w.app.inject({ method: 'POST', url: `/v1/sessions/${other}/close`, headers: owner })).statusCode).toBe(200);

    const page = await w.app.inject({ url: `/v1/audit?session=${sid}&kind=ADMIN`, headers: owner });
    expect(page.statusCode).toBe(200);
    const events = page.json().events as { action: string; session_id: string | null; target: string }[];
    expect(events.map((e) => e.action).sort()).toEqual(['grant.create', 'grant.revoke', 'kill.created', 'kill.lifted', 'session.closed', 'session.opened', 'session.resumed']);
    expect(events.every((e) => e.session_id === sid)).toBe(true);
    // a session's id in upper case finds them too (ids are compared lower-cased)
    expect((await w.app.inject({ url: `/v1/audit?session=${sid.toUpperCase()}&kind=ADMIN`, headers: owner })).json().events).toHaveLength(7);
    // rows about no one session keep an empty column
    const { rows } = await db.query("SELECT count(*)::int AS n FROM audit_events WHERE kind = 'ADMIN' AND target NOT LIKE 'session:%' AND session_id IS NOT NULL AND action NOT IN ('kill.created', 'kill.lifted', 'grant.create', 'grant.revoke')");
    expect(rows[0].n).toBe(0);
    const verify = await w.app.inject({ url: '/v1/audit/verify', headers: owner });
    expect(verify.statusCode).toBe(200);
    expect(verify.json()).toMatchObject({ ok: true, broken: [] });
  });
});

describe('the idle sweep audits the sessions it closes', () => {
  const closedRows = async (sid: string) =>
    (await db.query("SELECT actor_type, actor_id, project_id, details FROM audit_events WHERE action = 'session.closed' AND target = $1", [`session:${sid}`])).rows;
  const state = async (sid: string) => (await db.query('SELECT state FROM sessions WHERE id = $1', [sid])).rows[0].state as string;
  /** The session's Redis keys gone, as when it idled out; the sweep's look at it. */
  const idledOut = async (sid: string) => {
    const r = w.app.ctx.redis;
    await r.redis.del(r.key('s', sid));
    const swept = await w.app.ctx.sessions.mirror.gone([sid]);
    expect(swept?.gone).toEqual([sid]);
    return swept!;
  };

  it('one session.closed row per session it closes (actor system/idle-sweep, the idle reason), shown by GET /v1/sessions/:id and the timeline', async () => {
    const { agent } = await w.token('rw');
    const svc = new SessionService(w.app.ctx.pool, w.app.ctx.redis, pino({ level: 'silent' }), { idleTimeoutMs: 1_000, maxOpenPerToken: 20, maxNewPerHour: 100 });
    svc.setAdminRecorder((r) => w.app.ctx.audit.recordAdmin(r));
    const sid = (await svc.open(agent, w.gateway, {})).session_id;
    await new Promise((r) => setTimeout(r, 1_300));
    await w.app.ctx.redis.redis.del(w.app.ctx.redis.key('maintain-lock'));
    const done = await svc.epoch.maintain();
    expect(done?.closed).toBeGreaterThanOrEqual(1);
    expect(await state(sid)).toBe('closed');
    expect(await closedRows(sid)).toEqual([
      {
        actor_type: 'system',
        actor_id: 'idle-sweep',
        project_id: 'alpha',
        details: { token_id: agent.id, closed_by: 'idle_sweep', reason: 'idle for 1 s (SESSION_IDLE_TIMEOUT_S): no allowed call', idle_timeout_s: 1 },
      },
    ]);
    expect(done?.deferred).toBe(0);
    // off the token's open-session set too: a token that opens no more sessions leaves no key behind
    expect(await w.app.ctx.redis.redis.exists(w.app.ctx.redis.key('so', agent.id))).toBe(0);
    // a second sweep finds nothing more to close or record
    await w.app.ctx.redis.redis.del(w.app.ctx.redis.key('maintain-lock'));
    await svc.epoch.maintain();
    expect(await closedRows(sid)).toHaveLength(1);

    const detail = await w.app.inject({ method: 'GET', url: `/v1/sessions/${sid}`, headers: bearer(w.owner) });
    expect(detail.json()).toMatchObject({ id: sid, state: 'closed', closed_by: 'idle-sweep' });
    expect(detail.json().closed_at).not.toBeNull();
    const timeline = await w.app.inject({ method: 'GET', url: `/v1/incidents/timeline?target=session:${sid}`, headers: bearer(w.owner) });
    expect(timeline.statusCode).toBe(200);
    expect(timeline.json().events).toContainEqual(
      expect.objectContaining({ type: 'admin', actor: 'system:idle-sweep', session_id: sid, summary: `session.closed session:${sid}: idle for 1 s (SESSION_IDLE_TIMEOUT_S): no allowed call` }),
    );
    await svc.stop();
  });

  it('two replicas sweeping the same session at once: one closes it and writes the one row', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent);
    const swept = await idledOut(sid);
    const replica = await t.app();
    try {
      const closed = await Promise.all([w.app.ctx.sessions.epoch.closeGone(swept.gone, swept.epoch), replica.ctx.sessions.epoch.closeGone(swept.gone, swept.epoch)]);
      expect(closed.sort()).toEqual([0, 1]);
      expect(await state(sid)).toBe('closed');
      const rows = await closedRows(sid);
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ actor_type: 'system', actor_id: 'idle-sweep', details: { closed_by: 'idle_sweep', token_id: agent.id } });
    } finally {
      await t.close(replica);
    }
  });

  it('when its row can be written neither to Postgres nor to the spool, the session stays active in Postgres; the next sweep closes and audits it', async () => {
    const { agent } = await w.token('rw');
    const sid = await w.open(agent);
    const swept = await idledOut(sid);
    const { app: replica, restore } = await replicaWithoutAudit(t, 'session.closed');
    try {
      expect(await replica.ctx.sessions.epoch.closeGone(swept.gone, swept.epoch)).toBe(0);
      expect(await state(sid)).toBe('active');
      expect(await closedRows(sid)).toEqual([]);
    } finally {
      await restore();
    }
    expect(await w.app.ctx.sessions.epoch.closeGone(swept.gone, swept.epoch)).toBe(1);
    expect(await state(sid)).toBe('closed');
    expect(await closedRows(sid)).toHaveLength(1);
  });
});
