import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// POST /v1/keys/:id/rotate: a new token with the same settings; the old one works for the grace period
// on every replica, then fails like any expired token.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let a: FastifyInstance;
let b: FastifyInstance;
let gw: GatewayDriver;
let gwB: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  a = await t.app({ policyFile: POLICY });
  b = await t.app({ policyFile: POLICY });
  // buildApp returns before the first state-epoch reload is done; sessions answer 503 until it is.
  await a.ctx.sessions.ensureState();
  gw = await new GatewayDriver(t, a).init();
  gwB = new GatewayDriver(t, b);
  gwB.owner = gw.owner;
  gwB.gatewayKey = gw.gatewayKey;
});
afterAll(() => t.teardown());

const read = { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' } };
const rotate = (id: string, payload: Record<string, unknown>) => a.inject({ method: 'POST', url: `/v1/keys/${id}/rotate`, headers: bearer(gw.owner), payload });
const decideStatus = async (app: FastifyInstance, raw: string, sid: string) => {
  const res = await app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers(raw), payload: { ...read, session_id: sid } });
  return { status: res.statusCode, code: res.statusCode === 200 ? (res.json().code as string) : (res.json().error.code as string) };
};

describe('token rotation', () => {
  it('the old token works during the grace period on both replicas and fails after; the new one has the same settings', async () => {
    const old = await gw.token('rw', { project: 'rot', role: 'code_agent', scopes: ['storage:read', 'storage:write'] });
    const s = (await gw.session(old.raw)).session_id;
    // Both replicas have the old token cached (with no expiry) before the rotation.
    expect(await decideStatus(a, old.raw, s)).toEqual({ status: 200, code: 'OK' });
    expect(await decideStatus(b, old.raw, s)).toEqual({ status: 200, code: 'OK' });

    const rotatingFrom = Date.now();
    const res = await rotate(old.id, { grace_seconds: 2, reason: 'INC-7 rotate after leak' });
    const rotatedBy = Date.now();
    expect(res.statusCode, res.body).toBe(201);
    const body = res.json();
    expect(body.token).toMatch(/^mcp_rw_/);
    expect(body.token).not.toBe(old.raw);
    expect(body.key).toMatchObject({ type: 'rw', project_id: 'rot', role: 'code_agent', environment: 'development', scopes: ['storage:read', 'storage:write'], expires_at: null });
    expect(body.previous.id).toBe(old.id);
    // grace_seconds after the rotation, which happened between the two readings of the clock around it.
    const graceUntil = new Date(body.grace_until).getTime();
    expect(graceUntil).toBeGreaterThanOrEqual(rotatingFrom + 2_000 - 1);
    expect(graceUntil).toBeLessThanOrEqual(rotatedBy + 2_000 + 1);
    expect(body.warning).toBeTruthy();

    // In grace: both tokens work, on both replicas.
    expect(await decideStatus(a, old.raw, s)).toEqual({ status: 200, code: 'OK' });
    expect(await decideStatus(b, old.raw, s)).toEqual({ status: 200, code: 'OK' });
    const sNew = (await gw.session(body.token)).session_id;
    expect(await decideStatus(b, body.token, sNew)).toEqual({ status: 200, code: 'OK' });

    await new Promise((r) => setTimeout(r, Math.max(0, graceUntil - Date.now()) + 100));
    expect(await decideStatus(a, old.raw, s)).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    expect(await decideStatus(b, old.raw, s)).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    expect(await decideStatus(b, body.token, sNew)).toEqual({ status: 200, code: 'OK' });

    // Both tokens are in the audit trail.
    await a.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(
      `SELECT action, target, details->>'new_token_id' AS new_id, details->>'rotated_from' AS rotated_from, details->>'reason' AS reason FROM audit_events WHERE action IN ('key.rotated', 'key.created') AND (target = $1 OR target = $2) ORDER BY ts, seq`,
      [`agent_token:${old.id}`, `agent_token:${body.key.id}`],
    );
    expect(rows).toEqual([
      { action: 'key.created', target: `agent_token:${old.id}`, new_id: null, rotated_from: null, reason: null },
      { action: 'key.rotated', target: `agent_token:${old.id}`, new_id: body.key.id, rotated_from: null, reason: 'INC-7 rotate after leak' },
      { action: 'key.created', target: `agent_token:${body.key.id}`, new_id: null, rotated_from: old.id, reason: null },
    ]);
  });

  it('the new token keeps its creator when another operator rotates it; the rotation names who did it', async () => {
    const old = await gw.token('ro', { project: 'rot' });
    const other = await t.operatorKey(a, 'operator');
    const res = await a.inject({ method: 'POST', url: `/v1/keys/${old.id}/rotate`, headers: bearer(other), payload: { grace_seconds: 0, reason: 'on-call rotation' } });
    expect(res.statusCode, res.body).toBe(201);
    const creator = (await a.inject({ url: `/v1/keys/${old.id}`, headers: bearer(gw.owner) })).json().created_by;
    expect(res.json().key.created_by).toBe(creator);
    await a.ctx.audit.writer.flush();
    const { rows } = await t.pool().query("SELECT actor_id FROM audit_events WHERE action = 'key.rotated' AND target = $1", [`agent_token:${old.id}`]);
    const otherId = (await a.ctx.auth.authenticate(other)).id;
    expect(rows.map((r) => r.actor_id)).toEqual([otherId]);
  });

  it('a second rotation of the same token (a retry whose answer was lost) is refused with 409 naming the successor; no second token is issued', async () => {
    const old = await gw.token('ro');
    const first = await rotate(old.id, { grace_seconds: 3600, reason: 'first' });
    expect(first.statusCode).toBe(201);
    const successor = first.json().key.id as string;
    expect(first.json().key.expires_at).toBeNull();
    expect(first.json().previous).toMatchObject({ rotated_to: successor });

    const again = await rotate(old.id, { grace_seconds: 3600, reason: 'retry' });
    expect(again.statusCode).toBe(409);
    expect(again.json().error).toMatchObject({ code: 'CONFLICT', details: { rotated_to: successor } });
    expect(again.json().error.message).toContain(`rotate ${successor} (POST /v1/keys/${successor}/rotate) or revoke it`);
    // Only the first successor exists, and it still has no expiry (the retry used to give a second one the grace period as its lifetime).
    const { rows } = await t.pool().query('SELECT id, expires_at FROM agent_tokens WHERE created_at >= $1 AND id <> $2', [first.json().key.created_at, old.id]);
    expect(rows).toEqual([{ id: successor, expires_at: null }]);
    const shown = await a.inject({ method: 'GET', url: `/v1/keys/${old.id}`, headers: bearer(gw.owner) });
    expect(shown.json()).toMatchObject({ rotated_to: successor, rotated_at: expect.any(String) });
    // The successor can be rotated in turn.
    expect((await rotate(successor, { grace_seconds: 60 })).statusCode).toBe(201);
  });

  it('grace 0 stops the old token at once; the new token keeps the old lifetime; revoked tokens cannot be rotated', async () => {
    const old = await gw.token('ro');
    await t.pool().query(`UPDATE agent_tokens SET expires_at = created_at + interval '1 day' WHERE id = $1`, [old.id]);
    await a.ctx.auth.announceRevoked(old.id);
    const s = (await gw.session(old.raw)).session_id;
    const res = await rotate(old.id, { grace_seconds: 0 });
    expect(res.statusCode).toBe(201);
    expect(await decideStatus(b, old.raw, s)).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    const lifetime = new Date(res.json().key.expires_at).getTime() - new Date(res.json().key.created_at).getTime();
    expect(Math.abs(lifetime - 86_400_000)).toBeLessThan(5_000);
    expect(res.json().warning).toBeUndefined();

    // Rotating the same (now expired) token again, or a revoked one: 409.
    expect((await rotate(old.id, { grace_seconds: 10 })).statusCode).toBe(409);
    const revoked = await gw.token('ro');
    await a.inject({ method: 'POST', url: `/v1/keys/${revoked.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'gone' } });
    expect((await rotate(revoked.id, { grace_seconds: 10 })).statusCode).toBe(409);
    expect((await rotate('0190aaaa-0000-7000-8000-000000000000', { grace_seconds: 10 })).statusCode).toBe(404);
    expect((await rotate(revoked.id, { grace_seconds: 10_000_000 })).statusCode).toBe(400);
  });
});
