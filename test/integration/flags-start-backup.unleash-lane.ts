import type { ChildProcess } from 'node:child_process';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { FlagService, toUnleashContext } from '../../src/flags/service.js';
import { prepareUnleash } from '../../src/flags/setup.js';
import { createRedis } from '../../src/redis/client.js';
import { TestContext } from '../helpers/context.js';
import { killChildren, runCli, startChild } from '../helpers/control-plane.js';
import { restoreFlag, testAdmin, until } from '../helpers/unleash.js';
import { UnleashProxy } from '../helpers/unleash-proxy.js';

// A flag backup is for a replica that cannot reach Unleash. A start whose backup says a flag is on while
// Unleash says off must never allow it: while Unleash's flag fetch has not answered, decisions deny
// (waiting at most UNLEASH_START_WAIT_MS), and a flag the start's flags sync read off in the admin API is
// denied whatever the backup says. A real HTTP proxy in front of the run's unleash-server holds every
// client flag fetch without an answer (a slow Unleash or load balancer). In the Unleash lane: it turns a flag off.

const FLAG = 'mcp.filesystem.write';
const unleash = inject('unleash');
const admin = testAdmin(unleash);
const ctx = new TestContext();
const rwDev = toUnleashContext({ userId: 'tok-1', tokenType: 'rw', mcpEnvironment: 'development' });

const children: ChildProcess[] = [];
let proxy: UnleashProxy;
let proxyUrl: string;

beforeAll(async () => {
  await ctx.setup();
  proxy = new UnleashProxy(new URL(unleash.apiUrl));
  proxy.holdFetches = true;
  proxyUrl = await proxy.listen();
});

afterEach(async () => {
  proxy.holdFetches = true;
  await restoreFlag(unleash, FLAG);
});

afterAll(async () => {
  killChildren(children);
  await ctx.teardown();
  await proxy.close();
});

/** A replica that fetched the flag on from Unleash, then closed: its file and the Redis copy say on. Then the flag is turned off. */
async function backupSaysOnUnleashSaysOff(dataDir: string): Promise<void> {
  const app = await ctx.app({ dataDir });
  await until(() => app.ctx.flags.status().source === 'poll' && app.ctx.flags.isEnabled(FLAG, rwDev), 10_000, `${FLAG} on`);
  await ctx.close(app);
  await admin.setEnabled(FLAG, unleash.environment, false);
}

