import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GateLimits } from '../../src/limits/limits.js';
import { createRedis, type RedisHandle, waitForRedis } from '../../src/redis/client.js';
import { TestContext } from '../helpers/context.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { callContext, gateStep, type World, world } from '../helpers/gate-fixtures.js';

// Four gate instances, each with its own ioredis connections (as four replicas would have), hammer one
// Redis in parallel. The limit is checked and counted in one Lua script, so exactly N calls pass.

const t = new TestContext();
let w: World;
let db: ReturnType<TestContext['pool']>;
const replicas: RedisHandle[] = [];
const N = 100;
const CALLS_PER_REPLICA = 150;

beforeAll(async () => {
  await t.setup();
  w = await world(t);
  db = t.pool();
  for (let i = 0; i < 4; i++) {
    const handle = createRedis(TEST_REDIS_URL, t.redisPrefix, 2_000);
    await waitForRedis(handle);
    replicas.push(handle);
  }
});
afterAll(async () => {
  for (const r of replicas) await r.close();
  await t.teardown();
});

const BASE: GateLimits = { pauseAtPercent: 0, cascade: { threshold: 0, windowCalls: 5 } };

async function hammer(limits: GateLimits, sessionFor: (replica: number) => string, agent: Parameters<typeof callContext>[1]) {
  const steps = replicas.map((redis) => gateStep(w, { limits }, { redis }).step);
  const results = await Promise.all(
    steps.flatMap((step, r) => Array.from({ length: CALLS_PER_REPLICA }, () => Promise.resolve(step.run(callContext(w, agent, sessionFor(r)))))),
  );
  const allowed = results.filter((d) => d === undefined).length;
  const codes: Record<string, number> = {};
  for (const d of results) if (d) codes[d.code] = (codes[d.code] ?? 0) + 1;
  return { allowed, codes, total: results.length };
}

describe('concurrency: 4 replicas, one Redis', () => {
  it(`session limit of ${N}: exactly ${N} allowed, 0 over-admissions, one halt`, async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const r = await hammer({ ...BASE, sessionCalls: N }, () => sid, agent);
    console.log(`[gate concurrency] session limit ${N}: ${r.allowed} allowed of ${r.total} calls from 4 replicas; over-admissions: ${r.allowed - N}; denials: ${JSON.stringify(r.codes)}`);
    expect(r.allowed).toBe(N);
    expect(r.codes).toEqual({ SESSION_HALTED: r.total - N });
    const { rows } = await db.query('SELECT count(*)::int AS n FROM session_halts WHERE session_id = $1', [sid]);
    expect(rows[0].n).toBe(1);
    const count = await w.app.ctx.redis.redis.hget(w.app.ctx.redis.key('s', sid), 'c:calls');
    expect(Number(count)).toBe(N);
  });

  it(`per-token per-day limit of ${N} across 4 sessions: exactly ${N} allowed`, async () => {
    const { agent } = await w.token();
    const sessions = await Promise.all(replicas.map(() => w.open(agent)));
    const r = await hammer({ ...BASE, tokenCallsPerDay: N }, (i) => sessions[i]!, agent);
    console.log(`[gate concurrency] token/day limit ${N}: ${r.allowed} allowed of ${r.total} calls from 4 replicas in 4 sessions; over-admissions: ${r.allowed - N}; denials: ${JSON.stringify(r.codes)}`);
    expect(r.allowed).toBe(N);
    expect(r.codes).toEqual({ RATE_LIMITED: r.total - N });
  });
});
