import { utimes } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareUnleash } from '../../src/flags/setup.js';
import { createFlagStep } from '../../src/flags/step.js';
import { PolicyFileError } from '../../src/policy/index.js';
import { bearer, LogCapture, TestContext } from '../helpers/context.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { filesystemWrite } from '../helpers/flag-calls.js';

// Start-up without Unleash: fail closed unless a fresh backup of the last fetched flags exists. These
// tests never toggle flags, so they run in parallel; "Unleash down" is a URL where nothing listens.

const DOWN = 'http://127.0.0.1:9/api';
const ctx = new TestContext();

beforeAll(async () => {
  await ctx.setup();
});

afterAll(async () => {
  await ctx.teardown();
});

describe('flags at start-up', () => {
  it('cold start with Unleash unreachable and no backup: not ready, every decision DEPENDENCY_UNAVAILABLE, /readyz 503', async () => {
    // The first failed fetch (the SDK retries it twice, ~3 s) settles the start; it does not wait out
    // UNLEASH_START_WAIT_MS: set to its maximum (10 min), a start that waited it out would never get past
    // the test's timeout.
    const app = await ctx.app({ unleashUrl: DOWN, dataDir: `${ctx.dataDir}/empty`, unleashStartWaitMs: 600_000 });
    expect(app.ctx.flags.isReady()).toBe(false);
    const c = filesystemWrite();
    const denial = await createFlagStep(app.ctx.flags).run(c);
    expect(denial?.code).toBe('DEPENDENCY_UNAVAILABLE');
    expect(c.flagsEvaluated).toEqual([]);
    expect(app.ctx.flags.isEnabled('mcp.enabled', { userId: 'x' })).toBe(false);
    const ready = await app.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    expect(ready.json().checks.flags).toMatch(/not loaded/);
    const owner = await ctx.operatorKey(app, 'viewer');
    const flags = (await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(owner) })).json();
    expect(flags).toMatchObject({ ready: false, source: 'none', last_fetch_at: null, flags: [] });
    expect(flags.last_error).toMatch(/ECONNREFUSED|fetch failed|refused/i);
  });

  it('an invalid policy file stops the Unleash step before the flags sync, with the policy errors (not a flags sync failure)', async () => {
    const logs = new LogCapture();
    const err = await prepareUnleash(ctx.config({ unleashUrl: DOWN, policyFile: 'test/fixtures/policy/broken.yaml' }), pino({ level: 'info' }, logs)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyFileError);
    expect((err as Error).message).toContain('test/fixtures/policy/broken.yaml:11:41 roles.code_agent.allowed_servers.development[2]: unknown server "shel"');
    expect(logs.text).not.toContain('flags sync failed');
  });

  it('refuses to start when the backend token belongs to another Unleash environment', async () => {
    await expect(ctx.app({ unleashEnvironment: 'production' })).rejects.toThrow(/UNLEASH_API_TOKEN is for Unleash environment "development" but UNLEASH_ENVIRONMENT=production/);
  });

  it('a fresh backup lets a replica start while Unleash is down (source bootstrap); an old one does not', async () => {
    const dataDir = `${ctx.dataDir}/backup`;
    // A replica that reached Unleash leaves the backup behind.
    const first = await ctx.app({ dataDir });
    expect(first.ctx.flags.status().source).toBe('poll');
    await first.close();
    const backupPath = first.ctx.flags.status().backup.path;

    const second = await ctx.app({ unleashUrl: DOWN, dataDir });
    expect(second.ctx.flags.isReady()).toBe(true);
    // Its file or the Redis copy the first replica also left: the same flags, confirmed at about the same time.
    expect(second.ctx.flags.status()).toMatchObject({ source: 'bootstrap', backup: { state: 'loaded' }, lastFetchAt: null });
    expect(await createFlagStep(second.ctx.flags).run(filesystemWrite())).toBeUndefined();
    const viewer = await ctx.operatorKey(second, 'viewer');
    const body = (await second.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json();
    expect(body.source).toBe('bootstrap');
    expect(body.flags.find((f: { name: string }) => f.name === 'mcp.enabled')).toMatchObject({ enabled: true, source: 'bootstrap' });

    // Two hours old, with a one-hour limit, and no copy in Redis (the first replica's is gone): not used, fail closed.
    const old = new Date(Date.now() - 2 * 3600_000);
    await utimes(backupPath, old, old);
    const redis = new Redis(TEST_REDIS_URL);
    try {
      expect(await redis.del(`${ctx.redisPrefix}flags:last-fetched:development`)).toBe(1);
    } finally {
      redis.disconnect();
    }
    const third = await ctx.app({ unleashUrl: DOWN, dataDir, unleashBackupMaxAgeS: 3600 });
    expect(third.ctx.flags.isReady()).toBe(false);
    expect(third.ctx.flags.status().backup).toMatchObject({ state: 'too-old', from: 'file' });
    expect((await createFlagStep(third.ctx.flags).run(filesystemWrite()))?.code).toBe('DEPENDENCY_UNAVAILABLE');

    // A backup of another Unleash environment is never used.
    const fourth = await ctx.app({ unleashUrl: DOWN, dataDir, unleashEnvironment: 'production', unleashApiToken: 'default:production.x' });
    expect(fourth.ctx.flags.isReady()).toBe(false);
  });
});
