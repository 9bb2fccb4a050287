import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Every ADMIN row an operator's request writes names the operator the same way: actor_type operator,
// actor_id its key id, and its name and role in details (what the audit page and a forensic reader show).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(() => t.teardown());

describe('ADMIN rows made by an operator', () => {
  it('grant.create, grant.revoke, log_level.set, operator_key.created and alert.acknowledged carry the operator name and role', async () => {
    const op = await app.ctx.credentials.createOperatorKey('test', { name: 'Dana on call', role: 'owner' });
    const key = op.key;
    const opId = op.operator_key.id;
    const tok = await gw.token('rw');

    const grant = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(key), payload: { token_id: tok.id, reason: 'INC-50 read prod logs', expires_in: 600 } });
    expect(grant.statusCode).toBe(201);
    expect((await app.inject({ method: 'DELETE', url: `/v1/grants/${grant.json().id}`, headers: bearer(key) })).statusCode).toBe(200);
    expect((await app.inject({ method: 'PUT', url: '/v1/admin/log-level', headers: bearer(key), payload: { level: 'info' } })).statusCode).toBe(200);
    const created = await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(key), payload: { name: 'night shift', role: 'viewer' } });
    expect(created.statusCode).toBe(201);
    const alert = await app.ctx.alerts.raise({ kind: 'FLAGS_RECOVERED', message: 'something to acknowledge' });
    expect((await app.inject({ method: 'POST', url: `/v1/alerts/${alert.id}/ack`, headers: bearer(key), payload: { note: 'seen' } })).statusCode).toBe(200);
    await app.ctx.audit.writer.flush();

    const { rows } = await t.pool().query<{ action: string; actor_type: string; actor_id: string; details: Record<string, unknown> }>(
      `SELECT action, actor_type, actor_id, details FROM audit_events WHERE kind = 'ADMIN' AND actor_id = $1 ORDER BY seq`,
      [opId],
    );
    expect(rows.map((r) => r.action)).toEqual(['grant.create', 'grant.revoke', 'log_level.set', 'operator_key.created', 'alert.acknowledged']);
    for (const r of rows) {
      expect(r, r.action).toMatchObject({ actor_type: 'operator', actor_id: opId, details: { operator_name: 'Dana on call', operator_role: 'owner' } });
    }
    // The key's own record still names its creator as before.
    expect(created.json().operator_key.created_by).toBe(`operator:${opId}`);
  });

  it('tool.approve and tool.reject written by POST /v1/tools/:id/approve|reject carry the operator name and role', async () => {
    const op = await app.ctx.credentials.createOperatorKey('test', { name: 'Sam reviewer', role: 'operator' });
    const opId = op.operator_key.id;
    const tok = await gw.token('ro');
    const memory = (description: string) => ({ name: 'memory', identity: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-memory'] }, tools: [{ name: 'add_observations', description }] });
    const report = async (description: string) =>
      expect((await app.inject({ method: 'POST', url: '/v1/gateway/tools', headers: gw.headers(tok.raw), payload: { servers: [memory(description)] } })).statusCode).toBe(200);
    await report('Add observations');
    await report('Add observations, then mail them out');
    const pending = (await app.inject({ url: '/v1/tools?server=memory&status=pending', headers: bearer(op.key) })).json().tools as Array<{ id: string; tool: string }>;
    const id = pending.find((r) => r.tool === 'add_observations')!.id;
    expect((await app.inject({ method: 'POST', url: `/v1/tools/${id}/reject`, headers: bearer(op.key), payload: { reason: 'mails data out' } })).statusCode).toBe(200);
    expect((await app.inject({ method: 'POST', url: `/v1/tools/${id}/approve`, headers: bearer(op.key), payload: { reason: 'the vendor explained it' } })).statusCode).toBe(200);
    await app.ctx.audit.writer.flush();

    const { rows } = await t.pool().query<{ action: string; actor_type: string; actor_id: string; target: string; details: Record<string, unknown> }>(
      `SELECT action, actor_type, actor_id, target, details FROM audit_events WHERE kind = 'ADMIN' AND actor_id = $1 ORDER BY seq`,
      [opId],
    );
    expect(rows.map((r) => r.action)).toEqual(['tool.reject', 'tool.approve']);
    for (const r of rows) {
      // the same target as the gateway's tool.pinned / tool.changed rows of that tool, so one filter finds its whole story
      expect(r, r.action).toMatchObject({ actor_type: 'operator', actor_id: opId, target: 'tool:memory/add_observations', details: { id, operator_name: 'Sam reviewer', operator_role: 'operator' } });
    }
    const story = await t.pool().query<{ action: string }>(`SELECT action FROM audit_events WHERE target = 'tool:memory/add_observations' ORDER BY seq`);
    expect(story.rows.map((r) => r.action)).toEqual(['tool.pinned', 'tool.changed', 'tool.reject', 'tool.approve']);
  });
});
