import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OperatorPrincipal } from '../../src/tokens/authenticator.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// Alerts of a condition that is over leave the inbox on their own: a lifted or expired kill acknowledges
// its KILL_CREATED, a resume the SESSION_HALTED alerts of the halts it lifted (docs/alerts.md, "Alerts
// that answer others"). Through HTTP, with the alerts the decision pipeline raises.

const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let operatorKey: string;
let operatorId: string;

beforeAll(async () => {
  await t.setup();
  // The decision tests' policy, where only a cascade of writes halts the token: a write in a read-only
  // session halts that session alone.
  mkdirSync(t.dataDir, { recursive: true });
  const policyFile = join(t.dataDir, 'policy.yaml');
  writeFileSync(policyFile, `${readFileSync('test/fixtures/decisions/policy.yaml', 'utf8')}\nhalt_token_on: [CASCADE_WRITE]\n`);
  app = await t.app({ policyFile });
  await app.ctx.sessions.ensureState();
  gw = await new GatewayDriver(t, app).init();
  operatorKey = await t.operatorKey(app, 'operator');
  operatorId = ((await app.ctx.auth.authenticate(operatorKey)) as OperatorPrincipal).id;
});
afterAll(() => t.teardown());

const write = (path: string) => ({ server: 'filesystem', tool: 'write_file', arguments: { path, content: 'x' } });

interface AlertRow {
  id: string;
  kind: string;
  acknowledged_by: string | null;
  ack_note: string | null;
  details: Record<string, unknown>;
}
async function alertsWhere(sql: string, args: unknown[]): Promise<AlertRow[]> {
  return (await t.pool().query<AlertRow>(`SELECT id, kind, acknowledged_by, ack_note, details FROM alerts WHERE ${sql} ORDER BY id`, args)).rows;
}
async function ackAudit(alertId: string) {
  await app.ctx.audit.writer.flush();
  const { rows } = await t.pool().query(`SELECT actor_type, actor_id, details FROM audit_events WHERE action = 'alert.acknowledged' AND target = $1`, [`alert:${alertId}`]);
  return rows;
}
const kill = async (body: Record<string, unknown>) => {
  const res = await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(operatorKey), payload: body });
  expect(res.statusCode, res.body).toBe(201);
  const id: string = res.json().kill.id;
  // KILL_CREATED is raised without waiting; the lift below must find it stored.
  await until(async () => (await alertsWhere(`kind = 'KILL_CREATED' AND details->>'kill_id' = $1`, [id])).length === 1, 5_000, 'the KILL_CREATED alert');
  return id;
};

