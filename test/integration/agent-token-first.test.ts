import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCredential } from '../../src/tokens/format.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Reviewer on a running instance: with a valid gateway key, a missing, malformed or revoked agent token and
// a bad body, the gateway routes answered 400 about the body (the agent token was checked in the handler,
// after validation). docs/errors.md promises the credential first: the agent token is now checked in
// onRequest, before the body is read.

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

const read = { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' } };
const MISSING = 'Missing X-Agent-Token: send the agent token alone (mcp_ro_..., mcp_rw_... or mcp_admin_...) in it, beside the gateway key in Authorization.';
const MALFORMED = 'X-Agent-Token does not hold an agent token: one starts mcp_ro_, mcp_rw_ or mcp_admin_ and is checked by its last characters (a character missing, added or changed?).';
const REVOKED = 'The agent token is revoked: ask an operator for a token (docs/tokens.md).';
const UNKNOWN = 'The agent token is not known to this control plane (another installation’s, or deleted): ask an operator for a token (docs/tokens.md).';

const NEVER_ISSUED = generateCredential('mcp_rw_');

/** A request of each gateway route with a body (or path) its schema refuses. */
type BadRequest = { name: string; method: 'GET' | 'POST'; url: string; payload?: unknown; field: string };
const badRequests = (sessionId: string, decisionId: string): BadRequest[] => [
  { name: 'POST /v1/decisions', method: 'POST', url: '/v1/decisions', payload: { bogus: 1 }, field: 'server' },
  { name: 'POST /v1/decisions/:id/result', method: 'POST', url: `/v1/decisions/${decisionId}/result`, payload: { bogus: 1 }, field: 'status' },
  { name: 'POST /v1/gateway/tools', method: 'POST', url: '/v1/gateway/tools', payload: { bogus: 1 }, field: 'servers' },
  { name: 'POST /v1/sessions', method: 'POST', url: '/v1/sessions', payload: { bogus: 1 }, field: 'bogus' },
  { name: 'POST /v1/sessions/:id/close', method: 'POST', url: `/v1/sessions/${sessionId}/close`, payload: { bogus: 1 }, field: 'bogus' },
  { name: 'GET /v1/gateway/approvals/:id', method: 'GET', url: '/v1/gateway/approvals/nope', field: 'id' },
];

const send = (r: BadRequest, headers: Record<string, string>) =>
  app.inject({ method: r.method, url: r.url, headers, ...(r.payload === undefined ? {} : { payload: r.payload as Record<string, unknown> }) });

/** What the bad requests could have left behind: decisions, results, sessions, tool reports. */
const recorded = async () => {
  await app.ctx.audit.writer.flush();
  const q = async (sql: string) => Number((await t.pool().query(sql)).rows[0].n);
  return {
    audit: await q(`SELECT count(*) AS n FROM audit_events WHERE kind IN ('INTENT', 'RESULT') OR action LIKE 'session.%' OR action LIKE 'tool.%'`),
    sessions: await q('SELECT count(*) AS n FROM sessions'),
    closed: await q(`SELECT count(*) AS n FROM sessions WHERE state = 'closed'`),
    toolReports: await q('SELECT count(*) AS n FROM tool_reports'),
  };
};

const authFailures = async () => {
  await app.ctx.audit.writer.flush();
  return (await t.pool().query(`SELECT target, details FROM audit_events WHERE kind = 'AUTH_FAILURE'`)).rows as Array<{ target: string; details: { route: string } }>;
};

const revokedToken = async () => {
  const tok = await gw.token('rw');
  const res = await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'test' } });
  expect(res.statusCode, res.body).toBe(200);
  return tok;
};

describe('a bad agent token with a bad body: 401 about X-Agent-Token, never 400 about the body', () => {
  let live: { raw: string; id: string };
  let sessionId: string;
  let decisionId: string;

  beforeAll(async () => {
    live = await gw.token('rw');
    sessionId = (await gw.session(live.raw)).session_id;
    decisionId = (await gw.decide(live.raw, { ...read, session_id: sessionId })).decision_id;
  });

  it('with a valid agent token the same requests are 400 naming the field (the body is at fault then)', async () => {
    for (const r of badRequests(sessionId, decisionId)) {
      const res = await send(r, gw.headers(live.raw));
      expect(res.statusCode, r.name).toBe(400);
      expect(res.json().error.details.map((d: { field: string }) => d.field), r.name).toContain(r.field);
    }
  });

  for (const [what, headers, message] of [
    ['missing', () => bearer(gw.gatewayKey), MISSING],
    ['malformed (mcp_ro_x)', () => gw.headers('mcp_ro_x'), MALFORMED],
    ['unknown (well formed, never issued)', () => gw.headers(NEVER_ISSUED), UNKNOWN],
  ] as const) {
    it(`${what}: 401 UNAUTHENTICATED naming X-Agent-Token on every gateway route; nothing recorded`, async () => {
      const before = await recorded();
      for (const r of badRequests(sessionId, decisionId)) {
        const res = await send(r, headers());
        expect(res.statusCode, `${r.name}: ${res.body}`).toBe(401);
        expect(res.json().error, r.name).toEqual({ code: 'UNAUTHENTICATED', message });
      }
      expect(await recorded()).toEqual(before);
    });
  }

  it('revoked: 401 and one AUTH_FAILURE row naming the route, on every gateway route but the result report; nothing recorded', async () => {
    const before = await recorded();
    for (const r of badRequests(sessionId, decisionId).filter((x) => !x.url.endsWith('/result'))) {
      const tok = await revokedToken();
      const res = await send(r, gw.headers(tok.raw));
      expect(res.statusCode, `${r.name}: ${res.body}`).toBe(401);
      expect(res.json().error, r.name).toEqual({ code: 'UNAUTHENTICATED', message: REVOKED });
      const rows = (await authFailures()).filter((row) => row.target === `agent_token:${tok.id}`);
      expect(rows.map((row) => row.details.route), r.name).toEqual([r.url.startsWith('/v1/gateway/approvals') ? '/v1/gateway/approvals/:id' : r.url.replace(sessionId, ':id')]);
    }
    expect(await recorded()).toEqual(before);
  });

  it('revoked, on the result report: the token is accepted (the result of a call that ran before it ended counts), so the body is at fault: 400', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { ...read, session_id: s.session_id });
    await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'test' } });
    const res = await gw.result(tok.raw, d.decision_id, { bogus: 1 });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details.map((x: { field: string }) => x.field)).toContain('status');
  });
});

