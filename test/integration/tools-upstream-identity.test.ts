import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// What a gateway reports it really runs (POST /v1/gateway/tools, `identity`) counts for the production
// patterns beside the policy's identity of the server. A compliance review had a gateway report `postgres`
// run against postgresql://prod-db.internal:5432/app_production while the policy said localhost/dev_db:
// the report was accepted without a word and development calls to postgres/query were allowed.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
});
afterAll(() => t.teardown());

/** A gateway with its own, named gateway key. */
async function gateway(name: string): Promise<GatewayDriver & { id: string }> {
  const driver = await new GatewayDriver(t, app).init();
  const res = await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(driver.owner), payload: { name } });
  expect(res.statusCode).toBe(201);
  driver.gatewayKey = res.json().key;
  return Object.assign(driver, { id: res.json().gateway_key.id as string });
}

const QUERY = { name: 'query', description: 'Run a read-only SQL query', inputSchema: { type: 'object', properties: { sql: { type: 'string' } } } };
const PROD_DSN = 'postgresql://app:s3cretPw@prod-db.internal:5432/app_production';

async function reportPostgres(gw: GatewayDriver, token: string, dsn: string): Promise<void> {
  const identity = { command: 'npx', args: ['-y', '@modelcontextprotocol/server-postgres', dsn] };
  const res = await app.inject({ method: 'POST', url: '/v1/gateway/tools', headers: gw.headers(token), payload: { servers: [{ name: 'postgres', identity, tools: [QUERY] }] } });
  expect(res.statusCode, res.body).toBe(200);
  expect(res.json().servers[0].tools[0]).toMatchObject({ name: 'query', status: 'approved' });
}

const query = (sessionId: string) => ({ server: 'postgres', tool: 'query', arguments: { sql: 'select 1' }, session_id: sessionId });

async function mismatchAlerts(owner: string, gatewayId: string): Promise<Array<Record<string, unknown> & { message: string; details: Record<string, unknown> }>> {
  const res = await app.inject({ method: 'GET', url: '/v1/alerts?kind=UPSTREAM_MISMATCH', headers: bearer(owner) });
  expect(res.statusCode, res.body).toBe(200);
  return res.json().alerts.filter((a: { details: { gateway_id?: string } }) => a.details.gateway_id === gatewayId);
}

