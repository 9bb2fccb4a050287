import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// POST /v1/decisions/explain without a session_id, against the token's open sessions, and without
// touching Unleash's usage metrics. The policy caps memory calls at 3 per session, and SESSION_LIMIT halts
// the session only, not the token.
const POLICY = 'test/fixtures/decisions/explain-policy.yaml';
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

const readGraph = { server: 'memory', tool: 'read_graph', arguments: {} };
const write = (path: string) => ({ server: 'filesystem', tool: 'write_file', arguments: { path, content: 'x' } });
const read = (path: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path } });

async function explain(tokenId: string, call: Record<string, unknown>) {
  const res = await app.inject({ method: 'POST', url: '/v1/decisions/explain', headers: bearer(gw.owner), payload: { token_id: tokenId, ...call } });
  return res;
}

describe('the resolved call', () => {
  it("is shown in the API's snake_case with every field typed (it was the pipeline's camelCase object, untyped in the OpenAPI document)", async () => {
    const tok = await gw.token('rw');
    const res = await explain(tok.id, write('notes/a.md'));
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().call).toEqual({
      server: 'filesystem',
      server_class: 'storage',
      tool: 'write_file',
      required_scope: 'storage:write',
      capability: 'write',
      scope_source: 'map',
      extra_flags: expect.any(Array),
      resource_ids: expect.any(Array),
      network_identities: expect.any(Array),
    });
  });
});

describe('explain without a session_id, for a token with open sessions', () => {
  it('a session at its cap: explain denies with the code the real call gets, even when a newer session and a new one would allow', async () => {
    const tok = await gw.token('rw');
    const full = await gw.session(tok.raw);
    for (let i = 0; i < 3; i++) expect((await gw.decide(tok.raw, { ...readGraph, session_id: full.session_id })).code).toBe('OK');
    // A second session, more recently active, that would allow the call.
    const fresh = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: fresh.session_id })).code).toBe('OK');

    const res = await explain(tok.id, readGraph);
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({ decision: 'deny', code: 'SESSION_HALTED', session_id: full.session_id, open_sessions: 2, halt: { trigger: 'SESSION_LIMIT', token: false } });
    expect(body.message).toContain(`In open session ${full.session_id}: Limit reached: 3/3 calls to memory in this session.`);
    expect(body.steps.at(-1)).toMatchObject({ step: 'gate', verdict: 'deny', code: 'SESSION_HALTED' });
    expect(body.sessions.map((s: { session_id: string | null; code: string }) => [s.session_id, s.code])).toEqual([
      [fresh.session_id, 'OK'],
      [full.session_id, 'SESSION_HALTED'],
      [null, 'OK'],
    ]);
    expect(body.sessions[0].last_active_at >= body.sessions[1].last_active_at).toBe(true);

    // Explaining counted nothing: the real call in the full session is the 4th, and gets that code.
    const real = await gw.decide(tok.raw, { ...readGraph, session_id: full.session_id });
    expect(real).toMatchObject({ decision: 'deny', code: body.code });
    expect(real.session).toMatchObject({ state: 'halted', trigger: 'SESSION_LIMIT' });

    // The halted session is still open (until resumed): explain keeps saying so, for any call.
    const after = (await explain(tok.id, read('b.md'))).json();
    expect(after).toMatchObject({ decision: 'deny', code: 'SESSION_HALTED', session_id: full.session_id });
    expect((await gw.decide(tok.raw, { ...read('b.md'), session_id: full.session_id })).code).toBe('SESSION_HALTED');
    // Named, the fresh session allows: explain in one session is as before.
    const named = (await explain(tok.id, { ...read('b.md'), session_id: fresh.session_id })).json();
    expect(named).toMatchObject({ decision: 'allow', code: 'OK', session_id: fresh.session_id });
    expect(named.sessions).toBeUndefined();
  });

  it('judges a new session by the caps the session service applies (the ones POST /v1/sessions checks), whatever their source', async () => {
    const tok = await gw.token('rw');
    await gw.session(tok.raw);
    const before = app.ctx.sessions.caps;
    app.ctx.sessions.setCapsSource(() => ({ maxOpen: 1, maxNewPerHour: null }));
    try {
      expect((await app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(tok.raw), payload: {} })).statusCode).toBe(429);
      const body = (await explain(tok.id, read('a.md'))).json();
      expect(body.sessions.at(-1)).toMatchObject({ session_id: null, decision: 'deny', code: 'TOO_MANY_SESSIONS' });
    } finally {
      app.ctx.sessions.setCapsSource(() => before);
    }
  });

  it('allow only when every open session and a new one would allow, and the message says so', async () => {
    const tok = await gw.token('rw');
    const none = (await explain(tok.id, read('a.md'))).json();
    expect(none).toMatchObject({ decision: 'allow', code: 'OK', session_id: null, open_sessions: 0, message: 'filesystem/read_text_file would be allowed' });
    expect(none.sessions).toEqual([{ session_id: null, last_active_at: null, decision: 'allow', code: 'OK', message: 'filesystem/read_text_file would be allowed' }]);

    const a = await gw.session(tok.raw);
    const b = await gw.session(tok.raw);
    const both = (await explain(tok.id, read('a.md'))).json();
    expect(both).toMatchObject({ decision: 'allow', code: 'OK', open_sessions: 2, message: "filesystem/read_text_file would be allowed in each of this token's 2 open sessions and in a new one" });
    // Never used: the newer session first.
    expect(both.sessions.map((s: { session_id: string | null }) => s.session_id)).toEqual([b.session_id, a.session_id, null]);
    expect(both.session_id).toBe(b.session_id);
  });

  it('a session the call would halt (a write in a read-only session) denies, and the real call in it gets that code', async () => {
    const tok = await gw.token('rw');
    await gw.session(tok.raw);
    const ro = await gw.session(tok.raw, { read_only: true });
    const body = (await explain(tok.id, write('a.md'))).json();
    expect(body).toMatchObject({ decision: 'deny', code: 'PERMISSION_DENIED', session_id: ro.session_id, halt: { trigger: 'WRITE_IN_READ_SESSION', token: true } });
    expect((await gw.decide(tok.raw, { ...write('a.md'), session_id: ro.session_id })).code).toBe(body.code);
  });

  it('more than 100 open sessions: 400 naming session_id when the 100 checked would all allow; a denial among them is answered', async () => {
    const tok = await gw.token('rw');
    for (let i = 0; i < 100; i++) await gw.session(tok.raw);
    // The 101st, most recently active, is read-only.
    const ro = await gw.session(tok.raw, { read_only: true });
    const res = await explain(tok.id, read('a.md'));
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({ code: 'INVALID_REQUEST', details: [{ field: 'session_id' }] });
    expect(res.json().error.message).toContain('101 open sessions');

    const denied = await explain(tok.id, write('a.md'));
    expect(denied.statusCode).toBe(200);
    expect(denied.json()).toMatchObject({ decision: 'deny', code: 'PERMISSION_DENIED', session_id: ro.session_id, open_sessions: 101 });
    expect(denied.json().sessions).toHaveLength(101);
  });
});

