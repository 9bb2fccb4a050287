import type { FastifyInstance } from 'fastify';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.js';
import { GRANT_STALE_AFTER_MS, GrantService } from '../../src/grants/service.js';
import { grantStore } from '../../src/grants/store.js';
import { sessionStore } from '../../src/sessions/store.js';
import { replicaWithoutAudit } from '../helpers/audit-down.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// Every replica keeps the active grants in memory. A grant is a permission, so a replica that cannot
// see Postgres must not keep one alive past a revocation, nor trust an old set for long.

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

describe('grants in the audit trail', () => {
  it("belong to the token's project and name it as agent_token:<id>: an operator limited to that project sees them", async () => {
    const tok = await gw.token('rw', { project: 'alpha' });
    const created = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, reason: 'INC-43: prod logs', expires_in: 600 } });
    expect(created.statusCode).toBe(201);
    const grantAlert = async () => ((await app.inject({ url: '/v1/alerts?kind=GRANT_ISSUED', headers: bearer(gw.owner) })).json().alerts as Array<{ details: { grant_id?: string } }>).find((a) => a.details.grant_id === created.json().id);
    await until(async () => (await grantAlert()) !== undefined, 5_000, 'the GRANT_ISSUED alert');
    const issued = [await grantAlert()];
    expect(issued[0]).toMatchObject({ kind: 'GRANT_ISSUED', token_id: tok.id, project_id: 'alpha', severity: 'warning' });
    expect((await app.inject({ method: 'DELETE', url: `/v1/grants/${created.json().id}`, headers: bearer(gw.owner) })).statusCode).toBe(200);
    await app.ctx.audit.writer.flush();
    const limited = await t.operatorKey(app, 'viewer', ['alpha']);
    const seen = await app.inject({ method: 'GET', url: `/v1/audit?kind=ADMIN&limit=100`, headers: bearer(limited) });
    const rows = (seen.json().events as Array<{ action: string; target: string; project_id: string }>).filter((e) => e.action.startsWith('grant.'));
    expect(rows.map((r) => [r.action, r.target, r.project_id]).sort()).toEqual([
      ['grant.create', `agent_token:${tok.id}`, 'alpha'],
      ['grant.revoke', `agent_token:${tok.id}`, 'alpha'],
    ]);
  });
});

describe('the environment of a grant', () => {
  it('is production for a production grant and null for a large_results grant, which may not name one (it read as production access given to a development token)', async () => {
    const tok = await gw.token('rw');
    const grant = (payload: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, reason: 'INC-7 export', expires_in: 600, ...payload } });
    const large = await grant({ kind: 'large_results' });
    expect(large.statusCode, large.body).toBe(201);
    expect(large.json()).toMatchObject({ kind: 'large_results', environment: null });
    const production = await grant({});
    expect(production.json()).toMatchObject({ kind: 'production', environment: 'production' });
    const named = await grant({ kind: 'large_results', environment: 'production' });
    expect(named.statusCode).toBe(400);
    expect(named.json().error).toMatchObject({ code: 'INVALID_REQUEST', details: [{ field: 'environment' }] });
    const listed = (await app.inject({ url: `/v1/grants?token=${tok.id}`, headers: bearer(gw.owner) })).json().grants as Array<{ kind: string; environment: string | null }>;
    expect(listed.map((g) => [g.kind, g.environment]).sort()).toEqual([
      ['large_results', null],
      ['production', 'production'],
    ]);
  });
});

