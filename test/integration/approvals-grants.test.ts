import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sessionStore } from '../../src/sessions/store.js';
import { replicaWithoutAudit } from '../helpers/audit-down.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// Production grants (seed 001) through the approval queue (issue 9): a production call without a grant
// opens one request per token and session; approving it creates the grant; rejecting keeps denying.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const GRANT_MAX_SECONDS = 600;
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY, grantMaxSeconds: GRANT_MAX_SECONDS });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(async () => {
  for (const l of t.logs.lines) if (l.includes('unhandled error')) console.error(l.slice(0, 2000));
  await t.teardown();
});

const read = (path: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path } });

async function productionSession() {
  const tok = await gw.token('ro', { environment: 'production' });
  const s = await gw.session(tok.raw);
  const ask = (path = 'logs/app.log', sessionId = s.session_id) => gw.decide(tok.raw, { ...read(path), session_id: sessionId });
  return { tok, s, ask };
}

const decide = (id: string, verb: 'approve' | 'reject', payload: Record<string, unknown>) =>
  app.inject({ method: 'POST', url: `/v1/approvals/${id}/${verb}`, headers: bearer(gw.owner), payload });

/** Counts the Postgres queries that touch the approvals table while `fn` runs. */
async function approvalQueries(fn: () => Promise<unknown>): Promise<number> {
  const pool = app.ctx.pool as unknown as { query: (...a: unknown[]) => unknown };
  const original = pool.query;
  let n = 0;
  pool.query = function (this: unknown, ...args: unknown[]) {
    const sql = typeof args[0] === 'string' ? args[0] : ((args[0] as { text?: string } | undefined)?.text ?? '');
    if (/\bapprovals\b/.test(sql)) n++;
    return original.apply(this, args);
  };
  try {
    await fn();
  } finally {
    pool.query = original;
  }
  return n;
}