describe("explain without a session_id, for a token at its session caps", () => {
  // The same policy with small per-token session caps: 2 open at once, 3 opened per hour.
  let capped: FastifyInstance;
  let cgw: GatewayDriver;
  beforeAll(async () => {
    const source = readFileSync(POLICY, 'utf8').replace('max_open_sessions: 150, max_new_sessions_per_hour: 500', 'max_open_sessions: 2, max_new_sessions_per_hour: 3');
    expect(source).toContain('max_open_sessions: 2,');
    mkdirSync(t.dataDir, { recursive: true });
    const policyFile = join(t.dataDir, 'explain-session-caps.yaml');
    writeFileSync(policyFile, source);
    capped = await t.app({ policyFile });
    await capped.ctx.sessions.ensureState();
    cgw = await new GatewayDriver(t, capped).init();
  });
  const explainCapped = async (tokenId: string, call: Record<string, unknown>) => {
    const res = await capped.inject({ method: 'POST', url: '/v1/decisions/explain', headers: bearer(cgw.owner), payload: { token_id: tokenId, ...call } });
    expect(res.statusCode, res.body).toBe(200);
    return res.json();
  };
  const close = async (sessionId: string) => {
    const res = await capped.inject({ method: 'POST', url: `/v1/sessions/${sessionId}/close`, headers: bearer(cgw.owner), payload: {} });
    expect(res.statusCode, res.body).toBe(200);
  };

  it('at max_open_sessions: allow in the open sessions, and the new session says it cannot be opened (TOO_MANY_SESSIONS), as POST /v1/sessions answers', async () => {
    const tok = await cgw.token('rw');
    const a = await cgw.session(tok.raw);
    const b = await cgw.session(tok.raw);
    const refused = await capped.inject({ method: 'POST', url: '/v1/sessions', headers: cgw.headers(tok.raw), payload: {} });
    expect(refused.statusCode).toBe(429);
    expect(refused.json().error.code).toBe('TOO_MANY_SESSIONS');

    const body = await explainCapped(tok.id, read('a.md'));
    expect(body).toMatchObject({ decision: 'allow', code: 'OK', open_sessions: 2, session_id: b.session_id });
    expect(body.message).toBe(
      "filesystem/read_text_file would be allowed in each of this token's 2 open sessions. A new session cannot be opened now: this token has 2 open sessions (max_open_sessions 2), so POST /v1/sessions answers 429 TOO_MANY_SESSIONS until one is closed (POST /v1/sessions/:id/close) or idles out",
    );
    expect(body.sessions.map((s: { session_id: string | null; decision: string; code: string }) => [s.session_id, s.decision, s.code])).toEqual([
      [b.session_id, 'allow', 'OK'],
      [a.session_id, 'allow', 'OK'],
      [null, 'deny', 'TOO_MANY_SESSIONS'],
    ]);
    expect(body.sessions[2].message).toContain('A new session cannot be opened now: this token has 2 open sessions (max_open_sessions 2)');
  });

  it('at max_new_sessions_per_hour: the new session says when one can be opened; with no session open, the answer is deny TOO_MANY_SESSIONS', async () => {
    const tok = await cgw.token('rw');
    const opened = [await cgw.session(tok.raw), await cgw.session(tok.raw)];
    await close(opened[0]!.session_id);
    const last = await cgw.session(tok.raw); // the third this hour; two stay open
    await close(opened[1]!.session_id);
    const refused = await capped.inject({ method: 'POST', url: '/v1/sessions', headers: cgw.headers(tok.raw), payload: {} });
    expect(refused.json().error).toMatchObject({ code: 'TOO_MANY_SESSIONS', details: { limit: 'max_new_sessions_per_hour' } });

    const one = await explainCapped(tok.id, read('a.md'));
    expect(one).toMatchObject({ decision: 'allow', code: 'OK', open_sessions: 1, session_id: last.session_id });
    expect(one.message).toMatch(
      /^filesystem\/read_text_file would be allowed in each of this token's 1 open session\. A new session cannot be opened now: this token opened 3 sessions this hour \(max_new_sessions_per_hour 3\), so POST \/v1\/sessions answers 429 TOO_MANY_SESSIONS for \d+ s more \(until \d{4}-\d\d-\d\dT/,
    );
    expect(one.sessions.at(-1)).toMatchObject({ session_id: null, decision: 'deny', code: 'TOO_MANY_SESSIONS' });

    await close(last.session_id);
    const none = await explainCapped(tok.id, read('a.md'));
    expect(none).toMatchObject({ decision: 'deny', code: 'TOO_MANY_SESSIONS', session_id: null, open_sessions: 0 });
    expect(none.message).toMatch(/^This token has no open session and cannot open one now: this token opened 3 sessions this hour .*As the first call of a new session, once one can be opened: filesystem\/read_text_file would be allowed$/);
    expect(none.sessions).toEqual([expect.objectContaining({ session_id: null, decision: 'deny', code: 'TOO_MANY_SESSIONS' })]);
  });
});

describe('explain and Unleash usage metrics', () => {
  it('explaining counts no flag evaluation in the metrics sent to Unleash; a real call does', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const counted: string[] = [];
    const stop = app.ctx.flags.onUsageCount((name) => counted.push(name));
    try {
      for (const call of [read('a.md'), { ...read('a.md'), session_id: s.session_id }, write('b.md')]) {
        const body = (await explain(tok.id, call)).json();
        expect(body.code).toBe('OK');
        expect(body.flags.length).toBeGreaterThan(0);
      }
      expect(counted).toEqual([]);

      expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');
      expect(counted).toEqual(['mcp.enabled', 'mcp.tokens.rw', 'mcp.filesystem.read']);
    } finally {
      stop();
    }
  });
});
