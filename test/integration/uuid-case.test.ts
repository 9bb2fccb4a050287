import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lowercaseUuids } from '../../src/app.js';
import { decodeCursor as decodeAuditCursor } from '../../src/audit/service.js';
import { decodeCursor as decodeTimelineCursor } from '../../src/incidents/cursor.js';
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

  it('a cursor whose id was typed in upper case continues where the cursor as issued does (audit, incident timeline)', async () => {
    // The id inside a cursor is accepted in any case (these two cursors alone refused it as malformed in
    // upper case) and lower-cased when decoded, as every other id, so that no later text comparison of ids
    // (the timeline orders its events by id as text) can see two spellings of one id.
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    for (const p of ['a.md', 'b.md', 'c.md']) expect((await gw.decide(tok.raw, { ...read(p), session_id: s.session_id })).code).toBe('OK');
    await app.ctx.audit.writer.flush();
    /** The cursor with the id that `holder` picks out of its JSON (the array and the index) upper-cased. */
    const upperId = (cursor: string, holder: (wire: unknown[]) => [unknown[], number]) => {
      const wire = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
      const [array, i] = holder(wire);
      const id = array[i] as string;
      expect(id).not.toBe(upper(id));
      array[i] = upper(id);
      return Buffer.from(JSON.stringify(wire)).toString('base64url');
    };
    const ids = (res: { statusCode: number; body: string; json: () => { events: Array<{ id: string }> } }) => {
      expect(res.statusCode, res.body).toBe(200);
      return res.json().events.map((e) => e.id);
    };

    // Audit: [ts, id].
    const audit = (cursor?: string) =>
      app.inject({ method: 'GET', url: '/v1/audit', query: { session: s.session_id, limit: '1', ...(cursor ? { cursor } : {}) }, headers: bearer(gw.owner) });
    const auditFirst = await audit();
    const auditNext = auditFirst.json().next as string;
    const auditPage = ids(await audit(auditNext));
    expect(auditPage).toHaveLength(1);
    expect(auditPage).not.toEqual(ids(auditFirst));
    const auditUpper = upperId(auditNext, (w) => [w, 1]);
    expect(ids(await audit(auditUpper))).toEqual(auditPage);
    expect(decodeAuditCursor(auditUpper)).toEqual(decodeAuditCursor(auditNext));

    // Incident timeline: [version, from, to, target, decisions, [at, rank, source, id, sub]].
    const timeline = (query: Record<string, string>) => app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { limit: '1', ...query }, headers: bearer(gw.owner) });
    const timelineFirst = await timeline({ target: `session:${s.session_id}`, from: new Date(Date.now() - 60_000).toISOString(), to: new Date(Date.now() + 1_000).toISOString() });
    const timelineNext = timelineFirst.json().next as string;
    const timelinePage = ids(await timeline({ cursor: timelineNext }));
    expect(timelinePage).toHaveLength(1);
    expect(timelinePage).not.toEqual(ids(timelineFirst));
    const timelineUpper = upperId(timelineNext, (w) => [w[5] as unknown[], 3]);
    expect(ids(await timeline({ cursor: timelineUpper }))).toEqual(timelinePage);
    expect(decodeTimelineCursor(timelineUpper)).toEqual(decodeTimelineCursor(timelineNext));
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
