import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Security review: a revoked agent token used on POST /v1/decisions got a 401 and left no trace. A
// credential recognised as revoked or expired now leaves one AUTH_FAILURE row (at most one per credential a
// minute on each replica) and a warn line; unknown credentials are noise: a log line, no row.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(async () => {
  await t.teardown();
});

const read = (path: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path } });
const failures = async () => {
  await app.ctx.audit.writer.flush();
  return (await t.pool().query("SELECT * FROM audit_events WHERE kind = 'AUTH_FAILURE' ORDER BY seq")).rows;
};

describe('refused credentials leave a trace', () => {
  it('a revoked agent token on POST /v1/decisions: 401 and one AUTH_FAILURE row naming it; a second use within the minute adds none; an unknown token adds none', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');
    expect(await failures()).toHaveLength(0);
    await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'test' } });

    const use = () => app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers(tok.raw), payload: { ...read('a.md'), session_id: s.session_id } });
    expect((await use()).statusCode).toBe(401);
    const rows = await failures();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      kind: 'AUTH_FAILURE',
      actor_type: 'system',
      actor_id: 'auth',
      action: 'credential.revoked',
      target: `agent_token:${tok.id}`,
      ip: '127.0.0.1',
      details: { presented_type: 'agent_token', presented_id: tok.id, reason: 'revoked', token_type: 'rw', method: 'POST', route: '/v1/decisions' },
    });
    expect(rows[0].details.gateway_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(t.logs.lines.some((l) => l.includes('a revoked agent token was presented and refused (401)') && l.includes(tok.id))).toBe(true);

    expect((await use()).statusCode).toBe(401);
    expect(await failures()).toHaveLength(1);

    const unknown = await app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers('mcp_rw_AbCdEfGhIjKlMnOpQrStUv123456'), payload: { ...read('a.md'), session_id: s.session_id } });
    expect(unknown.statusCode).toBe(401);
    expect(await failures()).toHaveLength(1);
  });
});