describe('kills', () => {
  it('lifting a kill acknowledges its KILL_CREATED alert (system:kill-lift, audited); another kill of the target keeps its own', async () => {
    const tok = await gw.token('rw');
    const first = await kill({ target: 'token', token_id: tok.id, reason: 'INC-11 runaway agent' });
    const second = await kill({ target: 'token', token_id: tok.id, reason: 'INC-11 second look' });

    const lifted = await app.inject({ method: 'DELETE', url: `/v1/kills/${first}`, headers: bearer(operatorKey), payload: { reason: 'INC-11 contained' } });
    expect(lifted.statusCode).toBe(200);

    // When the lift answers, the alert is out of the inbox.
    const [created] = await alertsWhere(`kind = 'KILL_CREATED' AND details->>'kill_id' = $1`, [first]);
    const [liftedAlert] = await alertsWhere(`kind = 'KILL_LIFTED' AND details->>'kill_id' = $1`, [first]);
    expect(created!.acknowledged_by).toBe('system:kill-lift');
    expect(created!.ack_note).toBe(`kill lifted (KILL_LIFTED ${liftedAlert!.id})`);
    expect(liftedAlert!.details['resolves']).toEqual([created!.id]);
    expect(liftedAlert!.acknowledged_by).toBeNull();
    expect(await ackAudit(created!.id)).toEqual([expect.objectContaining({ actor_type: 'system', actor_id: 'kill-lift', details: expect.objectContaining({ kind: 'KILL_CREATED', answered_by: liftedAlert!.id }) })]);

    // Matched by the kill's id, not its target: the kill still in force keeps its alert open.
    const [other] = await alertsWhere(`kind = 'KILL_CREATED' AND details->>'kill_id' = $1`, [second]);
    expect(other!.acknowledged_by).toBeNull();
    const open = await app.inject({ method: 'GET', url: `/v1/alerts?kind=KILL_CREATED&acknowledged=false&token=${tok.id}`, headers: bearer(operatorKey) });
    expect(open.json().alerts.map((a: { id: string }) => a.id)).toEqual([other!.id]);
  });

  it('the calls a kill denies raise one open KILL_SWITCH alert per project, counted up in place; the lift acknowledges it and the next kill raises a new one', async () => {
    const alpha = await Promise.all([1, 2, 3].map(() => gw.token('rw')));
    const beta = await gw.token('rw', { project: 'beta' });
    const id = await kill({ target: 'server', server: 'filesystem', reason: 'INC-13 filesystem storm' });
    const sessions = new Map<string, string>();
    for (const tok of [...alpha, beta]) sessions.set(tok.id, (await gw.session(tok.raw)).session_id);
    const deny = async (tok: { raw: string; id: string }) => expect((await gw.decide(tok.raw, { ...write('s.md'), session_id: sessions.get(tok.id)! })).code).toBe('KILL_SWITCH');
    for (const tok of [...alpha, beta]) await deny(tok);
    // Again within the minute: not counted a second time.
    await deny(alpha[0]!);
    const ofKill = (killId: string) => t.pool().query(`SELECT * FROM alerts WHERE kind = 'KILL_SWITCH' AND details->>'kill_id' = $1 ORDER BY project_id`, [killId]).then((r) => r.rows);
    await until(async () => (await ofKill(id)).map((a) => a.numbers.denied).join() === '3,1', 5_000, 'the counted KILL_SWITCH alerts');
    const [a, b] = await ofKill(id);
    expect(a).toMatchObject({ project_id: 'alpha', token_id: null, acknowledged_at: null, numbers: { denied: 3, tokens: 3 } });
    expect([...a.details.agent_ids].sort()).toEqual(alpha.map((x) => x.id).sort());
    expect(a.message).toContain(`Kill ${id} denied calls of 3 tokens of project alpha`);
    expect(b).toMatchObject({ project_id: 'beta', numbers: { denied: 1, tokens: 1 }, details: { agent_ids: [beta.id] } });

    expect((await app.inject({ method: 'DELETE', url: `/v1/kills/${id}`, headers: bearer(operatorKey), payload: { reason: 'INC-13 contained' } })).statusCode).toBe(200);
    const [lifted] = await alertsWhere(`kind = 'KILL_LIFTED' AND details->>'kill_id' = $1`, [id]);
    expect((await ofKill(id)).map((x) => x.acknowledged_by)).toEqual(['system:kill-lift', 'system:kill-lift']);
    expect(lifted!.details['resolves']).toEqual(expect.arrayContaining([a.id, b.id]));

    // A new kill of the same target: a new alert.
    const next = await kill({ target: 'server', server: 'filesystem', reason: 'INC-13 again' });
    const late = await gw.token('rw');
    sessions.set(late.id, (await gw.session(late.raw)).session_id);
    await deny(late);
    await until(async () => (await ofKill(next)).length === 1, 5_000, 'the next kill’s KILL_SWITCH alert');
    expect((await ofKill(next))[0]).toMatchObject({ acknowledged_at: null, numbers: { denied: 1, tokens: 1 } });
    expect((await app.inject({ method: 'DELETE', url: `/v1/kills/${next}`, headers: bearer(operatorKey), payload: { reason: 'INC-13 over' } })).statusCode).toBe(200);
  });

  it('an expired kill acknowledges its KILL_CREATED alert (system:kill-expiry)', async () => {
    const tok = await gw.token('rw');
    const id = await kill({ target: 'token', token_id: tok.id, reason: 'INC-12 cool down', expires_in: 3600 });
    // As if its hour had passed (rather than waiting for a short one): the expiry is recorded like any other.
    await t.pool().query(`UPDATE kills SET created_at = created_at - interval '2 hours', expires_at = now() - interval '1 second' WHERE id = $1`, [id]);
    await app.ctx.kills.tick();
    expect((await app.inject({ method: 'GET', url: `/v1/kills/${id}`, headers: bearer(operatorKey) })).json().state).toBe('expired');

    const [created] = await alertsWhere(`kind = 'KILL_CREATED' AND details->>'kill_id' = $1`, [id]);
    const [expired] = await alertsWhere(`kind = 'KILL_LIFTED' AND details->>'kill_id' = $1`, [id]);
    expect(expired!.details).toMatchObject({ expired: true, resolves: [created!.id] });
    expect(created).toMatchObject({ acknowledged_by: 'system:kill-expiry', ack_note: `kill expired (KILL_LIFTED ${expired!.id})` });
    expect(await ackAudit(created!.id)).toEqual([expect.objectContaining({ actor_type: 'system', actor_id: 'kill-expiry' })]);
  });
});

