import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createFlagStep } from '../../src/flags/step.js';
import { bearer, TestContext } from '../helpers/context.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { memoryRead } from '../helpers/flag-calls.js';
import { freePort, restoreFlag, testAdmin, until } from '../helpers/unleash.js';

// A replica that starts while it cannot reach Unleash starts from the backup Unleash confirmed last: its own
// file in DATA_DIR or the copy every replica that fetches from Unleash keeps in the installation's Redis.
// In the Unleash lane: it turns a flag off. "Unleash down" is a URL where nothing listens.

const DOWN = 'http://127.0.0.1:9/api';
const FLAG = 'mcp.memory.read';
const unleash = inject('unleash');
const admin = testAdmin(unleash);
const ctx = new TestContext();

beforeAll(async () => {
  await ctx.setup();
});

afterEach(async () => {
  await restoreFlag(unleash, FLAG);
});

afterAll(async () => {
  await ctx.teardown();
});

/** A replica that reaches Unleash, seen to have the flag `on`, then closed (its backups flushed). */
async function fetchingReplica(dataDir: string, on: boolean, overrides: Parameters<TestContext['app']>[0] = {}): Promise<void> {
  const app = await ctx.app({ dataDir, ...overrides });
  await until(() => app.ctx.flags.status().source === 'poll' && app.ctx.flags.isEnabled(FLAG, { userId: 'x', properties: { tokenType: 'rw', mcpEnvironment: 'development' } }) === on, 10_000, `${FLAG} ${on ? 'on' : 'off'}`);
  await ctx.close(app);
}

describe('flag backup shared through Redis', () => {
  // Four replicas one after the other, two of them waiting up to 10 s for a poll: the default 30 s ran out
  // on a loaded machine (2026-12-07).
  it('a replica started without Unleash from its old file (flag on) takes the newer Redis copy (flag off) and denies', { timeout: 90_000 }, async () => {
    const dirD = `${ctx.dataDir}/d`;
    // D ran while the flag was on and left its file behind.
    await fetchingReplica(dirD, true);
    // The flag is turned off; replica B sees it (and shares it through Redis).
    await admin.setEnabled(FLAG, unleash.environment, false);
    await fetchingReplica(`${ctx.dataDir}/b`, false);

    // D restarts while Unleash is unreachable: it must deny as B did, not allow from its own older file.
    const d = await ctx.app({ dataDir: dirD, unleashUrl: DOWN });
    expect(d.ctx.flags.isReady()).toBe(true);
    const denial = await createFlagStep(d.ctx.flags).run(memoryRead());
    expect(denial?.code).toBe('KILL_SWITCH');
    expect(denial?.message).toContain(FLAG);
    expect(d.ctx.flags.status()).toMatchObject({ source: 'bootstrap', backup: { state: 'loaded', from: 'redis' } });
    const viewer = await ctx.operatorKey(d, 'viewer');
    const body = (await d.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json();
    expect(body).toMatchObject({ source: 'bootstrap', backup: { state: 'loaded', from: 'redis' } });
    expect(body.backup.age_s).toBeLessThan(60);
    expect(body.flags.find((f: { name: string }) => f.name === FLAG)).toMatchObject({ enabled: false, source: 'bootstrap' });
    await ctx.close(d);

    // D kept that copy in its file: restarted again with Redis unreachable too, it still denies.
    const deadRedis = `redis://127.0.0.1:${await freePort()}`;
    const again = await ctx.app({ dataDir: dirD, unleashUrl: DOWN, redisUrl: deadRedis });
    expect(again.ctx.flags.status()).toMatchObject({ source: 'bootstrap', backup: { state: 'loaded', from: 'file' } });
    expect(again.ctx.flags.isEnabled(FLAG, { userId: 'x' })).toBe(false);
    expect(again.ctx.flags.isEnabled('mcp.enabled', { userId: 'x' })).toBe(true);
    await ctx.close(again);
  });

  it('a Redis copy older than the file does not replace it', async () => {
    // Redis holds the flag off (B's copy above, or made again here) ...
    await admin.setEnabled(FLAG, unleash.environment, false);
    await fetchingReplica(`${ctx.dataDir}/b2`, false);
    await restoreFlag(unleash, FLAG);
    // ... then X fetches the flag on while it cannot write to Redis: its file is newer than the Redis copy.
    const dirX = `${ctx.dataDir}/x`;
    await fetchingReplica(dirX, true, { redisUrl: `redis://127.0.0.1:${await freePort()}` });

    const x = await ctx.app({ dataDir: dirX, unleashUrl: DOWN });
    expect(x.ctx.flags.status()).toMatchObject({ source: 'bootstrap', backup: { state: 'loaded', from: 'file' } });
    expect(await createFlagStep(x.ctx.flags).run(memoryRead())).toBeUndefined();

    // The Redis copy is unchanged (a replica starting from a backup shares nothing).
    const redis = new Redis(TEST_REDIS_URL);
    try {
      const body = await redis.hget(`${ctx.redisPrefix}flags:last-fetched:${unleash.environment}`, 'body');
      const features = (JSON.parse(body ?? '{}') as { data?: { features?: Array<{ name: string; enabled: boolean }> } }).data?.features ?? [];
      expect(features.find((f) => f.name === FLAG)?.enabled).toBe(false);
    } finally {
      redis.disconnect();
    }
  });
});
