import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedUnleash } from '../../src/flags/embedded.js';
import { prepareUnleash } from '../../src/flags/setup.js';
import { bearer, TestContext } from '../helpers/context.js';
import { dropDatabase, freePort, startStandaloneUnleash, TEST_UNLEASH_ADMIN_TOKEN, testAdmin, until } from '../helpers/unleash.js';
import { BROWSER_TESTS, type BrowserSession, ensureUiBuilt, openBrowser, SCREENSHOTS, screenshot } from './ui-harness.js';

// The Flags page answers "has this control plane seen my change?" in a real browser against a real
// control plane whose Unleash is its own embedded unleash-server (a clone of the synced test template):
// this file adds a constraint to a flag there, freezes it with SIGSTOP and stops it, which the run's shared
// Unleash must never see. Every state the page shows is first established through the API.

/** UNLEASH_STALE_AFTER_S here: the page must turn loud at the control plane's own threshold, not another. */
const STALE_AFTER_S = 8;
const WARNING = 'Flag changes made in Unleash are not reaching this control plane.';
const TARGETED = 'mcp.memory.write';
/** Reads "tok-runaway" on screen when shown as it is (U+202E reverses what follows it). */
const RTL_ID = 'tok-\u202Eyawanur';

const t = new TestContext();
let unleash: EmbeddedUnleash;
let unleashDatabase = '';
let frozen = false;
let app: FastifyInstance;
let viewer = '';
let b: BrowserSession;
let page: Page;

interface Overview {
  age_s: number | null;
  fetch_failing: boolean;
  last_error: string | null;
  stale_after_s: number;
  webhook: { url: string; registration: { state: string; by: string | null }; last_event_at: string | null };
  flags: { name: string; constraints: number; active_strategies: { constraints: { context_name: string; values: string[] }[] }[] }[];
}

async function overview(): Promise<Overview> {
  const res = await app.inject({ url: '/v1/flags', headers: bearer(viewer) });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as Overview;
}

const warning = () => page.getByRole('region', { name: WARNING });
/** A flag's row, found by its link into Unleash (a cell's name would also match descriptions that mention the flag). */
const row = (flag: string) => page.getByRole('row').filter({ has: page.getByRole('link', { name: `Toggle ${flag} in Unleash (opens in a new tab)`, exact: true }) });

/** What the page shows at one instant: the age stat's text and whether the warning is there. */
async function shown(): Promise<{ age: string | null; warning: boolean }> {
  return page.evaluate<{ age: string | null; warning: boolean }>(
    "({ age: document.querySelector('.flag-age .stat-value')?.textContent ?? null, warning: document.querySelector('.flags-warning') !== null })",
  );
}

