import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lowercaseUuids } from '../../src/app.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Ids are issued in lower case. One an operator types in upper case names the same object: Postgres would
// match it either way, but Redis keys and in-memory sets would not, so a kill, a resume or a revocation by
// an upper-case id was recorded (201/200) and yet did not take effect.

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
const upper = (id: string) => id.toUpperCase();

describe('an id typed in upper case', () => {
  it('a kill of a token or a session takes effect, and is listed under the id as issued', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');
    const kill = await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'token', token_id: upper(tok.id), reason: 'incident 7', expires_in: 120 } });
    expect(kill.statusCode).toBe(201);
    expect(kill.json().kill.target_key).toBe(`token:${tok.id}`);
    expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('KILL_SWITCH');
    const lifted = await app.inject({ method: 'DELETE', url: `/v1/kills/${upper(kill.json().kill.id)}`, headers: bearer(gw.owner), payload: { reason: 'resolved' } });
    expect(lifted.statusCode).toBe(200);
    expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');

    const other = await gw.token('rw');
    const s2 = await gw.session(other.raw);
    const sessionKill = await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'session', session_id: upper(s2.session_id), reason: 'incident 8', expires_in: 120 } });
    expect(sessionKill.statusCode).toBe(201);
    expect((await gw.decide(other.raw, { ...read('a.md'), session_id: s2.session_id })).code).toBe('KILL_SWITCH');
  });

  it('a resume of a halted token lifts the halt', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, { server: 'shadow-server', tool: 'anything', session_id: s.session_id })).code).toBe('UNKNOWN_SERVER');
    const resume = await app.inject({ method: 'POST', url: `/v1/keys/${upper(tok.id)}/resume`, headers: bearer(gw.owner), payload: { reason: 'investigated' } });
    expect(resume.statusCode).toBe(200);
    expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');
  });

  it('a revoked token is refused at once', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');
    const revoke = await app.inject({ method: 'POST', url: `/v1/keys/${upper(tok.id)}/revoke`, headers: bearer(gw.owner), payload: { reason: 'leaked' } });
    expect(revoke.statusCode).toBe(200);
    const after = await app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers(tok.raw), payload: { ...read('a.md'), session_id: s.session_id } });
    expect(after.statusCode).toBe(401);
  });

  it("a gateway's session id in a decision and a decision id in a result report name the same session and decision", async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { ...read('a.md'), session_id: upper(s.session_id) });
    expect(d.code).toBe('OK');
    const res = await gw.result(tok.raw, upper(d.decision_id), { status: 'success', duration_ms: 5, result_bytes: 10 });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ decision_id: d.decision_id, recorded: true });
    // An id no gateway was given is still answered as unknown, not refused as malformed.
    expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: 'my-own-session' })).code).toBe('SESSION_UNKNOWN');
    expect((await gw.result(tok.raw, 'not-a-decision', { status: 'success', duration_ms: 5, result_bytes: 10 })).statusCode).toBe(404);
    // The audit filters find the rows by the ids as a person may type them.
    await app.ctx.audit.writer.flush();
    const bySession = await app.inject({ method: 'GET', url: `/v1/audit?session=${upper(s.session_id)}&token=${upper(tok.id)}`, headers: bearer(gw.owner) });
    expect(bySession.statusCode).toBe(200);
    expect(bySession.json().events.map((e: { decision_id: string }) => e.decision_id)).toContain(d.decision_id);
    const byDecision = await app.inject({ method: 'GET', url: `/v1/audit?decision_id=${upper(d.decision_id)}`, headers: bearer(gw.owner) });
    expect(byDecision.json().events.map((e: { kind: string }) => e.kind).sort()).toEqual(['INTENT', 'RESULT']);
  });

  it('schemas get the lower-casing on every uuid, nested or not, without changing the originals', () => {
    const schema = { type: 'object', properties: { id: { type: 'string', format: 'uuid' }, list: { type: 'array', items: { type: 'string', format: 'uuid' } }, name: { type: 'string' } } };
    const copy = lowercaseUuids(schema) as { properties: Record<string, Record<string, unknown>> };
    const { id, list, name } = copy.properties;
    expect(id?.['x-lowercase']).toBe(true);
    expect((list?.['items'] as Record<string, unknown> | undefined)?.['x-lowercase']).toBe(true);
    expect(name?.['x-lowercase']).toBeUndefined();
    expect(JSON.stringify(schema)).not.toContain('x-lowercase');
  });
});
