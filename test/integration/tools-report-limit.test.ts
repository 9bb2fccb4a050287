import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// A gateway reports its tools on every tools/list, resources/list and prompts/list of an agent, so an
// agent listing in a loop cost the control plane a stored and checked report each time, unbounded.
// Reports are counted per agent token in Redis (TOOL_REPORTS_MAX_PER_MINUTE here 3; the policy's
// rate_limits.per_token.max_tool_reports_per_minute when it names one).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const LIMITED_POLICY = 'test/fixtures/decisions/policy-tool-report-limit.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY, toolReportsMaxPerMinute: 3 });
  gw = await new GatewayDriver(t, app).init();
}, 60_000);
afterAll(() => t.teardown());

const identity = { command: 'npx', args: ['-y', '@modelcontextprotocol/server-memory'] };
const report = (on: FastifyInstance, token: string, tools: Array<{ name: string }> = [{ name: 'read_graph' }]) =>
  on.inject({ method: 'POST', url: '/v1/gateway/tools', headers: gw.headers(token), payload: { servers: [{ name: 'memory', identity, tools }] } });

describe('tool reports per agent token', () => {
  it('over the limit: 429 TOO_MANY_TOOL_REPORTS with Retry-After, nothing stored; another token is not affected', async () => {
    const a = await gw.token('ro');
    const b = await gw.token('ro');
    for (let i = 0; i < 3; i++) expect((await report(app, a.raw)).statusCode).toBe(200);

    const refused = await report(app, a.raw, [{ name: 'read_graph' }, { name: 'limit_probe_tool' }]);
    expect(refused.statusCode).toBe(429);
    const body = refused.json<{ error: { code: string; message: string; details: { limit: string; max: number; retry_after_s: number } } }>();
    expect(body.error.code).toBe('TOO_MANY_TOOL_REPORTS');
    expect(body.error.details).toMatchObject({ limit: 'max_tool_reports_per_minute', max: 3 });
    const retryAfter = Number(refused.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(body.error.details.retry_after_s).toBe(retryAfter);
    // Refused before any work: the tool it carried was never pinned.
    const stored = (await app.inject({ url: '/v1/tools?server=memory', headers: bearer(gw.owner) })).json<{ tools: Array<{ tool: string }> }>();
    expect(stored.tools.map((r) => r.tool)).not.toContain('limit_probe_tool');

    // The count is the token's, not the gateway's or the installation's.
    expect((await report(app, b.raw)).statusCode).toBe(200);
  });

  it('reports of one token at once are counted exactly: as many pass as the limit allows, the rest are 429', async () => {
    const tok = await gw.token('ro');
    const answers = await Promise.all(Array.from({ length: 6 }, () => report(app, tok.raw)));
    expect(answers.map((r) => r.statusCode).sort()).toEqual([200, 200, 200, 429, 429, 429]);
  });

  it("the policy's rate_limits.per_token.max_tool_reports_per_minute wins over TOOL_REPORTS_MAX_PER_MINUTE", async () => {
    const limited = await t.app({ policyFile: LIMITED_POLICY, toolReportsMaxPerMinute: 3 });
    const tok = await gw.token('ro');
    expect((await report(limited, tok.raw)).statusCode).toBe(200);
    const refused = await report(limited, tok.raw);
    expect(refused.statusCode).toBe(429);
    expect(refused.json().error).toMatchObject({ code: 'TOO_MANY_TOOL_REPORTS', details: { max: 1 } });
  });

  it('Redis unreachable: the report is refused (503 SERVICE_UNAVAILABLE with Retry-After), not taken uncounted', async () => {
    // A port nothing listens on: every Redis command of this replica fails.
    const cut = await t.app({ policyFile: POLICY, redisUrl: 'redis://127.0.0.1:1' });
    const tok = await gw.token('ro');
    const res = await report(cut, tok.raw);
    expect(res.statusCode).toBe(503);
    expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
    expect(res.json().error.message).toMatch(/Redis/);
    expect(res.json().error.message).not.toMatch(/127\.0\.0\.1|ECONNREFUSED/);
    expect(res.headers['retry-after']).toBeDefined();
  });
});