beforeAll(async () => {
  await ensureUiBuilt();
  await t.setup();
  const started = await startStandaloneUnleash(`ui_flags_${t.name}`);
  unleash = started.unleash;
  unleashDatabase = started.database;
  // A kill of one token: on for everyone else, so neither the flag's state nor the grid shows it. Its second
  // id carries a right-to-left override (Unleash takes any text): the page must not show it as "tok-runaway".
  const admin = testAdmin({ apiUrl: unleash.apiUrl, adminToken: TEST_UNLEASH_ADMIN_TOKEN });
  const [strategy] = await admin.getStrategies(TARGETED, 'development');
  if (!strategy?.id) throw new Error(`${TARGETED} has no strategy`);
  await admin.updateStrategy(TARGETED, 'development', strategy.id, {
    ...strategy,
    constraints: [...(strategy.constraints ?? []), { contextName: 'userId', operator: 'NOT_IN', values: ['tok-runaway', RTL_ID] }],
  });
  // The start's flags sync registers the webhook, as `killswitch start` does (at a port nothing listens on:
  // no event of Unleash's may reach the page before the test sends its own).
  const settings = { unleashUrl: unleash.apiUrl, unleashAdminToken: TEST_UNLEASH_ADMIN_TOKEN, unleashStaleAfterS: STALE_AFTER_S, host: '127.0.0.1', port: await freePort() };
  await prepareUnleash(t.config(settings), pino({ level: 'silent' }));
  app = await t.app(settings);
  await app.listen({ port: 0, host: '127.0.0.1' });
  viewer = await t.operatorKey(app, 'viewer');
  b = await openBrowser(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`);
  page = b.page;
  await page.goto('/ui/');
  await page.getByLabel('Operator key').fill(viewer);
  await page.keyboard.press('Enter');
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: 'Flags', exact: true }).click();
  await page.getByRole('heading', { level: 1, name: 'Flags', exact: true }).waitFor();
}, 120_000);

afterAll(async () => {
  await b?.browser.close();
  // A frozen process would take SIGTERM only once continued.
  if (frozen && unleash?.pid) process.kill(unleash.pid, 'SIGCONT');
  await unleash?.stop();
  await t.teardown();
  if (unleashDatabase) await dropDatabase(unleashDatabase).catch(() => {});
});

describe.skipIf(!BROWSER_TESTS)('admin UI: is the flag state fresh?', { timeout: 90_000 }, () => {
  it("shows the age of the flag state, the webhook and its last event, and a flag's constraints", async () => {
    const api = await overview();
    expect(api).toMatchObject({ stale_after_s: STALE_AFTER_S, fetch_failing: false });
    expect(api.flags.find((f) => f.name === TARGETED)?.constraints).toBe(1);
    expect(api.flags.find((f) => f.name === TARGETED)?.active_strategies[0]?.constraints).toMatchObject([{ context_name: 'userId', values: ['tok-runaway', RTL_ID] }]);
    await row('mcp.enabled').waitFor();

    const now = await shown();
    expect(now.age).toMatch(/^\d+ s$/);
    // Unleash answers every second: well under the threshold, and then nothing is loud.
    expect(Number.parseInt(now.age ?? '', 10)).toBeLessThan(STALE_AFTER_S);
    expect(now.warning).toBe(false);

    // The targeted kill shows on its flag, in words, with what it stops; a flag without constraints says nothing.
    expect(await row(TARGETED).textContent()).toContain('1 constraint on for some calls only');
    const constraint = row(TARGETED).locator('.constraint-list li');
    expect(await constraint.allTextContents()).toEqual(['userId is not one of tok-runaway, tok-\\u202eyawanur']);
    await row(TARGETED).screenshot({ path: join(SCREENSHOTS, 'flags-constraint-row.png') });
    expect(await row('mcp.enabled').textContent()).not.toContain('constraint');

    // The webhook: registered by the start, where Unleash is told to post, and no event yet.
    expect(api.webhook.registration).toMatchObject({ state: 'registered', by: 'start' });
    await page.getByText(api.webhook.url, { exact: true }).waitFor();
    expect(await page.locator('dl.webhook dd.registration').textContent()).toMatch(
      new RegExp(`^registered in Unleash .+, at the start of the control plane on .+: Unleash posts to ${api.webhook.url.replace(/[.?]/g, '\\$&')}$`),
    );
    await page.getByText('none since this control plane started').waitFor();
    expect(api.webhook.last_event_at).toBeNull();

    // An event that changes nothing (Unleash sends one for any flag edit) still shows the webhook works.
    const res = await app.inject({
      method: 'POST',
      url: '/v1/flags/events',
      headers: { authorization: t.config().unleashWebhookSecret },
      payload: { type: 'feature-updated', featureName: 'mcp.sqlite.read', environment: 'development', id: 1 },
    });
    expect(res.json()).toEqual({ result: 'ignored' });
    // The page asks again by itself: an operator watching it sees the event without reloading.
    const event = page.locator('dl.webhook dd').filter({ hasText: 'feature-updated' });
    await event.waitFor();
    expect(await event.textContent()).toMatch(/^feature-updated on mcp\.sqlite\.read, /);
    expect(await page.getByText('none since this control plane started').count()).toBe(0);
    await screenshot(page, 'flags-fresh', false);
  });

  it('an Unleash that stops answering (SIGSTOP) turns the page loud once the age reaches UNLEASH_STALE_AFTER_S, and quiet again when it answers', async () => {
    process.kill(unleash.pid!, 'SIGSTOP');
    frozen = true;
    await until(async () => ((await overview()).age_s ?? 0) >= STALE_AFTER_S, 60_000, `age_s reaches ${STALE_AFTER_S}`, 200);

    const loud = warning().filter({ hasText: 'No successful fetch for' });
    await loud.waitFor();
    expect(await loud.textContent()).toContain(`the staleness alarm (FLAGS_STALE, UNLEASH_STALE_AFTER_S) is at ${STALE_AFTER_S} seconds`);
    expect(await loud.textContent()).toContain('The flags fetched last stay in force');
    expect(await loud.getByRole('link', { name: 'Kills' }).getAttribute('href')).toBe('#/kills');
    const age = Number.parseInt((await shown()).age ?? '', 10);
    expect(age).toBeGreaterThanOrEqual(STALE_AFTER_S);
    // Above the runbook's 5 s the age itself says what to do (it said only "normally 0–2 s").
    expect(await page.getByTestId('flag-age-slow').textContent()).toContain('Above 5 s: a flag turned off in Unleash may not reach this control plane.');
    await screenshot(page, 'flags-frozen', false);

    process.kill(unleash.pid!, 'SIGCONT');
    frozen = false;
    await until(
      async () => {
        const o = await overview();
        return !o.fetch_failing && o.age_s !== null && o.age_s < STALE_AFTER_S;
      },
      60_000,
      'fetches succeed again',
      200,
    );
    await warning().waitFor({ state: 'detached' });
    await page.getByTestId('flag-age-slow').waitFor({ state: 'detached' });
    const after = await shown();
    expect(Number.parseInt(after.age ?? '', 10)).toBeLessThan(STALE_AFTER_S);
  });

  it('a stopped Unleash (connection refused): the warning says fetching is failing and shows the error', async () => {
    // Left frozen by a failure above, it would answer with timeouts, not refusals.
    if (frozen) process.kill(unleash.pid!, 'SIGCONT');
    frozen = false;
    await unleash.stop();
    await until(async () => (await overview()).fetch_failing, 60_000, 'the refused fetch shows as failing', 200);
    const api = await overview();
    expect(api.last_error).toMatch(/ECONNREFUSED|fetch failed|refused/i);

    const failing = warning().filter({ hasText: 'Fetching the flags from Unleash is failing' });
    await failing.waitFor();
    expect(await failing.textContent()).toMatch(/ECONNREFUSED|fetch failed|refused/i);
    expect(await page.getByRole('alert').filter({ hasText: WARNING }).count()).toBe(1);
    await screenshot(page, 'flags-failing', false);
  });

  it('no console errors', () => {
    expect(b.consoleErrors).toEqual([]);
  });
});