describe('the upstream identity a gateway reports', () => {
  it('a production connection string → development calls through that gateway are ENVIRONMENT_FORBIDDEN and halted, naming the host, never the password', async () => {
    const gw = await gateway('gateway on prod-db');
    const tok = await gw.token('rw');
    await reportPostgres(gw, tok.raw, PROD_DSN);
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, query(s.session_id));
    expect(d).toMatchObject({ decision: 'deny', code: 'ENVIRONMENT_FORBIDDEN' });
    expect(d.session).toMatchObject({ state: 'halted', trigger: 'PRODUCTION_ENVIRONMENT' });
    expect(d.message).toContain('reported');
    expect(d.message).toContain(gw.id);
    expect(d.message).toMatch(/"prod-db\.internal"|"app_production"/);
    expect(d.message).not.toContain('s3cretPw');
    // Halted like a production resource: the session's next call is refused whatever it is.
    expect(await gw.decide(tok.raw, { server: 'memory', tool: 'read_graph', arguments: {}, session_id: s.session_id })).toMatchObject({ decision: 'deny', code: 'SESSION_HALTED' });

    // Explain has no gateway: it answers what a call through a gateway that reported production gets.
    const other = await gw.token('rw');
    const explained = (await app.inject({ method: 'POST', url: '/v1/decisions/explain', headers: bearer(gw.owner), payload: { token_id: other.id, server: 'postgres', tool: 'query', arguments: {} } })).json();
    expect(explained).toMatchObject({ decision: 'deny', code: 'ENVIRONMENT_FORBIDDEN' });
    expect(explained.message).toContain(gw.id);

    // The identity is still stored masked for display.
    const tools = (await app.inject({ url: '/v1/tools?server=postgres', headers: bearer(gw.owner) })).json().tools;
    expect(JSON.stringify(tools)).not.toContain('s3cretPw');
  });

  it('a production grant covers it, as it covers a production resource', async () => {
    const gw = await gateway('granted gateway on prod-db');
    const tok = await gw.token('rw');
    await reportPostgres(gw, tok.raw, PROD_DSN);
    const grant = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, reason: 'INC-7: read production', expires_in: 600 } });
    expect(grant.statusCode, grant.body).toBe(201);
    await until(() => app.ctx.grants.has('production', tok.id, 'any'), 5_000, 'the grant to load');
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, query(s.session_id))).code).toBe('OK');
  });

  it("another gateway running the policy's own upstream is allowed, and raises no alert", async () => {
    const prod = await gateway('the production one');
    const dev = await gateway('gateway on localhost');
    const prodTok = await prod.token('rw');
    const tok = await dev.token('rw');
    await reportPostgres(prod, prodTok.raw, PROD_DSN);
    await reportPostgres(dev, tok.raw, 'postgresql://localhost:5432/dev_db');
    const s = await dev.session(tok.raw);
    expect((await dev.decide(tok.raw, query(s.session_id))).code).toBe('OK');
    expect(await mismatchAlerts(dev.owner, dev.id)).toEqual([]);
  });

  it('the last report wins: a gateway that now runs a non-production upstream is allowed again', async () => {
    const gw = await gateway('moved off prod-db');
    const tok = await gw.token('rw');
    await reportPostgres(gw, tok.raw, PROD_DSN);
    await reportPostgres(gw, tok.raw, 'postgresql://localhost:5432/dev_db');
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, query(s.session_id))).code).toBe('OK');
  });

  it("identities the policy's identity of the server does not name → one UPSTREAM_MISMATCH alert per gateway, server and identities", async () => {
    const gw = await gateway('gateway on staging-db');
    const tok = await gw.token('rw');
    await reportPostgres(gw, tok.raw, 'postgresql://app:s3cretPw@staging-db.internal:5432/app');
    // Not production: the call is allowed (the policy says what an upstream on staging-db may do).
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, query(s.session_id))).code).toBe('OK');
    await until(async () => (await mismatchAlerts(gw.owner, gw.id)).length === 1, 5_000, 'the UPSTREAM_MISMATCH alert');
    const [alert] = await mismatchAlerts(gw.owner, gw.id);
    expect(alert).toMatchObject({ kind: 'UPSTREAM_MISMATCH', server: 'postgres' });
    expect(alert!.details).toMatchObject({ gateway_id: gw.id, reported_identities: ['app', 'staging-db.internal'], policy_identities: ['dev_db', 'localhost'] });
    expect(alert!.message).toContain('staging-db.internal');
    expect(JSON.stringify(alert)).not.toContain('s3cretPw');
    // The gateway reports on every tools/list: the same identities raise nothing more.
    await reportPostgres(gw, tok.raw, 'postgresql://app:s3cretPw@staging-db.internal:5432/app');
    expect(await mismatchAlerts(gw.owner, gw.id)).toHaveLength(1);
    // Another upstream is another alert.
    await reportPostgres(gw, tok.raw, 'postgresql://qa-db.internal:5432/app');
    await until(async () => (await mismatchAlerts(gw.owner, gw.id)).length === 2, 5_000, 'the second UPSTREAM_MISMATCH alert');
  });

  it('a URL identity is matched as reported but recorded and shown without its query or user: any parameter may be a credential (?key=)', async () => {
    const gw = await gateway('gateway on a keyed URL');
    const tok = await gw.token('rw');
    const secrets = ['KeySecret123', 'SigSecret456', 'CodeSecret789', 'FragSecret000', 'UserTok3n'];
    const url = `https://UserTok3n@mcp.example.com/sse?key=KeySecret123&sig=SigSecret456&code=CodeSecret789#k=FragSecret000`;
    const res = await app.inject({ method: 'POST', url: '/v1/gateway/tools', headers: gw.headers(tok.raw), payload: { servers: [{ name: 'github', identity: { url }, tools: [{ name: 'get_me' }] }] } });
    expect(res.statusCode, res.body).toBe(200);
    // Matched on the host as reported: the policy's identity of github names api.github.com.
    await until(async () => (await mismatchAlerts(gw.owner, gw.id)).length === 1, 5_000, 'the UPSTREAM_MISMATCH alert');
    const [alert] = await mismatchAlerts(gw.owner, gw.id);
    expect(alert!.details).toMatchObject({ reported_identities: ['mcp.example.com'], policy_identities: ['api.github.com'], identity: { url: 'https://mcp.example.com/sse' } });
    const tools = (await app.inject({ url: '/v1/tools?server=github', headers: bearer(gw.owner) })).json().tools as Array<{ upstream_identity: unknown }>;
    expect(tools.map((r) => r.upstream_identity)).toContainEqual({ url: 'https://mcp.example.com/sse' });
    // Nowhere in clear: the answers above, every row of the tables that record a report, the log.
    const tables = ['tool_definitions', 'gateway_upstreams', 'alerts', 'audit_events'];
    const rows = await Promise.all(tables.map(async (table) => (await t.pool().query(`SELECT string_agg(x::text, ' ') AS all FROM ${table} x`)).rows[0].all as string));
    expect(rows[0]).toContain('mcp.example.com/sse');
    const recorded = JSON.stringify([alert, tools, rows]) + t.logs.text;
    for (const secret of secrets) expect(recorded).not.toContain(secret);
  });
});
