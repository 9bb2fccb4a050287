import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Structured decision logs (one line per decision: denials at info, allows at debug, with decision_id
// for the audit row) and the log level changed at runtime by an owner, on every replica.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let a: FastifyInstance;
let b: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  a = await t.app({ policyFile: POLICY });
  b = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, a).init();
});
afterAll(() => t.teardown());

const linesFor = (decisionId: string) =>
  t.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['decision_id'] === decisionId && String(l['msg']).startsWith('decision '));

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const read = { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' } };

describe('decision logs and the runtime log level', () => {
  it('at info: one line per denial (with decision_id and code), none for allows', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const allow = await gw.decide(tok.raw, { ...read, session_id: s.session_id });
    const deny = await gw.decide(tok.raw, { server: 'memory', tool: 'delete_entities', arguments: { entityNames: ['x'] }, session_id: s.session_id });
    expect(allow.decision).toBe('allow');
    expect(linesFor(allow.decision_id)).toEqual([]);
    const [line, ...more] = linesFor(deny.decision_id);
    expect(more).toEqual([]);
    expect(line).toMatchObject({ level: 30, msg: 'decision denied', decision: 'deny', code: 'PERMISSION_DENIED', token_id: tok.id, server: 'memory', tool: 'delete_entities', session_id: s.session_id, gateway: expect.any(String) });
    expect(line!['duration_ms']).toBeTypeOf('number');
    // The same decision_id is on its audit row.
    await a.ctx.audit.writer.flush();
    const { rows } = await t.pool().query('SELECT code FROM audit_events WHERE decision_id = $1', [deny.decision_id]);
    expect(rows).toEqual([{ code: 'PERMISSION_DENIED' }]);
  });

  it('only an owner may change it; a bad level is a 400', async () => {
    const operator = await t.operatorKey(a, 'operator');
    const forbidden = await a.inject({ method: 'PUT', url: '/v1/admin/log-level', headers: bearer(operator), payload: { level: 'debug' } });
    expect(forbidden.statusCode).toBe(403);
    expect(forbidden.json().error.code).toBe('FORBIDDEN');
    const bad = await a.inject({ method: 'PUT', url: '/v1/admin/log-level', headers: bearer(gw.owner), payload: { level: 'verbose' } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.code).toBe('INVALID_REQUEST');
    const tok = await gw.token('ro');
    expect((await a.inject({ method: 'PUT', url: '/v1/admin/log-level', headers: bearer(tok.raw), payload: { level: 'debug' } })).statusCode).toBe(403);
    expect(a.ctx.log.level).toBe('info');
  });

  it('an owner sets debug on every replica: allows get their line too; back to info, they stop', async () => {
    const set = await a.inject({ method: 'PUT', url: '/v1/admin/log-level', headers: bearer(gw.owner), payload: { level: 'debug' } });
    expect(set.statusCode, set.body).toBe(200);
    expect(set.json()).toMatchObject({ level: 'debug', previous: 'info', replicas_told: 1 });
    expect(a.ctx.log.level).toBe('debug');
    await until(() => b.ctx.log.level === 'debug', 'the other replica to follow');
    const seen = await b.inject({ url: '/v1/admin/log-level', headers: bearer(gw.owner) });
    expect(seen.json()).toEqual({ level: 'debug', configured: 'info' });

    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const allow = await gw.decide(tok.raw, { ...read, session_id: s.session_id });
    expect(linesFor(allow.decision_id)).toEqual([expect.objectContaining({ level: 20, msg: 'decision allowed', decision: 'allow', code: 'OK', token_id: tok.id })]);

    const back = await b.inject({ method: 'PUT', url: '/v1/admin/log-level', headers: bearer(gw.owner), payload: { level: 'info' } });
    expect(back.json()).toMatchObject({ level: 'info', previous: 'debug' });
    await until(() => a.ctx.log.level === 'info', 'the first replica to follow back');
    const quiet = await gw.decide(tok.raw, { ...read, session_id: s.session_id });
    expect(linesFor(quiet.decision_id)).toEqual([]);

    await a.ctx.audit.writer.flush();
    await b.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT details->>'level' AS level FROM audit_events WHERE action = 'log_level.set' ORDER BY ts, seq`);
    expect(rows.map((r) => r.level)).toEqual(['debug', 'info']);

    // Each replica's line is a warning (pino's level 40, written once): the levels are fields of their own.
    const changed = t.logs.lines.filter((l) => l.includes('"msg":"log level changed"'));
    expect(changed).toHaveLength(4);
    for (const raw of changed) expect(raw.match(/"level":/g), raw).toHaveLength(1);
    const parsed = changed.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(parsed.every((l) => l['level'] === 40)).toBe(true);
    expect(parsed.map((l) => `${l['previous_level']}→${l['new_level']}`).sort()).toEqual(['debug→info', 'debug→info', 'info→debug', 'info→debug']);
  });

  it('a replica whose subscriber was away when the level changed catches up when it reconnects', async () => {
    expect(b.ctx.log.level).toBe('info');
    // b's subscriber connection drops (a network blip); the change is published while it is away.
    b.ctx.redis.sub.disconnect();
    const set = await a.inject({ method: 'PUT', url: '/v1/admin/log-level', headers: bearer(gw.owner), payload: { level: 'warn' } });
    expect(set.json()).toMatchObject({ level: 'warn', replicas_told: 0 });
    await new Promise((r) => setTimeout(r, 300));
    expect(b.ctx.log.level).toBe('info');
    await b.ctx.redis.sub.connect();
    await until(() => b.ctx.log.level === 'warn', 'the replica to catch up after reconnecting');
    const back = await a.inject({ method: 'PUT', url: '/v1/admin/log-level', headers: bearer(gw.owner), payload: { level: 'info' } });
    expect(back.statusCode).toBe(200);
    await until(() => b.ctx.log.level === 'info', 'the replica to follow back');
  });

  it('session opened names the session and its token by id (token_id, not hidden by the redaction of `token`); the raw token is in no line', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const raw = t.logs.lines.find((l) => l.includes('"msg":"session opened"') && l.includes(s.session_id));
    expect(raw).toBeDefined();
    expect(JSON.parse(raw!)).toMatchObject({ level: 30, session_id: s.session_id, token_id: tok.id, state: 'active' });
    expect(raw).not.toContain('[redacted]');
    await gw.decide(tok.raw, { ...read, session_id: s.session_id });
    await gw.decide(tok.raw, { server: 'memory', tool: 'delete_entities', arguments: { entityNames: ['x'] }, session_id: s.session_id });
    expect(t.logs.text).not.toContain(tok.raw);
    expect(t.logs.text).not.toContain(gw.gatewayKey);
    expect(t.logs.text).not.toContain(gw.owner);
  });
});

describe('a flood of denials in the log', () => {
  it('is not one info line each: at most 10 a second per code (the audit trail has every one), the rest at debug', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const denied = await Promise.all(
      Array.from({ length: 40 }, (_, i) => gw.decide(tok.raw, { server: 'memory', tool: 'delete_entities', arguments: { entityNames: [`x${i}`] }, session_id: s.session_id })),
    );
    expect(denied.every((d) => d.code === 'PERMISSION_DENIED')).toBe(true);
    const infoLines = denied.flatMap((d) => linesFor(d.decision_id)).filter((l) => l['level'] === 30);
    expect(infoLines.length).toBeGreaterThan(0);
    expect(infoLines.length).toBeLessThan(40);
    await a.ctx.audit.writer.flush();
    const { rows } = await t.pool().query('SELECT count(*)::int AS n FROM audit_events WHERE decision_id = ANY($1::text[])', [denied.map((d) => d.decision_id)]);
    expect(rows[0].n).toBe(40);
  });
});
