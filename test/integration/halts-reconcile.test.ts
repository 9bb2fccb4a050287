import type { FastifyInstance } from 'fastify';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { flushPrefix } from '../helpers/redis-flush.js';
import { until } from '../helpers/unleash.js';

// The reconciler re-applies every halt in force in Postgres to Redis (each minute, and before the gate
// trusts a Redis that restarted from a snapshot older than the latest halts). Halted sessions accumulate:
// a halt stays in force until an operator resumes it, and one of a token that was revoked instead never
// is. The reconciler read only the first 10,000 halted sessions, oldest first, so once that many had
// accumulated the newest halts were the ones it no longer re-applied.

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

/** `n` halted sessions of a token of their own, with ids older than any session opened after this. */
async function oldHaltedSessions(n: number): Promise<void> {
  const tok = await gw.token('rw');
  const ids = Array.from({ length: n }, () => uuidv7());
  await t.pool().query(
    `INSERT INTO sessions (id, token_id, state, trigger, halted_at, purpose) SELECT id, $2, 'halted', 'CASCADE_WRITE', now(), 'old incident' FROM unnest($1::uuid[]) AS id`,
    [ids, tok.id],
  );
}

describe('halts of ended tokens', () => {
  it('are no longer re-applied a day after the token was revoked; those of a token revoked now still are', async () => {
    const r = app.ctx.redis;
    const halt = async () => {
      const tok = await gw.token('rw');
      const sid = (await gw.session(tok.raw)).session_id;
      await app.ctx.sessions.halt({ tokenId: tok.id, sessionId: sid, trigger: 'CASCADE_WRITE', haltToken: true, summary: {} });
      await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'incident' } });
      expect((await t.pool().query('SELECT revoked_at FROM agent_tokens WHERE id = $1', [tok.id])).rows[0].revoked_at).not.toBeNull();
      return { tok, sid };
    };
    const old = await halt();
    const recent = await halt();
    await t.pool().query(`UPDATE agent_tokens SET revoked_at = now() - interval '2 days' WHERE id = $1`, [old.tok.id]);
    // Redis lost all four keys (a flush would reload everything; this is the reconciler's own work).
    for (const h of [old, recent]) await r.redis.del(r.key('s', h.sid), r.key('th', h.tok.id));

    await app.ctx.sessions.epoch.reconcileHalts();
    expect(await r.redis.hget(r.key('s', recent.sid), 'st')).toBe('halted');
    expect(await r.redis.get(r.key('th', recent.tok.id))).toBe('CASCADE_WRITE');
    expect(await r.redis.exists(r.key('s', old.sid), r.key('th', old.tok.id))).toBe(0);
    // Postgres still has both halts in force: what operators see is unchanged.
    const inForce = await t.pool().query(`SELECT token_id FROM token_halts WHERE resumed_at IS NULL AND token_id = ANY($1::uuid[])`, [[old.tok.id, recent.tok.id]]);
    expect(inForce.rows).toHaveLength(2);
  });
});

describe('reload after Redis lost its data', () => {
  it('copies the halts and sessions of a token revoked now, not those of one revoked two days ago', async () => {
    const r = app.ctx.redis;
    const halted = async () => {
      const tok = await gw.token('rw');
      const sid = (await gw.session(tok.raw)).session_id;
      await app.ctx.sessions.halt({ tokenId: tok.id, sessionId: sid, trigger: 'CASCADE_WRITE', haltToken: true, summary: {} });
      const revoked = await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'incident' } });
      expect(revoked.statusCode, revoked.body).toBe(200);
      return { tok, sid };
    };
    const old = await halted();
    const recent = await halted();
    await t.pool().query(`UPDATE agent_tokens SET revoked_at = now() - interval '2 days' WHERE id = $1`, [old.tok.id]);
    // Redis flushed: every key of this file goes, at once.
    await flushPrefix(r.redis, t.redisPrefix);
    // This replica's tick may start the reload first: either way, wait for the epoch it sets.
    await app.ctx.sessions.epoch.reload();
    await until(async () => (await r.redis.exists(r.key('epoch'))) === 1, 10_000, 'the reload');
    expect(await r.redis.hget(r.key('s', recent.sid), 'st')).toBe('halted');
    expect(await r.redis.get(r.key('th', recent.tok.id))).toBe('CASCADE_WRITE');
    expect(await r.redis.exists(r.key('s', old.sid), r.key('th', old.tok.id), r.key('so', old.tok.id))).toBe(0);
  });
});

describe('halt reconciler', () => {
  it('re-applies a halt Redis lost however many older halted sessions there are', async () => {
    await oldHaltedSessions(10_000);
    const tok = await gw.token('rw');
    const sid = (await gw.session(tok.raw)).session_id;
    expect((await gw.decide(tok.raw, { ...read, session_id: sid })).code).toBe('OK');
    const halted = await app.ctx.sessions.halt({ tokenId: tok.id, sessionId: sid, trigger: 'SESSION_LIMIT', haltToken: false, summary: {} });
    expect(halted).toMatchObject({ session_halted: true, recorded: true, enforced: true });
    // Redis comes back from a snapshot taken before the halt: the session is active there again.
    const r = app.ctx.redis;
    await r.redis.hset(r.key('s', sid), 'st', 'active', 'trg', '');
    expect((await gw.decide(tok.raw, { ...read, session_id: sid })).code).toBe('OK');

    await app.ctx.sessions.epoch.reconcileHalts();
    expect(await r.redis.hget(r.key('s', sid), 'st')).toBe('halted');
    expect((await gw.decide(tok.raw, { ...read, session_id: sid })).code).toBe('SESSION_HALTED');
  });
});
