import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { revisionFromEtag } from '../../src/flags/overrides.js';
import { toUnleashContext } from '../../src/flags/service.js';
import { bearer, TestContext } from '../helpers/context.js';
import { restoreFlag, testAdmin, until } from '../helpers/unleash.js';
import { UnleashProxy } from '../helpers/unleash-proxy.js';

// Polling after Unleash answered errors. unleash-client 6 backs off on 404/429/5xx (the next poll waits
// UNLEASH_REFRESH_MS × (failures + 1), up to 11×, and steps down by one per successful poll), which
// would leave a flag turned off after an outage unseen for many seconds. A real HTTP proxy in front of
// the run's real unleash-server answers 502 for a while (as a failing load balancer does), then passes
// requests through again. In the Unleash lane: it turns a flag off.

const REFRESH_MS = 200;
/** 502 answers to flag fetches: the SDK retries a failed fetch twice, so this is four failed polls. */
const FAILED_FETCHES = 12;
const FLAG = 'mcp.everything.write';

const unleash = inject('unleash');
const admin = testAdmin(unleash);
const ctx = new TestContext();
const rwDev = toUnleashContext({ userId: 'tok-1', tokenType: 'rw', mcpEnvironment: 'development' });
let touched = false;

/**
 * What Unleash itself serves for the flag now, and the ETag it serves it under: Unleash publishes a
 * change about once a second, and answers a poll whose ETag is still current with 304.
 */
async function served(flag: string): Promise<{ enabled: boolean | undefined; etag: string | null }> {
  const res = await fetch(`${unleash.apiUrl}/client/features`, { headers: { authorization: unleash.apiToken } });
  const body = (await res.json()) as { features: Array<{ name: string; enabled: boolean }> };
  return { enabled: body.features.find((f) => f.name === flag)?.enabled, etag: res.headers.get('etag') };
}

let proxy: UnleashProxy;
let proxyUrl: string;
let app: FastifyInstance;

beforeAll(async () => {
  await ctx.setup();
  proxy = new UnleashProxy(new URL(unleash.apiUrl));
  // Nothing listens on the webhook port here: only polling can explain a deny.
  proxyUrl = await proxy.listen();
  app = await ctx.app({ unleashUrl: proxyUrl, unleashRefreshMs: REFRESH_MS });
  expect(app.ctx.flags.status()).toMatchObject({ ready: true, source: 'poll' });
});

afterEach(async () => {
  proxy.release();
  proxy.failNext = 0;
  proxy.failStatus = 502;
  if (touched) {
    await restoreFlag(unleash, FLAG);
    await until(() => app.ctx.flags.isEnabled(FLAG, rwDev), 10_000, `${FLAG} on again`);
    touched = false;
  }
});

afterAll(async () => {
  await ctx.teardown();
  await proxy.close();
});

