import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// Values Postgres cannot store (NUL, unpaired surrogates) where the agent or an operator chooses them:
// a halt must still reach Postgres (so an operator can see and resume it), its alert must be stored,
// the resume routes lift a halt Redis enforces even without a record in Postgres, and free text the
// routes take is a 400 naming the field, never a 503 blaming a dependency.

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

const write = (path: string, sessionId: string, resources?: string[]) => ({
  server: 'filesystem',
  tool: 'write_file',
  arguments: { path, content: 'x' },
  ...(resources ? { resources } : {}),
  session_id: sessionId,
});
const journal = () => app.ctx.redis.redis.lrange(app.ctx.redis.key('halts', 'unrecorded'), 0, -1);
const operator = () => bearer(gw.owner);

describe('a halt whose summary quotes values Postgres refuses', () => {
  for (const [what, call] of [
    ['NUL in arguments.path', (f: string, sid: string) => write(`/tmp/demo/${f}\u0000`, sid)],
    ['NUL in resources', (f: string, sid: string) => write(`/tmp/demo/${f}`, sid, [`file:/tmp/${f}\u0000`])],
  ] as const) {
    it(`${what}: the cascade halt and its alert are recorded, shown halted, and the token can be resumed`, async () => {
      const tok = await gw.token('rw');
      const s = await gw.session(tok.raw);
      const answers: Array<{ code: string; message: string }> = [];
      for (const f of ['a', 'b', 'c']) answers.push(await gw.decide(tok.raw, call(f, s.session_id)));
      expect(answers.map((a) => a.code)).toEqual(['OK', 'OK', 'CASCADE_WRITE']);
      // The denial names the resources as ids, made storable where they are extracted: no raw NUL goes back to the gateway.
      expect(answers[2]!.message).not.toContain('\u0000');
      expect(answers[2]!.message).toContain('\uFFFD');
      expect((await gw.decide(tok.raw, write('/tmp/demo/d', s.session_id))).code).toBe('SESSION_HALTED');

      // The record reached Postgres at once: nothing waits in the retry journal.
      expect(await journal()).toEqual([]);
      const halts = await t.pool().query("SELECT trigger, summary->>'message' AS message FROM token_halts WHERE token_id = $1 AND resumed_at IS NULL", [tok.id]);
      expect(halts.rows).toHaveLength(1);
      expect(halts.rows[0].trigger).toBe('CASCADE_WRITE');
      expect(halts.rows[0].message).toContain('\uFFFD');
      const view = await app.inject({ url: `/v1/sessions/${s.session_id}`, headers: operator() });
      expect(view.json()).toMatchObject({ state: 'halted', trigger: 'CASCADE_WRITE', halted_by: 'session' });
      expect(view.json().halt_summary.last_calls).toHaveLength(3);

      // The SESSION_HALTED alert is stored (it used to be only logged).
      const alerts = async () => (await app.inject({ url: `/v1/alerts?token=${tok.id}&kind=SESSION_HALTED`, headers: operator() })).json().alerts as Array<{ message: string }>;
      await until(async () => (await alerts()).length === 1, 5_000, 'the SESSION_HALTED alert stored');
      expect((await alerts())[0]!.message).toContain('\uFFFD');

      const resume = await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/resume`, headers: operator(), payload: { reason: 'checked the paths' } });
      expect(resume.statusCode).toBe(200);
      expect(resume.json().token_halt).toMatchObject({ trigger: 'CASCADE_WRITE' });
      expect((await gw.decide(tok.raw, write('/tmp/demo/e', s.session_id))).code).toBe('OK');
      expect(t.logs.text).not.toContain('halt not recorded in Postgres');
    });
  }
});

describe('the halt retry journal', () => {
  it('an entry Postgres refuses as it is is recorded made storable, and the entries behind it are recorded too', async () => {
    const [a, b] = [await gw.token('rw'), await gw.token('rw')];
    const [sa, sb] = [await gw.session(a.raw), await gw.session(b.raw)];
    const sessions = app.ctx.sessions;
    // As a replica whose Postgres was away left them (or one of an earlier version, which journaled the
    // summary as the agent wrote it): enforced in Redis, waiting in the journal.
    const entries = [
      // Not even the bare halt can be recorded (no such token): dropped with an error, not retried forever.
      { tokenId: 'not-a-token-id', sessionId: null, trigger: 'CASCADE_WRITE', haltToken: true, summary: {} },
      { tokenId: a.id, sessionId: sa.session_id, trigger: 'CASCADE_WRITE', haltToken: true, summary: {
          message: 'writes to /tmp/demo/a\u0000',
          last_calls: [{ id: 'd-1', at: 1, server: 'filesystem', tool: 'write_file', args: '{"path":"/tmp/demo/a\ud800"}', decision: 'deny', code: 'CASCADE_WRITE' }],
        },
      },
      { tokenId: b.id, sessionId: sb.session_id, trigger: 'CASCADE_WRITE', haltToken: true, summary: { message: 'writes to /tmp/demo/b' } },
    ];
    await sessions.mirror.halt(entries.slice(1).map((e) => ({ tokenId: e.tokenId, sessionId: e.sessionId, trigger: e.trigger, haltToken: true })));
    await app.ctx.redis.redis.rpush(app.ctx.redis.key('halts', 'unrecorded'), ...entries.map((e) => JSON.stringify(e)));

    await sessions.epoch.tick();
    await until(async () => (await journal()).length === 0, 5_000, 'the journal drained');
    const { rows } = await t.pool().query(
      "SELECT token_id, trigger, summary->>'message' AS message FROM token_halts WHERE token_id = ANY($1::uuid[]) AND resumed_at IS NULL ORDER BY summary->>'message'",
      [[a.id, b.id]],
    );
    expect(rows).toEqual([
      { token_id: a.id, trigger: 'CASCADE_WRITE', message: 'writes to /tmp/demo/a\uFFFD' },
      { token_id: b.id, trigger: 'CASCADE_WRITE', message: 'writes to /tmp/demo/b' },
    ]);
    expect(t.logs.text).toContain('halt could not be recorded in Postgres at all and is not retried');
    expect((await app.inject({ url: `/v1/sessions/${sa.session_id}`, headers: operator() })).json().state).toBe('halted');
    const resume = await app.inject({ method: 'POST', url: `/v1/keys/${a.id}/resume`, headers: operator(), payload: { reason: 'checked' } });
    expect(resume.statusCode).toBe(200);
    expect((await gw.decide(a.raw, write('/tmp/demo/x', sa.session_id))).code).toBe('OK');
  });
});

describe('resuming a halt Redis enforces without a record in Postgres', () => {
  it('POST /v1/keys/:id/resume lifts the token halt and the session halts Redis holds, and says so', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const other = await gw.session(tok.raw);
    await app.ctx.sessions.mirror.halt([{ tokenId: tok.id, sessionId: s.session_id, trigger: 'CASCADE_WRITE', haltToken: true }]);
    expect((await gw.decide(tok.raw, write('/tmp/demo/a', other.session_id))).code).toBe('SESSION_HALTED');
    expect((await app.inject({ url: `/v1/sessions/${s.session_id}`, headers: operator() })).json().state).toBe('active');

    const res = await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/resume`, headers: operator(), payload: { reason: 'stranded halt' } });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ token_halt: null, sessions_resumed: [s.session_id] });
    expect(res.json().message).toContain('no record in Postgres');
    for (const sid of [s.session_id, other.session_id]) expect((await gw.decide(tok.raw, write('/tmp/demo/a', sid))).code).toBe('OK');
    const audit = await t.pool().query("SELECT details FROM audit_events WHERE action = 'agent_token.resumed' AND target = $1", [`agent_token:${tok.id}`]);
    expect(audit.rows[0].details).toMatchObject({ trigger: 'CASCADE_WRITE', halt_without_record: true, sessions_without_record: [s.session_id] });
    // Nothing halted anywhere any more: 409 as before.
    expect((await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/resume`, headers: operator(), payload: { reason: 'again' } })).statusCode).toBe(409);
  });

  it('POST /v1/sessions/:id/resume lifts a session halt only Redis holds', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    await app.ctx.sessions.mirror.halt([{ tokenId: tok.id, sessionId: s.session_id, trigger: 'SESSION_LIMIT', haltToken: false }]);
    expect((await gw.decide(tok.raw, write('/tmp/demo/a', s.session_id))).code).toBe('SESSION_HALTED');
    const res = await app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/resume`, headers: operator(), payload: { reason: 'stranded halt' } });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ resumed_trigger: 'SESSION_LIMIT', token_still_halted: false });
    expect((await gw.decide(tok.raw, write('/tmp/demo/a', s.session_id))).code).toBe('OK');
    expect((await app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/resume`, headers: operator(), payload: { reason: 'again' } })).statusCode).toBe(409);
  });
});

describe('free text that cannot be stored is a 400 naming the field', () => {
  for (const [name, bad] of [
    ['a NUL', 'p\u0000'],
    ['an unpaired surrogate', 'p\ud800'],
  ] as const) {
    it(`${name} in purpose, a resume reason or an acknowledgement note`, async () => {
      const tok = await gw.token('rw');
      const open = await app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(tok.raw), payload: { purpose: bad } });
      expect(open.statusCode).toBe(400);
      expect(open.json().error.details[0].field).toBe('purpose');
      // A surrogate pair is text like any other, also where the purpose is cut for Redis.
      const paired = await app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(tok.raw), payload: { purpose: `${'p'.repeat(499)}\u{1F600}` } });
      expect(paired.statusCode).toBe(201);

      const s = await gw.session(tok.raw);
      const codes: string[] = [];
      for (const f of ['a', 'b', 'c']) codes.push((await gw.decide(tok.raw, write(`/tmp/demo/${f}`, s.session_id))).code);
      expect(codes.at(-1)).toBe('CASCADE_WRITE');
      for (const url of [`/v1/sessions/${s.session_id}/resume`, `/v1/keys/${tok.id}/resume`]) {
        const res = await app.inject({ method: 'POST', url, headers: operator(), payload: { reason: bad } });
        expect(res.statusCode).toBe(400);
        expect(res.json().error.details[0].field).toBe('reason');
      }
      expect((await gw.decide(tok.raw, write('/tmp/demo/a', s.session_id))).code).toBe('SESSION_HALTED');

      const alerts = async () => (await app.inject({ url: `/v1/alerts?token=${tok.id}&kind=SESSION_HALTED`, headers: operator() })).json().alerts as Array<{ id: string }>;
      await until(async () => (await alerts()).length === 1, 5_000, 'the SESSION_HALTED alert stored');
      const ack = await app.inject({ method: 'POST', url: `/v1/alerts/${(await alerts())[0]!.id}/ack`, headers: operator(), payload: { note: bad } });
      expect(ack.statusCode).toBe(400);
      expect(ack.json().error.details[0].field).toBe('note');
    });
  }
});