describe('production grants in the approval queue', () => {
  it('HUMAN_AUTHORIZATION_REQUIRED names one pending request per token and session; repeats reuse it without Postgres', async () => {
    const { tok, s, ask } = await productionSession();
    const first = await ask();
    expect(first).toMatchObject({ decision: 'deny', code: 'HUMAN_AUTHORIZATION_REQUIRED' });
    expect(first.approval_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(first.message).toContain(first.approval_id);

    let again: Record<string, unknown> = {};
    const queries = await approvalQueries(async () => {
      again = await ask('other/file.txt');
      await ask();
    });
    expect(again).toMatchObject({ code: 'HUMAN_AUTHORIZATION_REQUIRED', approval_id: first.approval_id });
    expect(queries).toBe(0);

    const listed = await app.inject({ url: `/v1/approvals?kind=production_grant&token=${tok.id}`, headers: bearer(gw.owner) });
    expect(listed.statusCode).toBe(200);
    expect(listed.json().approvals).toEqual([
      expect.objectContaining({ id: first.approval_id, kind: 'production_grant', state: 'pending', token_id: tok.id, session_id: s.session_id, grant_id: null, rule: 'production_grant' }),
    ]);
    // Calls only: the grant request is not a call approval.
    const calls = await app.inject({ url: `/v1/approvals?kind=call&token=${tok.id}`, headers: bearer(gw.owner) });
    expect(calls.json().approvals).toEqual([]);

    // Another session of the same token asks on its own.
    const other = await gw.session(tok.raw);
    let second: Record<string, unknown> = {};
    // Opening a request is the one Postgres write (the insert); the repeats above made none.
    expect(await approvalQueries(async () => (second = await ask('logs/app.log', other.session_id)))).toBe(1);
    expect(second.code).toBe('HUMAN_AUTHORIZATION_REQUIRED');
    expect(second.approval_id).not.toBe(first.approval_id);

    const status = await app.inject({ url: `/v1/gateway/approvals/${first.approval_id}`, headers: gw.headers(tok.raw) });
    expect(status.json()).toMatchObject({ state: 'pending' });
  });

  it('approving creates a grant for that token and session (expires_in, bounded by GRANT_MAX_SECONDS); the next call is allowed', async () => {
    const { tok, s, ask } = await productionSession();
    const { approval_id: id } = await ask();

    const tooLong = await decide(id, 'approve', { reason: 'INC-7 read logs', expires_in: GRANT_MAX_SECONDS + 1 });
    expect(tooLong.statusCode).toBe(400);
    expect(tooLong.json().error.message).toContain('GRANT_MAX_SECONDS');
    expect((await ask()).code).toBe('HUMAN_AUTHORIZATION_REQUIRED');
    expect((await app.inject({ url: `/v1/grants?token=${tok.id}`, headers: bearer(gw.owner) })).json().grants).toEqual([]);

    const t0 = Date.now();
    const approved = await decide(id, 'approve', { reason: 'INC-7 read logs', expires_in: 120 });
    expect(approved.statusCode).toBe(200);
    expect(approved.json()).toMatchObject({ id, kind: 'production_grant', state: 'approved', reason: 'INC-7 read logs' });
    const grantId = approved.json().grant_id as string;
    expect(grantId).toBeTruthy();

    const grants = (await app.inject({ url: `/v1/grants?token=${tok.id}`, headers: bearer(gw.owner) })).json().grants;
    expect(grants).toHaveLength(1);
    expect(grants[0]).toMatchObject({ id: grantId, kind: 'production', token_id: tok.id, session_id: s.session_id, environment: 'production' });
    expect(grants[0].reason).toContain('INC-7 read logs');
    const lasts = new Date(grants[0].expires_at).getTime() - t0;
    expect(lasts).toBeGreaterThan(110_000);
    expect(lasts).toBeLessThan(130_000);
    expect(new Date(approved.json().expires_at).getTime()).toBe(new Date(grants[0].expires_at).getTime());

    expect((await ask()).code).toBe('OK');
    expect((await ask('another.log')).code).toBe('OK');
    // Session-bound: another session of the token still needs its own.
    const other = await gw.session(tok.raw);
    expect((await ask('logs/app.log', other.session_id)).code).toBe('HUMAN_AUTHORIZATION_REQUIRED');

    const status = await app.inject({ url: `/v1/gateway/approvals/${id}`, headers: gw.headers(tok.raw) });
    expect(status.json()).toMatchObject({ state: 'approved' });
    expect(status.json().message).toContain('production access');

    // The audit chain: requested by the call, approved by the operator, the grant it made.
    const { rows } = await t
      .pool()
      .query(`SELECT action FROM audit_events WHERE target = $1 OR (action = 'grant.create' AND details->>'approval_id' = $2) ORDER BY ts, seq`, [`approval:${id}`, id]);
    expect(rows.map((r) => r.action)).toEqual(['approval.requested', 'grant.create', 'approval.approved']);
    // Every operator sees that production access was granted.
    const grantAlert = async () => ((await app.inject({ url: `/v1/alerts?kind=GRANT_ISSUED`, headers: bearer(gw.owner) })).json().alerts as Array<{ details: { grant_id?: string } }>).find((a) => a.details.grant_id === grantId);
    await until(async () => (await grantAlert()) !== undefined, 5_000, 'the GRANT_ISSUED alert');
    const issued = [await grantAlert()];
    expect(issued[0]).toMatchObject({ kind: 'GRANT_ISSUED', token_id: tok.id, session_id: s.session_id, severity: 'warning' });

    // Revoked: the next production call opens a new request.
    expect((await app.inject({ method: 'DELETE', url: `/v1/grants/${grantId}`, headers: bearer(gw.owner) })).statusCode).toBe(200);
    const after = await ask();
    expect(after.code).toBe('HUMAN_AUTHORIZATION_REQUIRED');
    expect(after.approval_id).toBeTruthy();
    expect(after.approval_id).not.toBe(id);
  });

  it('without expires_in the grant lasts the default (one hour, within GRANT_MAX_SECONDS)', async () => {
    const { tok, ask } = await productionSession();
    const { approval_id: id } = await ask();
    const t0 = Date.now();
    expect((await decide(id, 'approve', { reason: 'default length' })).statusCode).toBe(200);
    const [grant] = (await app.inject({ url: `/v1/grants?token=${tok.id}`, headers: bearer(gw.owner) })).json().grants;
    expect(new Date(grant.expires_at).getTime() - t0).toBeLessThanOrEqual(GRANT_MAX_SECONDS * 1000 + 5000);
    expect(new Date(grant.expires_at).getTime() - t0).toBeGreaterThan((GRANT_MAX_SECONDS - 10) * 1000);
  });

  it('rejecting keeps denying, with the reason, and creates no grant', async () => {
    const { tok, ask } = await productionSession();
    const { approval_id: id } = await ask();
    expect((await decide(id, 'reject', { reason: 'not during the freeze' })).statusCode).toBe(200);
    const denied = await ask();
    expect(denied).toMatchObject({ decision: 'deny', code: 'HUMAN_AUTHORIZATION_REQUIRED', approval_id: id });
    expect(denied.message).toContain('not during the freeze');
    expect((await app.inject({ url: `/v1/grants?token=${tok.id}`, headers: bearer(gw.owner) })).json().grants).toEqual([]);
    expect((await app.inject({ url: `/v1/gateway/approvals/${id}`, headers: gw.headers(tok.raw) })).json()).toMatchObject({ state: 'rejected' });
  });

  it('approving the request of a session that has closed since is refused (400 naming session_id); it stays pending, no grant', async () => {
    const { tok, s, ask } = await productionSession();
    const { approval_id: id } = await ask();
    // The session idled out and the minute sweep closed it: it never runs again.
    expect(await sessionStore.closeSessions(app.ctx.pool, [s.session_id], 'idle-sweep')).toBe(1);
    const res = await decide(id, 'approve', { reason: 'too late' });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().error.details[0].field).toBe('session_id');
    expect((await app.inject({ url: `/v1/grants?token=${tok.id}`, headers: bearer(gw.owner) })).json().grants).toEqual([]);
    expect((await app.inject({ url: `/v1/approvals?kind=production_grant&token=${tok.id}`, headers: bearer(gw.owner) })).json().approvals).toEqual([
      expect.objectContaining({ id, state: 'pending', grant_id: null }),
    ]);
  });

  it('expires_in only applies to approving a production grant request', async () => {
    const { ask } = await productionSession();
    const { approval_id: id } = await ask();
    expect((await decide(id, 'reject', { reason: 'no thanks', expires_in: 120 })).statusCode).toBe(400);
  });

  it('explain shows the denial without opening a request', async () => {
    const { tok, s } = await productionSession();
    const res = await app.inject({ method: 'POST', url: '/v1/decisions/explain', headers: bearer(gw.owner), payload: { token_id: tok.id, ...read('x.log'), session_id: s.session_id } });
    expect(res.statusCode).toBe(200);
    expect(JSON.stringify(res.json())).toContain('HUMAN_AUTHORIZATION_REQUIRED');
    const listed = await app.inject({ url: `/v1/approvals?kind=production_grant&token=${tok.id}`, headers: bearer(gw.owner) });
    expect(listed.json().approvals).toEqual([]);
  });
});