describe('POST /v1/sessions/:id/close with the credentials of neither form', () => {
  it('an agent token as Bearer: 401 naming Authorization, as on every gateway route (was 403 "accepts operator keys only")', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const res = await app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/close`, headers: bearer(tok.raw) });
    expect(res.statusCode).toBe(401);
    expect(res.json().error).toEqual({
      code: 'UNAUTHENTICATED',
      message: 'Authorization holds an agent token: it takes the gateway key ("Authorization: Bearer ksgw_..."); the agent token goes in X-Agent-Token.',
    });
    expect((await t.pool().query('SELECT state FROM sessions WHERE id = $1', [s.session_id])).rows[0].state).toBe('active');
  });

  it('an operator key beside X-Agent-Token: 401 naming both forms of the route, not "accepts operator keys only"; the operator key alone closes it', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const operator = await t.operatorKey(app, 'operator');
    const url = `/v1/sessions/${s.session_id}/close`;
    const res = await app.inject({ method: 'POST', url, headers: { ...bearer(operator), 'x-agent-token': tok.raw } });
    expect(res.statusCode).toBe(401);
    expect(res.json().error).toEqual({
      code: 'UNAUTHENTICATED',
      message:
        'Authorization holds an operator key beside X-Agent-Token: a gateway closes its agent\'s session with its gateway key ("Authorization: Bearer ksgw_...") and the agent token in X-Agent-Token; an operator closes one with the operator key alone, without X-Agent-Token.',
    });
    expect((await t.pool().query('SELECT state FROM sessions WHERE id = $1', [s.session_id])).rows[0].state).toBe('active');
    expect((await app.inject({ method: 'POST', url, headers: bearer(operator) })).json()).toMatchObject({ already_closed: false });
  });

  it('X-Agent-Token without Authorization: 401 naming the missing gateway key', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const res = await app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/close`, headers: { 'x-agent-token': tok.raw } });
    expect(res.statusCode).toBe(401);
    expect(res.json().error.message).toBe('Missing credential: send the gateway key as "Authorization: Bearer ksgw_..." and the agent token in X-Agent-Token.');
  });
});

describe('an agent token that cannot be checked (credential store unavailable): each route keeps its answer', () => {
  it('a decision is a 200 deny (DEPENDENCY_UNAVAILABLE); a session, a tool report and an approval status are 503 with Retry-After; a result is 503 saying it was not recorded', async () => {
    const other = await t.app({ policyFile: POLICY });
    const g2 = await new GatewayDriver(t, other).init();
    const seen = await g2.token('rw');
    const s = await g2.session(seen.raw); // the gateway key is now cached
    const d = await g2.decide(seen.raw, { ...read, session_id: s.session_id });
    const unseen = await g2.token('rw');
    await other.ctx.pool.end();
    const h = g2.headers(unseen.raw);

    const decision = await other.inject({ method: 'POST', url: '/v1/decisions', headers: h, payload: { ...read, session_id: s.session_id } });
    expect(decision.statusCode).toBe(200);
    expect(decision.json()).toMatchObject({ decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE' });

    for (const [url, method, payload] of [
      ['/v1/sessions', 'POST', {}],
      ['/v1/gateway/tools', 'POST', { servers: [] }],
      [`/v1/sessions/${s.session_id}/close`, 'POST', {}],
      ['/v1/gateway/approvals/0192f0c1-0000-7000-8000-000000000001', 'GET', undefined],
    ] as const) {
      const res = await other.inject({ method, url, headers: h, ...(payload ? { payload } : {}) });
      expect(res.statusCode, `${url}: ${res.body}`).toBe(503);
      expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
      expect(res.headers['retry-after']).toMatch(/^\d+$/);
    }
    const result = await other.inject({ method: 'POST', url: `/v1/decisions/${d.decision_id}/result`, headers: h, payload: { status: 'success', duration_ms: 1, result_bytes: 1 } });
    expect(result.statusCode).toBe(503);
    expect(result.json().error.message).toBe('The credential store is unavailable, so the result was not recorded; withhold the result and retry shortly.');
  });
});
