import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// POST /v1/keys/bulk-revoke: a dry run counts, the real run must repeat that count, and every replica
// refuses the revoked tokens at once.

const t = new TestContext();
let a: FastifyInstance;
let b: FastifyInstance;
let gw: GatewayDriver;
let gwB: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  a = await t.app();
  b = await t.app();
  // buildApp returns before the first state-epoch reload is done; sessions answer 503 until it is.
  await a.ctx.sessions.ensureState();
  gw = await new GatewayDriver(t, a).init();
  gwB = new GatewayDriver(t, b);
  gwB.owner = gw.owner;
  gwB.gatewayKey = gw.gatewayKey;
});
afterAll(() => t.teardown());

const bulk = (app: FastifyInstance, key: string, payload: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/keys/bulk-revoke', headers: bearer(key), payload });
const openSession = (app: FastifyInstance, raw: string) => app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(raw), payload: {} });

describe('bulk revoke', () => {
  it('dry-run count equals the real count; the tokens stop on every replica at once; audited and alerted', async () => {
    const victims = [await gw.token('ro', { project: 'p1' }), await gw.token('ro', { project: 'p1' }), await gw.token('ro', { project: 'p1' })];
    const keepRw = await gw.token('rw', { project: 'p1' });
    const keepOther = await gw.token('ro', { project: 'p2' });
    // Replica B has every victim cached as valid.
    for (const v of victims) expect((await openSession(b, v.raw)).statusCode).toBe(201);

    const dry = await bulk(a, gw.owner, { dry_run: true, project_id: 'p1', type: 'ro' });
    expect(dry.statusCode, dry.body).toBe(200);
    expect(dry.json()).toMatchObject({ dry_run: true, count: 3 });
    expect(dry.json().tokens.map((k: { id: string }) => k.id).sort()).toEqual(victims.map((v) => v.id).sort());
    // A dry run changes nothing.
    expect((await openSession(b, victims[0]!.raw)).statusCode).toBe(201);

    const real = await bulk(a, gw.owner, { dry_run: false, project_id: 'p1', type: 'ro', reason: 'INC-6 leaked config', expected_count: dry.json().count });
    expect(real.statusCode, real.body).toBe(200);
    expect(real.json()).toMatchObject({ dry_run: false, count: dry.json().count });
    for (const v of victims) expect((await openSession(b, v.raw)).statusCode).toBe(401);
    for (const v of victims) expect((await openSession(a, v.raw)).statusCode).toBe(401);
    expect((await openSession(b, keepRw.raw)).statusCode).toBe(201);
    expect((await openSession(b, keepOther.raw)).statusCode).toBe(201);

    // Running it again finds nothing left.
    expect((await bulk(a, gw.owner, { dry_run: true, project_id: 'p1', type: 'ro' })).json().count).toBe(0);

    await a.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT details FROM audit_events WHERE action = 'key.bulk_revoked'`);
    expect(rows).toHaveLength(1);
    expect(rows[0].details).toMatchObject({ reason: 'INC-6 leaked config', count: 3 });
    expect([...rows[0].details.ids].sort()).toEqual(victims.map((v) => v.id).sort());
    const revoked = await t.pool().query(`SELECT count(*)::int AS n FROM agent_tokens WHERE revoke_reason = 'INC-6 leaked config'`);
    expect(revoked.rows[0].n).toBe(3);
    const alerts = await t.pool().query(`SELECT numbers FROM alerts WHERE kind = 'TOKENS_REVOKED' AND message LIKE '%INC-6%'`);
    expect(alerts.rows).toEqual([{ numbers: { count: 3 } }]);
  });

  it('a revoke across projects is audited and alerted per project: a key limited to one project sees only its tokens', async () => {
    const creator = await t.operatorKey(a, 'operator');
    const creatorId = (await a.ctx.auth.authenticate(creator)).id;
    const make = async (project: string) =>
      (await a.inject({ method: 'POST', url: '/v1/keys', headers: bearer(creator), payload: { type: 'ro', role: 'code_agent', project_id: project, environment: 'development' } })).json().key.id as string;
    const p6 = [await make('p6'), await make('p6')];
    const p7 = [await make('p7')];
    const dry = (await bulk(a, gw.owner, { dry_run: true, created_by: creatorId })).json();
    expect(dry.count).toBe(3);
    const real = await bulk(a, gw.owner, { dry_run: false, created_by: creatorId, reason: 'INC-9 creator left', expected_count: 3 });
    expect(real.statusCode).toBe(200);
    await a.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT project_id, details FROM audit_events WHERE action = 'key.bulk_revoked' AND details->>'reason' = 'INC-9 creator left' ORDER BY project_id`);
    expect(rows.map((r) => [r.project_id, [...r.details.ids].sort(), r.details.total_count])).toEqual([
      ['p6', [...p6].sort(), 3],
      ['p7', p7, 3],
    ]);
    const alerts = await t.pool().query(`SELECT project_id, numbers FROM alerts WHERE kind = 'TOKENS_REVOKED' AND message LIKE '%INC-9%' ORDER BY project_id`);
    expect(alerts.rows).toEqual([
      { project_id: 'p6', numbers: { count: 2 } },
      { project_id: 'p7', numbers: { count: 1 } },
    ]);
    const p7Viewer = await t.operatorKey(a, 'viewer', ['p7']);
    const seen = (await a.inject({ url: '/v1/alerts?kind=TOKENS_REVOKED', headers: bearer(p7Viewer) })).json().alerts as Array<{ message: string; project_id: string }>;
    expect(seen.filter((al) => al.message.includes('INC-9')).map((al) => al.project_id)).toEqual(['p7']);
  });

  it('the real run refuses when the filter matches another count than the dry run (nothing revoked)', async () => {
    await gw.token('ro', { project: 'p3' });
    await gw.token('ro', { project: 'p3' });
    const dry = (await bulk(a, gw.owner, { dry_run: true, project_id: 'p3' })).json();
    expect(dry.count).toBe(2);
    await gw.token('ro', { project: 'p3' }); // created between the dry run and the real one
    const real = await bulk(a, gw.owner, { dry_run: false, project_id: 'p3', reason: 'x', expected_count: dry.count });
    expect(real.statusCode).toBe(409);
    expect(real.json().error.details).toEqual({ count: 3, expected_count: 2 });
    expect((await bulk(a, gw.owner, { dry_run: true, project_id: 'p3' })).json().count).toBe(3);
  });

  it('filters by creator, creation time and idleness (never used counts from creation)', async () => {
    const other = await t.operatorKey(a, 'operator');
    const otherId = (await a.ctx.auth.authenticate(other)).id;
    const made = await a.inject({ method: 'POST', url: '/v1/keys', headers: bearer(other), payload: { type: 'ro', role: 'code_agent', project_id: 'p4', environment: 'development' } });
    const byOther = made.json().key.id as string;
    const mine = await gw.token('ro', { project: 'p4' });
    const byCreator = (await bulk(a, gw.owner, { dry_run: true, created_by: otherId })).json();
    expect(byCreator.tokens.map((k: { id: string }) => k.id)).toEqual([byOther]);

    const old = await gw.token('ro', { project: 'p5' });
    const usedRecently = await gw.token('ro', { project: 'p5' });
    const fresh = await gw.token('ro', { project: 'p5' });
    const db = t.pool();
    await db.query(`UPDATE agent_tokens SET created_at = now() - interval '40 days', last_used_at = now() - interval '35 days' WHERE id = $1`, [old.id]);
    await db.query(`UPDATE agent_tokens SET created_at = now() - interval '40 days', last_used_at = now() - interval '1 day' WHERE id = $1`, [usedRecently.id]);
    const monthAgo = new Date(Date.now() - 30 * 86_400_000).toISOString();
    const idle = (await bulk(a, gw.owner, { dry_run: true, project_id: 'p5', last_used_before: monthAgo })).json();
    expect(idle.tokens.map((k: { id: string }) => k.id)).toEqual([old.id]);
    const oldOnes = (await bulk(a, gw.owner, { dry_run: true, project_id: 'p5', created_before: monthAgo })).json();
    expect(oldOnes.tokens.map((k: { id: string }) => k.id).sort()).toEqual([old.id, usedRecently.id].sort());
    expect(oldOnes.tokens.map((k: { id: string }) => k.id)).not.toContain(fresh.id);
    expect(mine.id).toBeTruthy();
  });

  it('refuses without a filter, a reason or the dry run count; project-limited operators reach only their projects; viewers cannot', async () => {
    expect((await bulk(a, gw.owner, { dry_run: true })).statusCode).toBe(400);
    expect((await bulk(a, gw.owner, { dry_run: false, project_id: 'p1', expected_count: 0 })).json().error.details[0].field).toBe('reason');
    expect((await bulk(a, gw.owner, { dry_run: false, project_id: 'p1', reason: 'x' })).json().error.details[0].field).toBe('expected_count');
    expect((await bulk(a, gw.owner, { project_id: 'p1' })).statusCode).toBe(400); // dry_run is required

    await gw.token('ro', { project: 'p6' });
    await gw.token('ro', { project: 'p7' });
    const limited = await t.operatorKey(a, 'operator', ['p6']);
    // Naming another project is refused (as creating a token or killing a project there is), not "0 match".
    const other = await bulk(a, limited, { dry_run: true, type: 'ro', project_id: 'p7' });
    expect(other.statusCode).toBe(403);
    expect(other.json().error).toMatchObject({ code: 'FORBIDDEN', details: [{ field: 'project_id' }] });
    // Without a project filter, only its projects' tokens match.
    const own = (await bulk(a, limited, { dry_run: true, type: 'ro' })).json().tokens.map((tok: { project_id: string }) => tok.project_id);
    expect(own.length).toBeGreaterThan(0);
    expect(own.every((p: string) => p === 'p6')).toBe(true);
    expect((await bulk(a, limited, { dry_run: true, project_id: 'p6' })).json().count).toBe(1);
    const viewer = await t.operatorKey(a, 'viewer');
    expect((await bulk(a, viewer, { dry_run: true, project_id: 'p6' })).statusCode).toBe(403);
  });
});

