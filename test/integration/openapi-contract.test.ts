import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DECISION_CODES, ERROR_CODES, SERVICE_UNAVAILABLE_RETRY_AFTER_S } from '../../src/errors.js';
import { COUNTER_LABELS } from '../../src/limits/limits.js';
import type { OperatorPrincipal } from '../../src/tokens/authenticator.js';
import { bearer, TestContext } from '../helpers/context.js';
import { PgProxy } from './audit-fixtures.js';

// A gateway written from /docs/openapi.json alone must learn from it which credentials each gateway
// route needs, every status it can get, and the exact shape of a decision; and the statuses it gets
// must say what it needs to know (Retry-After) without what it must not (driver errors, addresses).

interface Op {
  operationId?: string;
  tags?: string[];
  security?: Record<string, string[]>[];
  parameters?: { name: string; in: string }[];
  requestBody?: { required?: boolean };
  responses: Record<string, { headers?: Record<string, { schema?: Schema }>; content?: Record<string, { schema?: Schema }> }>;
}
interface Schema {
  type?: string;
  enum?: string[];
  anyOf?: Schema[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  additionalProperties?: boolean | Schema;
}

const t = new TestContext();
let app: FastifyInstance;
let spec: { paths: Record<string, Record<string, Op>>; components: { securitySchemes: Record<string, Record<string, unknown>> } };

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

const operations = () => Object.entries(spec.paths).flatMap(([path, item]) => Object.entries(item).map(([method, o]) => ({ method, path, o, name: `${method.toUpperCase()} ${path}` })));

/** The routes that refused no query parameter and declared no 400 (reviewer, 2026-12-06). */
const NO_QUERY_ROUTES = ['/v1/flags', '/v1/policy', '/v1/policy/replicas', '/metrics', '/v1/ui/settings', '/v1/admin/log-level'];

describe('the OpenAPI document describes each answer as it is sent', () => {
  it('declares each media type a 200 answers, separately: no string schema under application/json', () => {
    const types = (method: string, path: string) => Object.keys(op(method, path).responses['200']!.content ?? {});
    expect(types('get', '/metrics')).toEqual(['text/plain; version=0.0.4']);
    expect(types('get', '/v1/audit/export')).toEqual(['text/csv', 'application/x-ndjson']);
    expect(types('get', '/v1/alerts/stream')).toEqual(['text/event-stream']);
    expect(types('get', '/v1/usage')).toEqual(['application/json', 'text/csv']);
    expect(types('get', '/v1/usage/monthly')).toEqual(['application/json', 'text/csv']);
    expect(types('get', '/v1/incidents/timeline')).toEqual(['application/json', 'application/x-ndjson', 'text/csv']);
    for (const path of ['/v1/usage', '/v1/usage/monthly', '/v1/incidents/timeline']) {
      const json = op('get', path).responses['200']!.content!['application/json']!.schema!;
      expect(json.type, path).toBe('object');
      expect(json.anyOf, path).toBeUndefined();
    }
    for (const { name, o } of operations()) {
      for (const [status, r] of Object.entries(o.responses)) {
        const json = r.content?.['application/json']?.schema;
        if (json) expect([json.type, ...(json.anyOf ?? []).map((s) => s.type)], `${name} ${status}`).not.toContain('string');
      }
    }
  });

  it('each route answers with a media type its status declares; the CSV and JSON bodies are as before', async () => {
    const key = await t.operatorKey(app, 'owner');
    const window = 'from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z';
    const cases: [string, string][] = [
      ['/metrics', `/metrics`],
      ['/v1/audit/export', `/v1/audit/export?${window}`],
      ['/v1/audit/export', `/v1/audit/export?${window}&format=jsonl`],
      ['/v1/usage', `/v1/usage?${window}`],
      ['/v1/usage', `/v1/usage?${window}&format=csv`],
      ['/v1/usage/monthly', `/v1/usage/monthly?${window}`],
      ['/v1/usage/monthly', `/v1/usage/monthly?${window}&format=csv`],
      ['/v1/incidents/timeline', `/v1/incidents/timeline?${window}`],
      ['/v1/incidents/timeline', `/v1/incidents/timeline?${window}&format=csv`],
      ['/v1/incidents/timeline', `/v1/incidents/timeline?${window}&format=jsonl`],
    ];
    for (const [path, url] of cases) {
      const res = await app.inject({ url, headers: bearer(key) });
      expect(res.statusCode, `${url}: ${res.body}`).toBe(200);
      const mediaType = String(res.headers['content-type']).replace(/; charset=utf-8$/, '');
      expect(Object.keys(op('get', path).responses['200']!.content!), url).toContain(mediaType);
    }
    const csv = await app.inject({ url: `/v1/usage?${window}&format=csv`, headers: bearer(key) });
    expect(csv.body.split('\n')[0]).toBe('group,token_id,token_type,project_id,server,tool,capability,day,calls,allowed,denied,results,successes,errors,success_rate,last_used');
    const json = await app.inject({ url: `/v1/usage?${window}`, headers: bearer(key) });
    expect(json.json()).toEqual({ from: '2026-01-01T00:00:00.000Z', to: '2027-01-01T00:00:00.000Z', tokens: [] });
  });

  it('the Unleash webhook declares its own scheme: the secret as the raw Authorization value (not Bearer)', () => {
    expect(spec.components.securitySchemes['unleashWebhookSecret']).toMatchObject({ type: 'apiKey', in: 'header', name: 'Authorization' });
    expect(op('post', '/v1/flags/events').security).toEqual([{ unleashWebhookSecret: [] }]);
  });

  it('/healthz and /readyz need no credential: security []', () => {
    expect(op('get', '/healthz').security).toEqual([]);
    expect(op('get', '/readyz').security).toEqual([]);
  });

  it('declares the headers sent: Retry-After on every 503 error and on the 429, X-Truncated and X-Next-Cursor on the timeline, Last-Event-ID asked by the stream', () => {
    for (const { name, o } of operations()) {
      const unavailable = o.responses['503'];
      if (!unavailable || name === 'GET /readyz') continue;
      expect(Object.keys(unavailable.headers ?? {}), name).toEqual(['Retry-After']);
    }
    expect(op('get', '/readyz').responses['503']!.headers).toBeUndefined();
    expect(Object.keys(op('post', '/v1/sessions').responses['429']!.headers ?? {})).toEqual(['Retry-After']);
    expect(Object.keys(op('get', '/v1/incidents/timeline').responses['200']!.headers ?? {})).toEqual(['X-Truncated', 'X-Next-Cursor']);
    // Only the timeline sends them (the audit export does not).
    const truncating = operations().filter(({ o }) => Object.values(o.responses).some((r) => r.headers && 'X-Truncated' in r.headers));
    expect(truncating.map((x) => x.name)).toEqual(['GET /v1/incidents/timeline']);
    expect(op('get', '/v1/alerts/stream').parameters).toContainEqual(expect.objectContaining({ name: 'Last-Event-ID', in: 'header' }));
  });

  it('declares 400 on every route that checks a credential (a repeated Authorization is 400), the six that lacked it included', () => {
    for (const path of NO_QUERY_ROUTES) expect(Object.keys(op('get', path).responses), path).toContain('400');
    for (const { name, o } of operations()) if ('401' in o.responses) expect(Object.keys(o.responses), name).toContain('400');
  });

  it('optional bodies are requestBody.required: false; the others stay required', () => {
    const optional = [
      ['post', '/v1/sessions'],
      ['post', '/v1/sessions/{id}/close'],
      ['post', '/v1/gateway-keys/{id}/revoke'],
      ['post', '/v1/operator-keys/{id}/revoke'],
      ['post', '/v1/alerts/{id}/ack'],
      ['delete', '/v1/grants/{id}'],
    ];
    for (const [method, path] of optional) expect(op(method!, path!).requestBody?.required, `${method} ${path}`).toBe(false);
    const required = operations().filter(({ o }) => o.requestBody?.required !== false && o.requestBody);
    expect(required.length).toBeGreaterThan(10);
    expect(op('post', '/v1/keys').requestBody?.required).toBe(true);
    expect(JSON.stringify(spec)).not.toContain('x-body-optional');
  });

  it('what a code generator and a linter expect: a summary on every operation, a server, a license, the version of package.json', () => {
    for (const { name, o } of operations()) expect((o as { summary?: string }).summary, name).toMatch(/\S/);
    const doc = spec as unknown as { servers?: { url: string }[]; info: { version: string; license?: { name: string } } };
    expect(doc.servers).toEqual([expect.objectContaining({ url: '/' })]);
    expect(doc.info.license?.name).toBe(JSON.parse(readFileSync('package.json', 'utf8')).license);
    expect(doc.info.version).toBe(JSON.parse(readFileSync('package.json', 'utf8')).version);
  });

  it('every operation has a camelCase operationId, each unique', () => {
    const ids = operations().map(({ name, o }) => {
      expect(o.operationId, name).toMatch(/^[a-z][a-zA-Z0-9]*$/);
      return o.operationId;
    });
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("types the error body's code as the enum of the error table, and a 400's details as its {field, problem} list", () => {
    for (const { name, o } of operations()) {
      for (const [status, r] of Object.entries(o.responses)) {
        const error = r.content?.['application/json']?.schema?.properties?.['error'];
        if (!status.startsWith('4') && !status.startsWith('5')) continue;
        if (!error) continue; // /readyz's 503 is its report
        expect(error.properties!['code']!.enum, `${name} ${status}`).toEqual(Object.keys(ERROR_CODES));
        if (status === '400') {
          const details = error.properties!['details']!;
          expect(details.type, `${name} 400`).toBe('array');
          expect(details.items!.required).toEqual(['field', 'problem']);
        }
      }
    }
  });

  it('declares no 409 on reads, nor 404 on parameterless lists', () => {
    for (const path of ['/v1/sessions', '/v1/kills', '/v1/tools', '/v1/approvals']) expect(Object.keys(op('get', path).responses), path).not.toContain('409');
    for (const path of ['/v1/scopes', '/v1/gateway-keys']) {
      expect(Object.keys(op('get', path).responses), path).not.toContain('404');
      expect(Object.keys(op('get', path).responses), path).toContain('400');
    }
  });
});

describe('query parameters', () => {
  it('an unknown query parameter is refused (400 naming it) on the six routes that took any', async () => {
    const key = await t.operatorKey(app, 'owner');
    for (const path of NO_QUERY_ROUTES) {
      const res = await app.inject({ url: `${path}?x=1`, headers: bearer(key) });
      expect(res.statusCode, `${path}: ${res.body}`).toBe(400);
      expect(res.json().error).toMatchObject({ code: 'INVALID_REQUEST', details: [{ field: 'x', problem: 'is not an accepted field' }] });
      // Without it, as before.
      expect((await app.inject({ url: path, headers: bearer(key) })).statusCode, path).toBe(200);
    }
  });

  it('every /v1/ read refuses a parameter it does not take (400 naming it), before looking anything up', async () => {
    const key = await t.operatorKey(app, 'owner');
    const reads = operations().filter(({ method, path }) => method === 'get' && path.startsWith('/v1/') && !path.startsWith('/v1/gateway/'));
    expect(reads.length).toBeGreaterThan(25);
    for (const { method, path, name } of reads) {
      // An id of the right form that names nothing: without the parameter these are 404.
      const url = path.replace(/\{[a-z_]+\}/g, '00000000-0000-4000-8000-000000000000');
      const res = await app.inject({ url: `${url}?nonsuch=1`, headers: bearer(key) });
      expect(res.statusCode, `${name}: ${res.body}`).toBe(400);
      expect(res.json().error, name).toMatchObject({ code: 'INVALID_REQUEST', details: [{ field: 'nonsuch', problem: 'is not an accepted field' }] });
      expect(Object.keys(op(method, path).responses), name).toContain('400');
    }
  });

  it('a write and a gateway call refuse one too: nothing is created or decided', async () => {
    const key = await t.operatorKey(app, 'owner');
    const created = await app.inject({ method: 'POST', url: '/v1/keys?expires_in=3600', headers: bearer(key), payload: { type: 'ro', role: 'code_agent', project_id: 'q', environment: 'development' } });
    expect(created.statusCode, created.body).toBe(400);
    expect(created.json().error.details).toEqual([{ field: 'expires_in', problem: 'is not an accepted field' }]);
    expect((await app.inject({ url: '/v1/keys?project=q', headers: bearer(key) })).json().keys).toHaveLength(0);
    const lift = await app.inject({ method: 'DELETE', url: '/v1/kills/00000000-0000-4000-8000-000000000000?force=true', headers: bearer(key), payload: { reason: 'test' } });
    expect(lift.statusCode, lift.body).toBe(400);
    expect(lift.json().error.details).toEqual([{ field: 'force', problem: 'is not an accepted field' }]);
    const owner = (await app.ctx.auth.authenticate(key)) as OperatorPrincipal;
    const gw = await app.ctx.credentials.createGatewayKey(owner, 'query gateway');
    const agent = await app.ctx.credentials.createAgentToken(owner, { type: 'ro', role: 'code_agent', project_id: 'q2', environment: 'development' });
    const res = await app.inject({ method: 'GET', url: '/v1/gateway/approvals/00000000-0000-4000-8000-000000000000?wait=30', headers: { ...bearer(gw.key), 'x-agent-token': agent.token } });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().error.details).toEqual([{ field: 'wait', problem: 'is not an accepted field' }]);
  });

  it('a from/to window whose from is not before its to is 400 naming from, on every route that takes one', async () => {
    const key = await t.operatorKey(app, 'owner');
    const swapped = 'from=2026-12-06T12:00:00Z&to=2026-12-06T11:00:00Z';
    const empty = 'from=2026-12-06T12:00:00Z&to=2026-12-06T12:00:00Z';
    for (const path of ['/v1/audit', '/v1/audit/export', '/v1/usage', '/v1/usage/monthly', '/v1/alerts', '/v1/incidents/timeline']) {
      for (const window of [swapped, empty]) {
        const res = await app.inject({ url: `${path}?${window}`, headers: bearer(key) });
        expect(res.statusCode, `${path}?${window}: ${res.body}`).toBe(400);
        expect(res.json().error).toMatchObject({ code: 'INVALID_REQUEST', details: [{ field: 'from', problem: 'must be before `to`' }] });
      }
      expect((await app.inject({ url: `${path}?from=2026-12-06T11:00:00Z&to=2026-12-06T12:00:00Z`, headers: bearer(key) })).statusCode, path).toBe(200);
    }
    // /v1/usage: `to` defaults to now, so a `from` in the future is the same mistake.
    expect((await app.inject({ url: '/v1/usage?from=2999-01-01T00:00:00Z', headers: bearer(key) })).statusCode).toBe(400);
  });
});