describe('resumes', () => {
  it('a session resume acknowledges the SESSION_HALTED alerts of the halts it lifted, not the token halt still in force; the token resume does', async () => {
    const tok = await gw.token('rw');
    const readOnly = (await gw.session(tok.raw, { read_only: true })).session_id;
    const writer = (await gw.session(tok.raw)).session_id;
    const halted = (sid: string) => alertsWhere(`kind = 'SESSION_HALTED' AND session_id = $1`, [sid]);

    // A write in the read-only session halts it alone; then a cascade in the other halts it and the token.
    expect((await gw.decide(tok.raw, { ...write('a.md'), session_id: readOnly })).code).toBe('PERMISSION_DENIED');
    for (const path of ['b.md', 'c.md']) expect((await gw.decide(tok.raw, { ...write(path), session_id: writer })).code).toBe('OK');
    expect((await gw.decide(tok.raw, { ...write('d.md'), session_id: writer })).code).toBe('CASCADE_WRITE');
    await until(async () => (await halted(readOnly)).length === 1 && (await halted(writer)).length === 1, 5_000, 'the two SESSION_HALTED alerts');
    const [sessionHalt] = await halted(readOnly);
    const [tokenHalt] = await halted(writer);
    expect(tokenHalt!.details['trigger']).toBe('CASCADE_WRITE');

    // The read-only session's own halt is over: its alert goes, though the token is still halted.
    const r1 = await app.inject({ method: 'POST', url: `/v1/sessions/${readOnly}/resume`, headers: bearer(operatorKey), payload: { reason: 'the write was planned' } });
    expect(r1.json()).toMatchObject({ token_still_halted: true });
    expect((await halted(readOnly))[0]).toMatchObject({ acknowledged_by: 'system:session-resume', ack_note: expect.stringContaining('the write was planned') });
    expect(await ackAudit(sessionHalt!.id)).toEqual([
      expect.objectContaining({ actor_type: 'system', actor_id: 'session-resume', details: expect.objectContaining({ resolved_by: `operator:${operatorId}`, resolved_with: 'session.resumed' }) }),
    ]);
    expect((await halted(writer))[0]!.acknowledged_by).toBeNull();

    // The session whose cascade halted the token: its own halt is lifted, the token's is not, and the
    // alert of that halt stays open.
    const r2 = await app.inject({ method: 'POST', url: `/v1/sessions/${writer}/resume`, headers: bearer(operatorKey), payload: { reason: 'looked at the writes' } });
    expect(r2.statusCode).toBe(200);
    expect(r2.json()).toMatchObject({ token_still_halted: true });
    expect((await halted(writer))[0]!.acknowledged_by).toBeNull();

    const rk = await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/resume`, headers: bearer(operatorKey), payload: { reason: 'chain confirmed' } });
    expect(rk.statusCode).toBe(200);
    expect((await halted(writer))[0]).toMatchObject({ acknowledged_by: 'system:token-resume', ack_note: expect.stringContaining('chain confirmed') });
    expect(await ackAudit(tokenHalt!.id)).toEqual([expect.objectContaining({ actor_type: 'system', actor_id: 'token-resume', details: expect.objectContaining({ resolved_with: 'agent_token.resumed' }) })]);
    const open = await app.inject({ method: 'GET', url: `/v1/alerts?kind=SESSION_HALTED&acknowledged=false&token=${tok.id}`, headers: bearer(operatorKey) });
    expect(open.json().alerts).toEqual([]);
  });

  it('a token resume acknowledges the alerts of the token and of its halted sessions, and no other token’s', async () => {
    const tok = await gw.token('rw');
    const other = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    const so = (await gw.session(other.raw, { read_only: true })).session_id;
    for (const path of ['a.md', 'b.md']) expect((await gw.decide(tok.raw, { ...write(path), session_id: s })).code).toBe('OK');
    expect((await gw.decide(tok.raw, { ...write('c.md'), session_id: s })).code).toBe('CASCADE_WRITE');
    expect((await gw.decide(other.raw, { ...write('a.md'), session_id: so })).code).toBe('PERMISSION_DENIED');
    const of = (id: string) => alertsWhere(`kind = 'SESSION_HALTED' AND token_id = $1`, [id]);
    await until(async () => (await of(tok.id)).length === 1 && (await of(other.id)).length === 1, 5_000, 'the SESSION_HALTED alerts');

    const rk = await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/resume`, headers: bearer(operatorKey), payload: { reason: 'fixed' } });
    expect(rk.statusCode).toBe(200);
    expect(rk.json().sessions_resumed).toEqual([s]);
    expect((await of(tok.id))[0]).toMatchObject({ acknowledged_by: 'system:token-resume' });
    expect((await of(other.id))[0]!.acknowledged_by).toBeNull();
  });
});

describe('a flag back on seen only by polling', () => {
  it("acknowledges the flag's open FLAG_DISABLED and KILL_SWITCH alerts (system:flags-poll), not another flag's", async () => {
    const flag = 'mcp.filesystem.write';
    const off = await app.ctx.alerts.raise({ kind: 'FLAG_DISABLED', message: `${flag} was turned off in Unleash.`, details: { flag } });
    const denied = await app.ctx.alerts.raise({ kind: 'KILL_SWITCH', message: `Calls denied: ${flag} is off.`, details: { flag } });
    const other = await app.ctx.alerts.raise({ kind: 'KILL_SWITCH', message: 'Calls denied: mcp.memory.write is off.', details: { flag: 'mcp.memory.write' } });
    // What FlagService emits when a poll finds the flag on again (no webhook event came).
    app.ctx.flags.emit('polled-change', { flag, enabled: true, previous: false, revision: null });
    await until(async () => (await alertsWhere('id = ANY($1::uuid[])', [[off.id, denied.id]])).every((a) => a.acknowledged_by === 'system:flags-poll'), 5_000, 'both alerts acknowledged');
    expect((await alertsWhere('id = $1', [other.id]))[0]!.acknowledged_by).toBeNull();
    expect((await ackAudit(denied.id))[0]).toMatchObject({ actor_type: 'system', actor_id: 'flags-poll', details: { source: 'poll' } });
  });
});