describe('revoke reasons', () => {
  const github = `ghp_${'Q7w6'.repeat(9)}`;
  const clear = (text: unknown) => {
    for (const secret of [gw.gatewayKey, github]) expect(JSON.stringify(text)).not.toContain(secret);
    expect(JSON.stringify(text)).toContain('[REDACTED]');
  };
  const reasonOf = async (id: string) => (await t.pool().query('SELECT revoke_reason FROM agent_tokens WHERE id = $1', [id])).rows[0].revoke_reason as string;

  it('a credential pasted into a revoke reason is masked where it is stored and shown: agent_tokens, the answer, GET /v1/keys', async () => {
    const tok = await gw.token('ro', { project: 'rsn1' });
    const res = await a.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(gw.owner), payload: { reason: `leaked with ${gw.gatewayKey} and ${github}` } });
    expect(res.statusCode, res.body).toBe(200);
    clear(res.json().revoke_reason);
    expect(res.json().revoke_reason).toContain('ksgw_[REDACTED]');
    clear(await reasonOf(tok.id));
    clear((await b.inject({ url: `/v1/keys/${tok.id}`, headers: bearer(gw.owner) })).json().revoke_reason);
    clear((await b.inject({ url: '/v1/keys?project=rsn1&revoked=true', headers: bearer(gw.owner) })).json().keys.find((k: { id: string }) => k.id === tok.id).revoke_reason);

    // A reason recorded in clear by an earlier version is masked where it is shown, also by a repeated revoke (which keeps it).
    await t.pool().query('UPDATE agent_tokens SET revoke_reason = $2 WHERE id = $1', [tok.id, `old ${github}`]);
    clear((await a.inject({ url: `/v1/keys/${tok.id}`, headers: bearer(gw.owner) })).json().revoke_reason);
    clear((await a.inject({ url: '/v1/keys?project=rsn1&revoked=true', headers: bearer(gw.owner) })).json().keys.find((k: { id: string }) => k.id === tok.id).revoke_reason);
    const again = await a.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'again' } });
    expect(again.statusCode).toBe(200);
    clear(again.json().revoke_reason);
  });

  it('a bulk revoke stores its reason masked on every token it revokes', async () => {
    const victims = [await gw.token('ro', { project: 'rsn2' }), await gw.token('ro', { project: 'rsn2' })];
    const dry = await bulk(a, gw.owner, { dry_run: true, project_id: 'rsn2' });
    const real = await bulk(a, gw.owner, { dry_run: false, project_id: 'rsn2', reason: `INC-7 ${github} in a gist`, expected_count: dry.json().count });
    expect(real.statusCode, real.body).toBe(200);
    expect(real.json().tokens.map((k: { id: string }) => k.id).sort()).toEqual(victims.map((v) => v.id).sort());
    for (const k of real.json().tokens) clear(k.revoke_reason);
    for (const v of victims) clear(await reasonOf(v.id));
  });
});