describe('grants limited to a session', () => {
  it("refuse (400 naming session_id) a session that does not exist or is another token's; accept the token's own, stored in lower case", async () => {
    const tok = await gw.token('rw');
    const other = await gw.token('rw');
    const mine = (await gw.session(tok.raw)).session_id;
    const theirs = (await gw.session(other.raw)).session_id;
    const grant = (session_id: string) => app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, session_id, reason: 'INC-46 prod read', expires_in: 600 } });
    for (const bad of [theirs, 'garbage', '0190aaaa-0000-7000-8000-000000000000']) {
      const res = await grant(bad);
      expect(res.statusCode, bad).toBe(400);
      expect(res.json().error.details[0]).toMatchObject({ field: 'session_id' });
    }
    const refused = await app.inject({ url: `/v1/grants?token=${tok.id}`, headers: bearer(gw.owner) });
    expect(refused.json().grants).toEqual([]);

    const ok = await grant(mine.toUpperCase());
    expect(ok.statusCode, ok.body).toBe(201);
    expect(ok.json().session_id).toBe(mine);
    expect(app.ctx.grants.has('production', tok.id, mine)).toBe(true);
  });

  it('refuse (400 naming session_id) a closed session, which never runs again; accept a halted one, which an operator may resume', async () => {
    const tok = await gw.token('rw');
    const grant = (session_id: string) => app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, session_id, reason: 'INC-47 prod read', expires_in: 600 } });
    const closed = (await gw.session(tok.raw)).session_id;
    // What the minute sweep does to a session that idled out of Redis.
    expect(await sessionStore.closeSessions(app.ctx.pool, [closed], 'idle-sweep')).toBe(1);
    const res = await grant(closed);
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().error.code).toBe('INVALID_REQUEST');
    expect(res.json().error.details).toHaveLength(1);
    expect(res.json().error.details[0].field).toBe('session_id');
    expect(res.json().error.details[0].problem).toContain('is closed');
    expect((await app.inject({ url: `/v1/grants?token=${tok.id}`, headers: bearer(gw.owner) })).json().grants).toEqual([]);

    const halted = (await gw.session(tok.raw, { read_only: true })).session_id;
    const write = await gw.decide(tok.raw, { server: 'filesystem', tool: 'write_file', arguments: { path: 'a.md', content: 'x' }, session_id: halted });
    expect(write.session).toMatchObject({ state: 'halted', trigger: 'WRITE_IN_READ_SESSION' });
    const ok = await grant(halted);
    expect(ok.statusCode, ok.body).toBe(201);
    expect(ok.json().session_id).toBe(halted);
  });
});

describe('grant reasons', () => {
  it('a credential pasted into a reason is masked where it is stored and shown: grants table, list, alert', async () => {
    const tok = await gw.token('rw');
    const created = await app.inject({
      method: 'POST',
      url: '/v1/grants',
      headers: bearer(gw.owner),
      payload: { token_id: tok.id, reason: `INC-45 debug with ${tok.raw} and Authorization: Bearer abcdefghijklmnop1234`, expires_in: 600 },
    });
    expect(created.statusCode).toBe(201);
    const id = created.json().id as string;
    const clear = (text: unknown) => {
      expect(JSON.stringify(text)).not.toContain(tok.raw);
      expect(JSON.stringify(text)).not.toContain('abcdefghijklmnop1234');
      expect(JSON.stringify(text)).toContain('mcp_rw_[REDACTED]');
    };
    clear(created.json().reason);
    clear((await t.pool().query('SELECT reason FROM grants WHERE id = $1', [id])).rows[0].reason);
    clear((await app.inject({ url: `/v1/grants?token=${tok.id}`, headers: bearer(gw.owner) })).json().grants[0].reason);
    const alert = async () => ((await app.inject({ url: '/v1/alerts?kind=GRANT_ISSUED', headers: bearer(gw.owner) })).json().alerts as Array<{ message: string; details: { grant_id?: string } }>).find((a) => a.details.grant_id === id);
    await until(async () => (await alert()) !== undefined, 5_000, 'the GRANT_ISSUED alert');
    clear((await alert())!.message);
  });
});

