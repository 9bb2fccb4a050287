import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Revoking a gateway key, an operator key or a grant, and closing a session, take an optional reason
// (`{"reason": "..."}`), recorded in the action's audit row as an agent token's revoke reason is. They
// took no body before, and a reason sent to them was dropped without a word; any other field is refused.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  await app.ctx.sessions.ensureState();
  gw = await new GatewayDriver(t, app).init();
});
afterAll(() => t.teardown());

/** The `details` of the newest audit row with this action and target. */
async function detailsOf(action: string, target: string): Promise<Record<string, unknown> | undefined> {
  await app.ctx.audit.writer.flush();
  const { rows } = await t.pool().query('SELECT details FROM audit_events WHERE action = $1 AND target = $2 ORDER BY ts DESC LIMIT 1', [action, target]);
  return rows[0]?.details;
}

/** Makes one object of each kind and returns how to act on it (method, URL, headers) and its audit row. */
const cases: Array<[string, () => Promise<{ method: 'POST' | 'DELETE'; url: string; headers: Record<string, string>; action: string; target: string }>]> = [
  [
    'POST /v1/gateway-keys/:id/revoke',
    async () => {
      const id = (await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(gw.owner), payload: { name: 'spare gateway' } })).json().gateway_key.id as string;
      return { method: 'POST', url: `/v1/gateway-keys/${id}/revoke`, headers: bearer(gw.owner), action: 'gateway_key.revoked', target: `gateway_key:${id}` };
    },
  ],
  [
    'POST /v1/operator-keys/:id/revoke',
    async () => {
      const id = (await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(gw.owner), payload: { name: 'spare viewer', role: 'viewer' } })).json().operator_key.id as string;
      return { method: 'POST', url: `/v1/operator-keys/${id}/revoke`, headers: bearer(gw.owner), action: 'operator_key.revoked', target: `operator_key:${id}` };
    },
  ],
  [
    'DELETE /v1/grants/:id',
    async () => {
      const tok = await gw.token('rw');
      const id = (await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, reason: 'INC-50 prod logs', expires_in: 600 } })).json().id as string;
      return { method: 'DELETE', url: `/v1/grants/${id}`, headers: bearer(gw.owner), action: 'grant.revoke', target: `agent_token:${tok.id}` };
    },
  ],
  [
    'POST /v1/sessions/:id/close (operator)',
    async () => {
      const tok = await gw.token('rw');
      const id = (await gw.session(tok.raw)).session_id;
      return { method: 'POST', url: `/v1/sessions/${id}/close`, headers: bearer(gw.owner), action: 'session.closed', target: `session:${id}` };
    },
  ],
  [
    'POST /v1/sessions/:id/close (gateway)',
    async () => {
      const tok = await gw.token('rw');
      const id = (await gw.session(tok.raw)).session_id;
      return { method: 'POST', url: `/v1/sessions/${id}/close`, headers: gw.headers(tok.raw), action: 'session.closed', target: `session:${id}` };
    },
  ],
];

describe('an optional reason on revokes and closes', () => {
  it.each(cases)('%s: no body, {} and {reason} all act; the reason is in the audit row; another field is 400 and nothing happens', async (_route, make) => {
    for (const body of [undefined, {}]) {
      const c = await make();
      const res = await app.inject({ method: c.method, url: c.url, headers: c.headers, ...(body === undefined ? {} : { payload: body }) });
      expect(res.statusCode, `${JSON.stringify(body)}: ${res.body}`).toBeLessThan(300);
      expect(await detailsOf(c.action, c.target)).not.toHaveProperty('reason');
    }

    const c = await make();
    const typo = await app.inject({ method: c.method, url: c.url, headers: c.headers, payload: { reson: 'INC-51' } });
    expect(typo.statusCode).toBe(400);
    expect(typo.json().error.code).toBe('INVALID_REQUEST');
    expect(typo.json().error.message).toContain('reson');
    expect(await detailsOf(c.action, c.target)).toBeUndefined();

    const twoLines = await app.inject({ method: c.method, url: c.url, headers: c.headers, payload: { reason: 'INC-51\nforged line' } });
    expect(twoLines.statusCode).toBe(400);
    expect(await detailsOf(c.action, c.target)).toBeUndefined();

    const res = await app.inject({ method: c.method, url: c.url, headers: c.headers, payload: { reason: 'INC-51 leaked in a paste' } });
    expect(res.statusCode, res.body).toBeLessThan(300);
    expect(await detailsOf(c.action, c.target)).toMatchObject({ reason: 'INC-51 leaked in a paste' });
  });

  it('a route whose reason is required answers a request without a body with what to send (it said "body: must be object")', async () => {
    const tok = await gw.token('rw');
    for (const [method, url] of [
      ['POST', `/v1/keys/${tok.id}/resume`],
      ['POST', `/v1/keys/${tok.id}/revoke`],
      ['DELETE', '/v1/kills/01938a5e-0000-7000-8000-000000000000'],
    ] as const) {
      // With Content-Type: application/json and no body (the runbook's curl header set without -d): the same hint.
      const empty = await app.inject({ method, url, headers: { ...bearer(gw.owner), 'content-type': 'application/json' } });
      expect(empty.statusCode, url).toBe(400);
      expect(empty.json().error.message).toBe('body: is empty; send a JSON object with its required field (reason)');
      const res = await app.inject({ method, url, headers: bearer(gw.owner) });
      expect(res.statusCode, url).toBe(400);
      expect(res.json().error).toEqual({
        code: 'INVALID_REQUEST',
        message: 'body: is missing; send a JSON object with its required field (reason) with Content-Type: application/json',
        details: [{ field: 'body', problem: 'is missing; send a JSON object with its required field (reason) with Content-Type: application/json' }],
      });
    }
  });
});