describe('when the audit rows of an approved grant cannot be written', () => {
  it('approving answers 503 SERVICE_UNAVAILABLE, the request stays pending and no grant was ever made (it is committed with the approval, after its rows); once the trail is back, approving grants', async () => {
    const { tok, ask } = await productionSession();
    const { approval_id: id } = await ask();
    // Its grant.create row refused, then (with grant.create written) its approval.approved row.
    for (const actions of ['grant.%', 'approval.approved']) {
      const { app: broken, restore } = await replicaWithoutAudit(t, actions, { policyFile: POLICY, grantMaxSeconds: GRANT_MAX_SECONDS });
      try {
        const res = await broken.inject({ method: 'POST', url: `/v1/approvals/${id}/approve`, headers: bearer(gw.owner), payload: { reason: 'INC-8 while the trail is down', expires_in: 120 } });
        expect(res.statusCode, `${actions}: ${res.body}`).toBe(503);
        expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
      } finally {
        await restore();
      }
      // No grant row at all, not even a revoked one: never committed, so no replica ever held it.
      expect((await t.pool().query('SELECT count(*)::int AS n FROM grants WHERE token_id = $1', [tok.id])).rows[0].n, actions).toBe(0);
      expect((await app.inject({ url: `/v1/approvals?kind=production_grant&token=${tok.id}`, headers: bearer(gw.owner) })).json().approvals).toEqual([
        expect.objectContaining({ id, state: 'pending', grant_id: null }),
      ]);
      expect(await ask()).toMatchObject({ code: 'HUMAN_AUTHORIZATION_REQUIRED', approval_id: id });
    }

    const approved = await decide(id, 'approve', { reason: 'INC-8 read logs', expires_in: 120 });
    expect(approved.statusCode, approved.body).toBe(200);
    const grants = (await app.inject({ url: `/v1/grants?token=${tok.id}`, headers: bearer(gw.owner) })).json().grants;
    expect(grants).toEqual([expect.objectContaining({ id: approved.json().grant_id, revoked_at: null })]);
    expect((await ask()).code).toBe('OK');
  });
});