describe('listing grants', () => {
  it('an operator limited to projects lists the grants of its projects only', async () => {
    const alphaTok = await gw.token('rw', { project: 'alpha' });
    const betaTok = await gw.token('rw', { project: 'beta' });
    for (const token_id of [alphaTok.id, betaTok.id]) {
      expect((await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id, reason: 'INC-44', expires_in: 600 } })).statusCode).toBe(201);
    }
    const listed = async (key: string) =>
      new Set(((await app.inject({ method: 'GET', url: '/v1/grants', headers: bearer(key) })).json().grants as Array<{ token_id: string }>).map((g) => g.token_id));
    const beta = await listed(await t.operatorKey(app, 'viewer', ['beta']));
    expect(beta.has(betaTok.id)).toBe(true);
    expect(beta.has(alphaTok.id)).toBe(false);
    const all = await listed(gw.owner);
    expect(all.has(alphaTok.id) && all.has(betaTok.id)).toBe(true);
  });
});

describe('grants held by a replica', () => {
  it('a grant that has expired is not honoured by a replica before its next reload drops it', async () => {
    const tok = await gw.token('rw');
    const pool = createPool(t.databaseUrl, { max: 1 });
    const replica = new GrantService(pool, app.ctx.redis, 3600);
    try {
      // Straight into Postgres: the API's shortest grant (60 s) outlasts the trust in a loaded set
      // (GRANT_STALE_AFTER_MS), which would hide what is tested here.
      const expiresAt = new Date(Date.now() + 5_000);
      await grantStore.insert(pool, { id: uuidv7(), kind: 'production', token_id: tok.id, session_id: null, environment: 'production', reason: 'INC-46', created_by: 'test', expires_at: expiresAt });
      await replica.reload();
      expect(replica.has('production', tok.id, undefined)).toBe(true);
      // A millisecond after its end, with the set loaded well within GRANT_STALE_AFTER_MS: no longer in force.
      expect(replica.has('production', tok.id, undefined, expiresAt.getTime() + 1)).toBe(false);
    } finally {
      await pool.end();
    }
  });

  it('a replica that cannot reload after a change is announced drops its grants; an old set is not trusted', async () => {
    const tok = await gw.token('rw');
    // A second replica's grant cache, on a Postgres connection this test can take away.
    const pool = createPool(t.databaseUrl, { max: 1 });
    const replica = new GrantService(pool, app.ctx.redis, 3600);
    await replica.start();
    try {
      const created = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, reason: 'INC-42: read the prod logs', expires_in: 600 } });
      expect(created.statusCode).toBe(201);
      await until(() => replica.has('production', tok.id, undefined), 5_000, 'the grant to reach the replica');
      // Not reloaded for longer than GRANT_STALE_AFTER_MS (the grant itself runs 600 s): not trusted.
      expect(replica.has('production', tok.id, undefined, Date.now() + GRANT_STALE_AFTER_MS + 1_000)).toBe(false);

      await pool.end(); // the replica loses Postgres
      const revoked = await app.inject({ method: 'DELETE', url: `/v1/grants/${created.json().id}`, headers: bearer(gw.owner) });
      expect(revoked.statusCode).toBe(200);
      await until(() => !replica.has('production', tok.id, undefined), 5_000, 'the replica to drop the grant it can no longer check');
    } finally {
      await replica.stop();
      await pool.end().catch(() => {});
    }
  });
});