describe('start with a flag backup while Unleash is reachable', () => {
  it('a loaded backup is not used while the first fetch is still under way: decisions deny, then follow the fetch', async () => {
    const dataDir = `${ctx.dataDir}/a`;
    await backupSaysOnUnleashSaysOff(dataDir);
    const config = ctx.config({ dataDir, unleashUrl: proxyUrl, unleashRefreshMs: 200, unleashStartWaitMs: 120_000 });
    const redis = createRedis(config.redisUrl, config.redisPrefix, config.redisTimeoutMs);
    const flags = new FlagService(config, pino({ level: 'silent' }), redis);
    try {
      const started = flags.start();
      await until(() => flags.status().backup.state === 'loaded' && proxy.held.length > 0, 10_000, 'backup loaded and a fetch held');
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      expect(flags.isReady()).toBe(false);
      expect(flags.isEnabled(FLAG, rwDev)).toBe(false);
      expect(flags.isEnabled('mcp.enabled', rwDev)).toBe(false);
      expect(flags.whyOff(FLAG, rwDev).reason).toBe('not-ready');
      // Unleash answers: the start ends with the fetched flags, never having allowed from the backup.
      proxy.release();
      await started;
      expect(flags.status()).toMatchObject({ ready: true, source: 'poll' });
      expect(flags.isEnabled(FLAG, rwDev)).toBe(false);
      expect(flags.whyOff(FLAG, rwDev).reason).toBe('off');
      expect(flags.isEnabled('mcp.enabled', rwDev)).toBe(true);
    } finally {
      await flags.stop();
      await redis.close();
    }
  });

  it("a flag the start's flags sync read off is denied from the first decision, also when the backup is used after UNLEASH_START_WAIT_MS", async () => {
    const dataDir = `${ctx.dataDir}/b`;
    await backupSaysOnUnleashSaysOff(dataDir);
    // The start's own sync reads the admin API (webhook registered to the run's receiver, as the run's setup does).
    const { flagsAtStart } = await prepareUnleash(ctx.config({ host: '127.0.0.1', port: unleash.webhookPort }), pino({ level: 'silent' }));
    expect(flagsAtStart?.off).toContain(FLAG);
    // Client fetches never answer: after the wait, the backup (flag on) is used for everything else.
    const app = await buildApp(ctx.config({ dataDir, unleashUrl: proxyUrl, unleashRefreshMs: 200, unleashStartWaitMs: 500 }), { migrate: false, logStream: ctx.logs, flagsAtStart });
    try {
      expect(app.ctx.flags.status()).toMatchObject({ ready: true, source: 'bootstrap', backup: { state: 'loaded' } });
      expect(app.ctx.flags.isEnabled('mcp.enabled', rwDev)).toBe(true);
      expect(app.ctx.flags.isEnabled(FLAG, rwDev)).toBe(false);
      expect(app.ctx.flags.status().overrides).toMatchObject([{ flag: FLAG, reason: 'disabled' }]);
      // Unleash answers: the poll shows the flag off, which then denies by itself.
      proxy.release();
      await until(() => app.ctx.flags.status().source === 'poll' && app.ctx.flags.status().overrides.length === 0, 10_000, 'a fetch');
      expect(app.ctx.flags.isEnabled(FLAG, rwDev)).toBe(false);
      expect(app.ctx.flags.whyOff(FLAG, rwDev).reason).toBe('off');
    } finally {
      await ctx.close(app);
    }
  });

  it('WORKERS > 1: every worker gets the list its primary\'s flags sync read, and denies those flags from the first decision', { timeout: 120_000 }, async () => {
    const dataDir = `${ctx.dataDir}/w`;
    await backupSaysOnUnleashSaysOff(dataDir);
    const owner = (await runCli(ctx, unleash, ['operators', 'create', '--role', 'owner', '--name', 'flags start test'])).stdout.trim();
    // Client fetches through the proxy never answer: the workers start from the backup (flag on) after the wait.
    const cp = await startChild(ctx, unleash, { WORKERS: '2', DATA_DIR: dataDir, UNLEASH_URL: proxyUrl, UNLEASH_START_WAIT_MS: '500', UNLEASH_REFRESH_MS: '200' }, children);
    try {
      // Each worker seeded the list (its own log line) ...
      const seeded = () => new Set(cp.logs().filter((l) => String(l['msg']).includes('denied until a poll shows them') && (l['off'] as string[] | undefined)?.includes(FLAG)).map((l) => l['pid']));
      await until(() => seeded().size === 2, 60_000, 'both workers seeded', 100);
      // ... and answers with it, on new connections (the cluster spreads them over both workers).
      // A 503 (a worker that could not check the key in time on a loaded machine) is retried, as a client
      // would after its Retry-After: what is tested is the list each worker answers with.
      for (let i = 0; i < 6; i++) {
        let res = await fetch(`${cp.base}/v1/flags`, { headers: { authorization: `Bearer ${owner}`, connection: 'close' } });
        for (let retry = 0; res.status === 503 && retry < 5; retry++) {
          await new Promise((r) => setTimeout(r, 500));
          res = await fetch(`${cp.base}/v1/flags`, { headers: { authorization: `Bearer ${owner}`, connection: 'close' } });
        }
        const text = await res.text();
        expect(res.status, text).toBe(200);
        const body = JSON.parse(text) as { source: string; overrides: Array<{ flag: string }> };
        expect(body.source).toBe('bootstrap');
        expect(body.overrides.map((o) => o.flag)).toContain(FLAG);
      }
    } finally {
      killChildren(children);
    }
  });
});