describe('polling after Unleash answered errors', () => {
  it('after a run of 502s, polling is back to UNLEASH_REFRESH_MS at once and a flag turned off is seen within 2 polls', { timeout: 90_000 }, async () => {
    expect(app.ctx.flags.isEnabled(FLAG, rwDev)).toBe(true);

    proxy.failNext = FAILED_FETCHES;
    await until(() => proxy.failNext === 0, 60_000, `${FAILED_FETCHES} fetches answered 502`, 20);
    // Meanwhile the last fetched state stayed in force (no allow or deny by accident) and the error shows.
    expect(app.ctx.flags.isReady()).toBe(true);
    expect(app.ctx.flags.isEnabled(FLAG, rwDev)).toBe(true);
    expect(app.ctx.flags.status().lastError).toMatch(/502/);

    // Unleash answers again: wait for the first fetch that gets through, then turn the flag off.
    const recoveredAt = proxy.fetches.length;
    await until(() => proxy.fetches.slice(recoveredAt).some((f) => f.status < 400), 10_000, 'a fetch through the proxy succeeds');
    const firstOk = proxy.fetches.slice(recoveredAt).find((f) => f.status < 400)!;
    const before = await served(FLAG);
    // Listening from before the change: the poll that turns it off may come before this test sees Unleash
    // serve it (a fresh-clone CI run saw that poll between the two, and no change was heard).
    let changedIdx: number | undefined;
    const onChange = (c: { flag: string; enabled: boolean | null }) => {
      if (c.flag === FLAG && c.enabled === false) changedIdx ??= proxy.fetches.length;
    };
    app.ctx.flags.on('polled-change', onChange);
    touched = true;
    await admin.setEnabled(FLAG, unleash.environment, false);

    // From the moment Unleash serves the flag off to pollers, the control plane denies within two polls.
    await until(
      async () => {
        const now = await served(FLAG);
        return now.enabled === false && now.etag !== before.etag;
      },
      10_000,
      'Unleash serves the flag off under a new ETag',
      20,
    );
    // Counted in polls, not milliseconds: the fetches the proxy passed from then until the poll that turned it off.
    const servedIdx = proxy.fetches.length;
    try {
      await until(() => !app.ctx.flags.isEnabled(FLAG, rwDev), 15_000, 'the control plane denies');
    } finally {
      app.ctx.flags.off('polled-change', onChange);
    }
    expect(app.ctx.flags.whyOff(FLAG, rwDev).reason).toBe('off');
    expect(changedIdx, 'the deny came from a poll').toBeDefined();
    // A poll at or before the moment this test saw Unleash serve the flag off was within the two anyway.
    expect(changedIdx! - servedIdx, 'polls from Unleash serving the flag off to the deny').toBeLessThanOrEqual(2);

    // Polling goes on after the recovery, every answer passes, and the SDK's next poll is one
    // UNLEASH_REFRESH_MS away: its failure count (which sets the back-off) was not raised by the 502s.
    await until(() => proxy.fetches.filter((f) => f.at >= firstOk.at).length >= 6, 30_000, 'polls after the recovery');
    const after = proxy.fetches.filter((f) => f.at >= firstOk.at);
    expect(after.every((f) => f.status < 400)).toBe(true);
    const fetcher = (app.ctx.flags as unknown as { client: { repository: { fetcher: { pollingFetcher: { failures: number; nextFetch: () => number } } } } }).client.repository.fetcher.pollingFetcher;
    expect(fetcher.failures).toBe(0);
    expect(fetcher.nextFetch()).toBe(REFRESH_MS);
  });

  it('after Unleash refused the API token (401, then 403), polling goes on and a flag turned off is seen', { timeout: 90_000 }, async () => {
    expect(app.ctx.flags.isEnabled(FLAG, rwDev)).toBe(true);
    // unleash-client 6 stops polling for good after one 401 or 403: this would never count down.
    proxy.failStatus = 401;
    proxy.failNext = 3;
    await until(() => proxy.failNext === 0, 20_000, 'three fetches answered 401', 20);
    expect(app.ctx.flags.status().lastError).toMatch(/responded 401: Unleash refuses UNLEASH_API_TOKEN/);
    proxy.failStatus = 403;
    proxy.failNext = 3;
    await until(() => proxy.failNext === 0, 20_000, 'three fetches answered 403', 20);
    // The last fetched flags stayed in force meanwhile.
    expect(app.ctx.flags.isReady()).toBe(true);
    expect(app.ctx.flags.isEnabled(FLAG, rwDev)).toBe(true);

    const refusedUntil = proxy.fetches.length;
    await until(() => proxy.fetches.slice(refusedUntil).some((f) => f.status < 400), 10_000, 'a fetch through the proxy succeeds');
    touched = true;
    await admin.setEnabled(FLAG, unleash.environment, false);
    await until(() => !app.ctx.flags.isEnabled(FLAG, rwDev), 15_000, 'the control plane sees the flag off');
    expect(app.ctx.flags.whyOff(FLAG, rwDev).reason).toBe('off');
  });

  it('GET /v1/flags: age_s shows a frozen Unleash within seconds (stale only after UNLEASH_STALE_AFTER_S); after recovery the old error is marked past', { timeout: 90_000 }, async () => {
    const viewer = await ctx.operatorKey(app, 'viewer');
    const overview = async () => (await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json();
    expect(await overview()).toMatchObject({ stale: false, stale_after_s: 30, fetch_failing: false });
    // Polled every second: on a loaded machine a poll can be late, so wait for a fresh one.
    await until(async () => (await overview()).age_s <= 1, 10_000, 'age_s at most 1 s while Unleash answers', 100);

    // Unleash stops answering (as under SIGSTOP): no error for the first seconds, only the age grows.
    proxy.hang = true;
    await until(async () => (await overview()).age_s >= 4, 15_000, 'age_s reaches 4 s', 200);
    expect(await overview()).toMatchObject({ stale: false });
    await until(async () => (await overview()).fetch_failing === true, 30_000, 'the timed-out fetch shows as failing', 200);
    const failing = await overview();
    expect(failing.last_error).toBeTruthy();
    expect(failing.stale).toBe(false);

    // Unleash answers again: a fresh fetch, and the old error is labelled past (kept for the record).
    proxy.release();
    await until(async () => (await overview()).fetch_failing === false, 15_000, 'a fetch succeeds again', 100);
    const recovered = await overview();
    // Reset by the fetch that just succeeded (it was over 4 s while Unleash was frozen).
    expect(recovered.age_s).toBeLessThanOrEqual(2);
    expect(recovered.last_error).toBe(failing.last_error);
    expect(Date.parse(recovered.last_fetch_at)).toBeGreaterThan(Date.parse(recovered.last_error_at));
  });

  it('a flag archived by webhook stays denied after a revive event while polls fail, on this replica and on another one through Redis', { timeout: 90_000 }, async () => {
    // The second replica polls through the same failing proxy; events reach it only through the relay.
    const b = await ctx.app({ unleashUrl: proxyUrl, unleashRefreshMs: REFRESH_MS });
    try {
      for (const replica of [app, b]) expect(replica.ctx.flags.isEnabled(FLAG, rwDev)).toBe(true);
      const revision = revisionFromEtag((await served(FLAG)).etag);
      expect(revision).toBeGreaterThan(0);
      // Unleash refuses the backend token (deleted): every poll fails, the last polled state ("on") stays.
      proxy.failStatus = 401;
      proxy.failNext = 1_000_000;
      const post = (body: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/flags/events', headers: { authorization: unleash.webhookSecret }, payload: body });
      expect((await post({ type: 'feature-archived', featureName: FLAG, id: revision! + 1 })).json()).toEqual({ result: 'denied' });
      await until(() => !b.ctx.flags.isEnabled(FLAG, rwDev), 1_000, 'b denies the archived flag');
      // Revived: Unleash brings it back off. No replica may go back to the old polled "on".
      expect((await post({ type: 'feature-revived', featureName: FLAG, id: revision! + 2 })).json()).toEqual({ result: 'denied' });
      const failedBefore = proxy.fetches.length;
      await until(() => proxy.fetches.length >= failedBefore + 6, 20_000, 'more polls refused', 20);
      expect(proxy.fetches.slice(failedBefore).every((f) => f.status === 401)).toBe(true);
      for (const replica of [app, b]) {
        expect(replica.ctx.flags.isEnabled(FLAG, rwDev)).toBe(false);
        expect(replica.ctx.flags.whyOff(FLAG, rwDev).reason).toBe('webhook');
        expect(replica.ctx.flags.status().overrides).toMatchObject([{ flag: FLAG, eventId: revision! + 2 }]);
      }
      // Other event types do not lift it either; only a turn-on in our environment would.
      for (const type of ['feature-created', 'feature-updated', 'feature-metadata-updated', 'feature-strategy-add']) {
        expect((await post({ type, featureName: FLAG, environment: unleash.environment, id: revision! + 3 })).json()).toEqual({ result: 'ignored' });
      }
      expect(app.ctx.flags.isEnabled(FLAG, rwDev)).toBe(false);
    } finally {
      proxy.failNext = 0;
      // Real changes move Unleash's revision past the synthetic events, so the polls end the deny (afterEach).
      touched = true;
      await admin.setEnabled(FLAG, unleash.environment, false);
    }
  });
});