describe('when the audit row of a grant cannot be written', () => {
  const grantRows = async (action: string, id: string) => (await t.pool().query('SELECT count(*)::int AS n FROM audit_events WHERE action = $1 AND details->>$2 = $3', [action, 'id', id])).rows[0].n;
  const refused = (action: string) => t.logs.lines.some((l) => l.includes('audit row for an admin action could not be written') && l.includes(`"action":"${action}"`));

  it('POST /v1/grants answers 503 SERVICE_UNAVAILABLE and no grant exists (its row is written before the grant is committed); once the trail is back it grants', async () => {
    const tok = await gw.token('rw');
    const payload = { token_id: tok.id, reason: 'INC-48 prod read while the trail is down', expires_in: 600 };
    const { app: broken, restore } = await replicaWithoutAudit(t, 'grant.%', { policyFile: POLICY });
    try {
      const res = await broken.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload });
      expect(res.statusCode, res.body).toBe(503);
      expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
      expect(res.json().error.message).toContain('no grant was created');
      expect(refused('grant.create')).toBe(true);
      // Never committed, so no replica can hold it: the one that answered reloads after each change.
      expect((await t.pool().query('SELECT count(*)::int AS n FROM grants WHERE token_id = $1', [tok.id])).rows[0].n).toBe(0);
      await Promise.all([broken.ctx.grants.reload(), app.ctx.grants.reload()]);
      expect(broken.ctx.grants.has('production', tok.id, undefined)).toBe(false);
      expect(app.ctx.grants.has('production', tok.id, undefined)).toBe(false);
    } finally {
      await restore();
    }
    const again = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload });
    expect(again.statusCode, again.body).toBe(201);
    expect(app.ctx.grants.has('production', tok.id, undefined)).toBe(true);
    expect(await grantRows('grant.create', again.json().id)).toBe(1);
  });

  it('DELETE /v1/grants/:id revokes all the same and answers 503 SERVICE_UNAVAILABLE naming the missing row; revoking again answers 200, keeps the first revocation and writes the row', async () => {
    const tok = await gw.token('rw');
    const created = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, reason: 'INC-49 prod read', expires_in: 600 } });
    expect(created.statusCode).toBe(201);
    const id = created.json().id as string;
    const { app: broken, restore } = await replicaWithoutAudit(t, 'grant.%', { policyFile: POLICY });
    let revokedAt: string;
    try {
      const res = await broken.inject({ method: 'DELETE', url: `/v1/grants/${id}`, headers: bearer(gw.owner) });
      expect(res.statusCode, res.body).toBe(503);
      expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
      expect(res.json().error.message).toContain(`grant ${id} was revoked at`);
      expect(res.json().error.message).toContain('grant.revoke audit row');
      expect(refused('grant.revoke')).toBe(true);
      const { rows } = await t.pool().query('SELECT revoked_at FROM grants WHERE id = $1', [id]);
      expect(rows[0].revoked_at).toBeInstanceOf(Date);
      revokedAt = (rows[0].revoked_at as Date).toISOString();
      expect(broken.ctx.grants.has('production', tok.id, undefined)).toBe(false);
    } finally {
      await restore();
    }
    await app.ctx.grants.reload();
    expect(app.ctx.grants.has('production', tok.id, undefined)).toBe(false);
    expect(await grantRows('grant.revoke', id)).toBe(0);

    const again = await app.inject({ method: 'DELETE', url: `/v1/grants/${id}`, headers: bearer(gw.owner) });
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json().revoked_at).toBe(revokedAt);
    expect(await grantRows('grant.revoke', id)).toBe(1);
  });
});

describe('what a grant opens', () => {
  const read = { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' } };
  const grant = (payload: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { reason: 'INC-51 prod read', expires_in: 600, ...payload } });

  it('a large_results grant is no production grant: a production call still needs one (HUMAN_AUTHORIZATION_REQUIRED)', async () => {
    const tok = await gw.token('rw', { environment: 'production' });
    const s = await gw.session(tok.raw);
    expect((await grant({ kind: 'large_results', token_id: tok.id })).statusCode).toBe(201);
    expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('HUMAN_AUTHORIZATION_REQUIRED');
    expect((await grant({ token_id: tok.id })).statusCode).toBe(201);
    expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('OK');
  });

  it('a grant limited to a session opens that session only, not another session of the token', async () => {
    const tok = await gw.token('rw', { environment: 'production' });
    const granted = await gw.session(tok.raw);
    const other = await gw.session(tok.raw);
    expect((await grant({ token_id: tok.id, session_id: granted.session_id })).statusCode).toBe(201);
    expect((await gw.decide(tok.raw, { ...read, session_id: granted.session_id })).code).toBe('OK');
    expect((await gw.decide(tok.raw, { ...read, session_id: other.session_id })).code).toBe('HUMAN_AUTHORIZATION_REQUIRED');
  });
});
