import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UNREADABLE_SESSION_STATE, UNREADABLE_TOKEN_HALT } from '../../src/limits/scripts.js';
import { bearer, TestContext } from '../helpers/context.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Fail closed on Redis state the control plane did not write: a token halt key that is not a string
// (MGET reads it as absent), and a session whose state field is neither active, halted nor closed (it was
// read as active). Either way the calls are denied as halted, naming why, and an operator's resume lifts it
// (the resume finds what the gate enforces although Postgres records no halt).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let gw: GatewayDriver;
let owner: string;
const redis = new Redis(TEST_REDIS_URL);

beforeAll(async () => {
  await t.setup();
  const app = await t.app({ policyFile: POLICY });
  await app.ctx.sessions.ensureState();
  gw = await new GatewayDriver(t, app).init();
  owner = await t.operatorKey(app, 'owner');
});
afterAll(async () => {
  redis.disconnect();
  await t.teardown();
});

const read = { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' } };

describe('Redis state the control plane did not write is held as halted, and a resume lifts it', () => {
  it('a token halt key of another type halts every session of the token; POST /v1/keys/:id/resume lifts it', async () => {
    const token = await gw.token('rw');
    const sid = (await gw.session(token.raw)).session_id;
    expect((await gw.decide(token.raw, { ...read, session_id: sid })).code).toBe('OK');

    await redis.hset(`${t.redisPrefix}th:${token.id}`, 'trigger', 'UNAUTHORIZED_SERVER');
    const denied = await gw.decide(token.raw, { ...read, session_id: sid });
    expect(denied).toMatchObject({ decision: 'deny', code: 'SESSION_HALTED' });
    expect(denied.message).toContain(`This token is halted (${UNREADABLE_TOKEN_HALT})`);
    // A new session of the token is no way out.
    const again = (await gw.session(token.raw)).session_id;
    expect((await gw.decide(token.raw, { ...read, session_id: again })).code).toBe('SESSION_HALTED');

    const resumed = await gw.app.inject({ method: 'POST', url: `/v1/keys/${token.id}/resume`, headers: bearer(owner), payload: { reason: 'cleared a stray key' } });
    expect(resumed.statusCode, resumed.body).toBe(200);
    expect(await redis.exists(`${t.redisPrefix}th:${token.id}`)).toBe(0);
    expect((await gw.decide(token.raw, { ...read, session_id: sid })).code).toBe('OK');
  });

  it('a session whose Redis state says closed is SESSION_UNKNOWN, not a live session', async () => {
    const token = await gw.token('rw');
    const sid = (await gw.session(token.raw)).session_id;
    await redis.hset(`${t.redisPrefix}s:${sid}`, 'st', 'closed');
    expect((await gw.decide(token.raw, { ...read, session_id: sid })).code).toBe('SESSION_UNKNOWN');
  });

  it.each([
    ['a state no version writes', (key: string) => redis.hset(key, 'st', 'paused')],
    ['no state at all', (key: string) => redis.hdel(key, 'st')],
  ])('a session with %s is denied as halted; POST /v1/sessions/:id/resume lifts it', async (_what, corrupt) => {
    const token = await gw.token('rw');
    const sid = (await gw.session(token.raw)).session_id;
    await corrupt(`${t.redisPrefix}s:${sid}`);
    const denied = await gw.decide(token.raw, { ...read, session_id: sid });
    expect(denied).toMatchObject({ decision: 'deny', code: 'SESSION_HALTED' });
    expect(denied.message).toContain(`Session ${sid} is halted (${UNREADABLE_SESSION_STATE})`);
    // Closing it (as a gateway does) is no way out: a halted session is not closed.
    const closed = await gw.app.inject({ method: 'POST', url: `/v1/sessions/${sid}/close`, headers: { ...bearer(gw.gatewayKey), 'x-agent-token': token.raw } });
    expect(closed.statusCode, closed.body).toBe(409);
    expect((await gw.decide(token.raw, { ...read, session_id: sid })).code).toBe('SESSION_HALTED');
    // Another session of the token is not affected: the token is not halted.
    const other = (await gw.session(token.raw)).session_id;
    expect((await gw.decide(token.raw, { ...read, session_id: other })).code).toBe('OK');

    const resumed = await gw.app.inject({ method: 'POST', url: `/v1/sessions/${sid}/resume`, headers: bearer(owner), payload: { reason: 'cleared a stray write' } });
    expect(resumed.statusCode, resumed.body).toBe(200);
    expect(resumed.json().message).toContain(`Redis enforced its halt (${UNREADABLE_SESSION_STATE}) with no record in Postgres; lifted.`);
    expect((await gw.decide(token.raw, { ...read, session_id: sid })).code).toBe('OK');
  });
});
