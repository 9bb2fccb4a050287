import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// A call allowed before its agent token was revoked or expired still ran: its RESULT belongs in the audit
// trail and its after-call triggers still apply, though the token can make no new call.

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

const write = { server: 'filesystem', tool: 'write_file', arguments: { path: 'docs/a.md', content: 'x' } };
const resultRow = async (decisionId: string) => {
  await app.ctx.audit.writer.flush();
  return (await t.pool().query(`SELECT result_status, result_bytes, details FROM audit_events WHERE kind = 'RESULT' AND decision_id = $1`, [decisionId])).rows;
};

describe('the result of a call whose token ended while it ran', () => {
  it('revoked: recorded and marked, the after-call trigger applies; the token makes no new call, and cannot report for another token', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { ...write, session_id: s.session_id });
    expect(d.decision).toBe('allow');
    const other = await gw.token('rw');
    const os = await gw.session(other.raw);
    const od = await gw.decide(other.raw, { ...write, session_id: os.session_id });
    expect((await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'INC-9' } })).statusCode).toBe(200);

    // 2 MB undeclared: the large-result trigger still fires
    const res = await gw.result(tok.raw, d.decision_id, { status: 'success', duration_ms: 12, result_bytes: 2_000_000 });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ recorded: true, action: 'withhold_and_halt', trigger: 'LARGE_RESULT' });
    expect(await resultRow(d.decision_id)).toEqual([expect.objectContaining({ result_status: 'success', result_bytes: 2000000, details: expect.objectContaining({ credential_ended: 'revoked', halt: 'LARGE_RESULT' }) })]);

    // another token's decision is no business of this one
    expect((await gw.result(tok.raw, od.decision_id, { status: 'success', duration_ms: 1, result_bytes: 10 })).statusCode).toBe(404);
    // and no new call
    const again = await app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers(tok.raw), payload: { ...write, session_id: s.session_id } });
    expect(again.statusCode).toBe(401);
  });

  it('expired: recorded and marked', async () => {
    const tok = await gw.token('rw');
    // Expires in 1.5 s, set before its first use so the first check reads it.
    await t.pool().query(`UPDATE agent_tokens SET expires_at = now() + interval '1500 milliseconds' WHERE id = $1`, [tok.id]);
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { ...write, session_id: s.session_id });
    expect(d.decision).toBe('allow');
    await new Promise((r) => setTimeout(r, 1_700));
    expect((await app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers(tok.raw), payload: { ...write, session_id: s.session_id } })).statusCode).toBe(401);
    const res = await gw.result(tok.raw, d.decision_id, { status: 'success', duration_ms: 1_600, result_bytes: 10 });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ recorded: true, action: 'none' });
    expect(await resultRow(d.decision_id)).toEqual([expect.objectContaining({ details: { credential_ended: 'expired' } })]);
  });

  it('an unknown or malformed token is still 401', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { ...write, session_id: s.session_id });
    const forged = `${tok.raw.slice(0, -4)}aaaa`;
    expect((await gw.result(forged, d.decision_id, { status: 'success', duration_ms: 1, result_bytes: 1 })).statusCode).toBe(401);
  });
});

describe('a large result and the large-results grant', () => {
  const big = { status: 'success', duration_ms: 5, result_bytes: 2_000_000 };
  const grant = async (tokenId: string) => {
    const res = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { kind: 'large_results', token_id: tokenId, reason: 'INC-3 export', expires_in: 600 } });
    expect(res.statusCode, res.body).toBe(201);
    return res.json().grant?.id ?? res.json().id;
  };

  it('is judged by the grant the call was allowed under, even one revoked while it ran', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const id = await grant(tok.id);
    const d = await gw.decide(tok.raw, { ...write, session_id: s.session_id });
    expect((await app.inject({ method: 'DELETE', url: `/v1/grants/${id}`, headers: bearer(gw.owner) })).statusCode).toBeLessThan(300);
    const res = await gw.result(tok.raw, d.decision_id, big);
    expect(res.json()).toMatchObject({ recorded: true, action: 'none' });
  });

  it('without a grant at the allow or now, withholds and halts', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { ...write, session_id: s.session_id });
    const res = await gw.result(tok.raw, d.decision_id, big);
    expect(res.json()).toMatchObject({ action: 'withhold_and_halt', trigger: 'LARGE_RESULT' });
  });

  it('a grant given while the call ran covers it too (the operator said yes)', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { ...write, session_id: s.session_id });
    await grant(tok.id);
    const res = await gw.result(tok.raw, d.decision_id, big);
    expect(res.json()).toMatchObject({ action: 'none' });
  });

  it('a grant given and revoked while the call ran does not cover it: in force neither at the allow nor now', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { ...write, session_id: s.session_id });
    expect(d.decision).toBe('allow');
    const id = await grant(tok.id);
    expect((await app.inject({ method: 'DELETE', url: `/v1/grants/${id}`, headers: bearer(gw.owner) })).statusCode).toBeLessThan(300);
    const res = await gw.result(tok.raw, d.decision_id, big);
    expect(res.json()).toMatchObject({ action: 'withhold_and_halt', trigger: 'LARGE_RESULT' });
  });
});
