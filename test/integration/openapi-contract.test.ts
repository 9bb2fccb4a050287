import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DECISION_CODES, SERVICE_UNAVAILABLE_RETRY_AFTER_S } from '../../src/errors.js';
import { COUNTER_LABELS } from '../../src/limits/limits.js';
import type { OperatorPrincipal } from '../../src/tokens/authenticator.js';
import { bearer, TestContext } from '../helpers/context.js';
import { PgProxy } from './audit-fixtures.js';

// A gateway written from /docs/openapi.json alone must learn from it which credentials each gateway
// route needs, every status it can get, and the exact shape of a decision; and the statuses it gets
// must say what it needs to know (Retry-After) without what it must not (driver errors, addresses).

interface Op {
  tags?: string[];
  security?: Record<string, string[]>[];
  requestBody?: unknown;
  responses: Record<string, { content?: Record<string, { schema?: Schema }> }>;
}
interface Schema {
  type?: string;
  enum?: string[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  additionalProperties?: boolean | Schema;
}

const t = new TestContext();
let app: FastifyInstance;
let spec: { paths: Record<string, Record<string, Op>> };

beforeAll(async () => {
  await t.setup();
  app = await t.app();
  spec = (await app.inject({ url: '/docs/openapi.json' })).json();
});
afterAll(() => t.teardown());

const op = (method: string, path: string): Op => {
  const found = spec.paths[path]?.[method];
  expect(found, `${method.toUpperCase()} ${path} in the OpenAPI document`).toBeDefined();
  return found!;
};
const okSchema = (o: Op) => (o.responses['200'] ?? o.responses['201'])!.content!['application/json']!.schema!;

const GATEWAY_ROUTES: [string, string][] = [
  ['post', '/v1/sessions'],
  ['post', '/v1/sessions/{id}/close'],
  ['post', '/v1/decisions'],
  ['post', '/v1/decisions/{id}/result'],
  ['post', '/v1/gateway/tools'],
  ['get', '/v1/gateway/approvals/{id}'],
];

describe('the OpenAPI document', () => {
  it('every gateway route declares that it needs the gateway key and the agent token (X-Agent-Token)', () => {
    for (const [method, path] of GATEWAY_ROUTES) {
      expect(op(method, path).security, `${method} ${path}`).toContainEqual({ bearer: [], agentToken: [] });
    }
    // No gateway route left that a client generated from the document would call without the agent token.
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, o] of Object.entries(item)) {
        if (o.tags?.includes('gateway')) expect(o.security, `${method} ${path}`).toContainEqual({ bearer: [], agentToken: [] });
      }
    }
  });

  it('declares 413 and 415 on every route that reads a body, and 503 on every route that checks a credential', () => {
    const missing: string[] = [];
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, o] of Object.entries(item)) {
        const statuses = Object.keys(o.responses);
        if (!statuses.some((s) => s.startsWith('2'))) continue;
        if (['post', 'put', 'patch', 'delete'].includes(method) || o.requestBody) {
          for (const s of ['413', '415']) if (!statuses.includes(s)) missing.push(`${method} ${path} ${s}`);
        }
        if (statuses.includes('401') && !statuses.includes('503')) missing.push(`${method} ${path} 503`);
      }
    }
    expect(missing).toEqual([]);
    // The reviewer's cases by name.
    for (const s of ['413', '415', '503']) expect(Object.keys(op('post', '/v1/decisions').responses)).toContain(s);
    for (const s of ['413', '415', '503']) expect(Object.keys(op('post', '/v1/gateway/tools').responses)).toContain(s);
    for (const s of ['413', '415']) expect(Object.keys(op('post', '/v1/sessions').responses)).toContain(s);
  });

  it('types a decision exactly: code is the enum of decision codes, last_calls items are closed, limits names its counters', () => {
    const answer = okSchema(op('post', '/v1/decisions'));
    expect(answer.properties!['code']!.enum).toEqual(Object.keys(DECISION_CODES));

    const call = answer.properties!['session']!.properties!['last_calls']!.items!;
    expect(call.additionalProperties).toBe(false);
    expect(call.properties!['args']!.type).toBe('string');
    expect(call.properties!['at']!.type).toBe('integer');
    expect(call.required).not.toContain('outcome');
    expect(call.required).toEqual(expect.arrayContaining(['id', 'at', 'server', 'tool', 'args', 'decision', 'code']));
    expect(call.properties!['outcome']!.additionalProperties).toBe(false);

    const limits = answer.properties!['limits']!;
    const named = ['session_calls', 'server_calls', 'server_reads', 'server_writes', 'session_calls_per_minute', 'token_calls_per_minute', 'token_calls_per_day'];
    expect(Object.keys(limits.properties ?? {})).toEqual(expect.arrayContaining([...named, ...Object.keys(COUNTER_LABELS)]));
    expect(limits.properties!['session_calls']!.required).toEqual(['used', 'max']);
  });
});

