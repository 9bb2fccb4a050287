import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Seed 000 US-012: user management is blocked for read-only and write tokens, also for tools the
// policy does not map on a server whose annotations it trusts.
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: 'test/fixtures/decisions/user-management.yaml' });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(async () => {
  await t.teardown();
});

const deleteUser = { server: 'memory', tool: 'delete_user', arguments: { id: 'u-1' }, annotations: { readOnlyHint: true } };

describe('POST /v1/decisions: unmapped user-management tools on a trusted server', () => {
  it('an mcp_ro_ token calling delete_user with a read-only hint → PERMISSION_DENIED naming auth:* and what to do', async () => {
    const tok = await gw.token('ro');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { ...deleteUser, session_id: s.session_id });
    expect(d).toMatchObject({ decision: 'deny', code: 'PERMISSION_DENIED' });
    expect(d.message).toContain('memory/delete_user: it needs scope auth:* (user management');
    expect(d.message).toContain('ask an operator for an mcp_admin_ token');
    expect(d.message).toContain('servers.memory.tools');
  });

  it('an mcp_rw_ token is denied too, an admin token allowed; a read of users and a mapped tool are unaffected', async () => {
    const rw = await gw.token('rw');
    const s = await gw.session(rw.raw);
    expect((await gw.decide(rw.raw, { ...deleteUser, tool: 'resetUserPassword', session_id: s.session_id })).code).toBe('PERMISSION_DENIED');
    expect((await gw.decide(rw.raw, { ...deleteUser, tool: 'get_user', session_id: s.session_id })).code).toBe('OK');
    expect((await gw.decide(rw.raw, { ...deleteUser, tool: 'update_user_note', session_id: s.session_id })).code).toBe('OK');
    const admin = await gw.token('admin');
    const s2 = await gw.session(admin.raw);
    expect((await gw.decide(admin.raw, { ...deleteUser, session_id: s2.session_id })).code).toBe('OK');
  });

  it('explain shows the scope and why: auth:* from the user-management name', async () => {
    const tok = await gw.token('ro');
    const res = await app.inject({ method: 'POST', url: '/v1/decisions/explain', headers: bearer(gw.owner), payload: { token_id: tok.id, ...deleteUser } });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ code: 'PERMISSION_DENIED', call: { required_scope: 'auth:*', scope_source: 'user-management-name' } });
  });
});