describe('what a gateway is answered', () => {
  it('429 TOO_MANY_SESSIONS with a known wait carries it as Retry-After (seconds), the same as details.retry_after_s', async () => {
    const owner = (await app.ctx.auth.authenticate(await t.operatorKey(app, 'owner'))) as OperatorPrincipal;
    const gw = await app.ctx.credentials.createGatewayKey(owner, 'retry-after gateway');
    const token = await app.ctx.credentials.createAgentToken(owner, { type: 'ro', role: 'code_agent', project_id: 'alpha', environment: 'development' });
    expect((await app.ctx.sessions.ensureState()) !== 'unavailable').toBe(true);
    const headers = { ...bearer(gw.key), 'x-agent-token': token.token };
    app.ctx.sessions.setCapsSource(() => ({ maxOpen: null, maxNewPerHour: 1 }));
    expect((await app.inject({ method: 'POST', url: '/v1/sessions', headers, payload: {} })).statusCode).toBe(201);
    const refused = await app.inject({ method: 'POST', url: '/v1/sessions', headers, payload: {} });
    expect(refused.statusCode).toBe(429);
    expect(refused.json().error).toMatchObject({ code: 'TOO_MANY_SESSIONS', details: { limit: 'max_new_sessions_per_hour' } });
    const wait = refused.json().error.details.retry_after_s as number;
    expect(wait).toBeGreaterThan(0);
    expect(refused.headers['retry-after']).toBe(String(wait));
  });

  it('Postgres down: 503s name what is unavailable, never the driver error or an address (that goes to the log), and carry Retry-After', { timeout: 30_000 }, async () => {
    const proxy = new PgProxy();
    await proxy.reserve();
    await proxy.up();
    try {
      const down = await t.app({ databaseUrl: proxy.url(t.name) });
      const owner = (await down.ctx.auth.authenticate(await t.operatorKey(down, 'owner'))) as OperatorPrincipal;
      const gw = await down.ctx.credentials.createGatewayKey(owner, 'cached gateway');
      const unusedGw = await down.ctx.credentials.createGatewayKey(owner, 'never used gateway');
      const token = await down.ctx.credentials.createAgentToken(owner, { type: 'ro', role: 'code_agent', project_id: 'alpha', environment: 'development' });
      const unusedToken = await down.ctx.credentials.createAgentToken(owner, { type: 'ro', role: 'code_agent', project_id: 'alpha', environment: 'development' });
      expect((await down.ctx.sessions.ensureState()) !== 'unavailable').toBe(true);
      const headers = { ...bearer(gw.key), 'x-agent-token': token.token };
      // Both credentials are now cached (TOKEN_CACHE_TTL_MS): with Postgres gone, the open gets past them.
      expect((await down.inject({ method: 'POST', url: '/v1/sessions', headers, payload: {} })).statusCode).toBe(201);

      await proxy.down();
      const leaks = ['127.0.0.1', String(proxy.port), 'ECONNREFUSED', 'connect ', 'terminated', t.name];
      const expectUnavailable = (res: Awaited<ReturnType<FastifyInstance['inject']>>, what: string) => {
        expect(res.statusCode, `${what}: ${res.body}`).toBe(503);
        expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
        for (const leak of leaks) expect(res.body, what).not.toContain(leak);
        expect(Number(res.headers['retry-after']), `${what}: Retry-After`).toBe(SERVICE_UNAVAILABLE_RETRY_AFTER_S);
      };

      const opened = await down.inject({ method: 'POST', url: '/v1/sessions', headers, payload: {} });
      expectUnavailable(opened, 'POST /v1/sessions');
      expect(opened.json().error.message).toMatch(/Postgres .*no session was opened/);
      // The operator gets the driver's error, with the address, in the log.
      const logged = t.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'session not opened: Postgres unavailable');
      expect(logged.length).toBeGreaterThan(0);
      expect(String(logged.at(-1)!['err'])).toMatch(/ECONNREFUSED|terminated/);

      // A gateway key that cannot be checked: no decision (the caller is unknown), a declared 503.
      const payload = { server: 'filesystem', tool: 'read_text_file', arguments: {}, session_id: '0197a0a0-0000-7000-8000-000000000000' };
      expectUnavailable(await down.inject({ method: 'POST', url: '/v1/decisions', headers: { ...bearer(unusedGw.key), 'x-agent-token': token.token }, payload }), 'POST /v1/decisions');
      const report = { servers: [{ name: 'filesystem', identity: { command: 'npx' }, tools: [] }] };
      expectUnavailable(await down.inject({ method: 'POST', url: '/v1/gateway/tools', headers: { ...bearer(unusedGw.key), 'x-agent-token': token.token }, payload: report }), 'POST /v1/gateway/tools (gateway key)');
      // The agent token of a tool report that cannot be checked: a 503 too, not a 500.
      expectUnavailable(await down.inject({ method: 'POST', url: '/v1/gateway/tools', headers: { ...bearer(gw.key), 'x-agent-token': unusedToken.token }, payload: report }), 'POST /v1/gateway/tools (agent token)');
    } finally {
      await proxy.down();
    }
  });
});
