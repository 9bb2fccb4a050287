import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import type { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

/** Debian's chromium (`apt-get install chromium`; .ci/run installs it). No browser is downloaded. */
export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
/**
 * Whether the browser tests run here. With no browser at CHROMIUM they are skipped with a notice, so
 * `npm test` passes on a machine that has only Node, Postgres and Redis. .ci/run installs chromium and
 * sets REQUIRE_BROWSER_TESTS=1: there a missing browser fails them instead.
 */
export const BROWSER_TESTS = existsSync(CHROMIUM) || process.env['REQUIRE_BROWSER_TESTS'] === '1';
if (!BROWSER_TESTS) {
  console.warn(`admin UI browser tests SKIPPED: no browser at ${CHROMIUM}. Install one (Debian: apt-get install chromium) or set CHROMIUM_PATH.`);
}
export const SCREENSHOTS = 'test-results/ui';

const UI_SOURCES = ['ui/src', 'ui/index.html', 'ui/vite.config.ts', 'ui/public'];

async function newestMtime(path: string): Promise<number> {
  const info = await stat(path);
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = info.mtimeMs;
  for (const entry of await readdir(path)) newest = Math.max(newest, await newestMtime(join(path, entry)));
  return newest;
}

/**
 * Builds the UI when ui/dist is missing or older than its sources, so `npx vitest run` tests what is in
 * ui/src even without `npm test`'s pretest build.
 */
export async function ensureUiBuilt(): Promise<void> {
  const index = 'ui/dist/index.html';
  let fresh = false;
  if (existsSync(index)) {
    const built = (await stat(index)).mtimeMs;
    const sources = Math.max(...(await Promise.all(UI_SOURCES.filter((p) => existsSync(p)).map(newestMtime))));
    fresh = built >= sources;
  }
  if (fresh) return;
  const { build } = await import('vite');
  await build({ configFile: 'ui/vite.config.ts', logLevel: 'warn' });
}

export interface BrowserSession {
  browser: Browser;
  context: BrowserContext;
  page: Page;
  /** Console errors and uncaught page errors seen so far: the tests assert there are none. */
  consoleErrors: string[];
  downloads: string;
}

/**
 * `backForwardCache`: Back and Forward restore a page as browsers do for people (Playwright launches
 * chromium with --disable-back-forward-cache unless told not to).
 */
export async function openBrowser(baseUrl: string, opts: { backForwardCache?: boolean } = {}): Promise<BrowserSession> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    ...(opts.backForwardCache ? { ignoreDefaultArgs: ['--disable-back-forward-cache'] } : {}),
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ baseURL: baseUrl, viewport: { width: 1360, height: 900 }, acceptDownloads: true });
  // The copy button writes to the clipboard; the test reads it back.
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: baseUrl });
  const page = await context.newPage();
  // A missing element fails with Playwright's own message, well before the test's timeout.
  page.setDefaultTimeout(20_000);
  const consoleErrors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(`${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (err) => consoleErrors.push(`uncaught: ${err.message}`));
  await mkdir(SCREENSHOTS, { recursive: true });
  return { browser, context, page, consoleErrors, downloads: SCREENSHOTS };
}

export async function screenshot(page: Page, name: string, fullPage = true): Promise<string> {
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage });
  return path;
}

// The screenshots docs/ shows, by the name the tests save them under.
const DOC_SCREENSHOTS: Record<string, string> = {
  '00-sign-in': 'sign-in',
  '01-tokens': 'tokens',
  '02-create-rw-warning': 'create-rw-warning',
  '03-token-created': 'token-created',
  '04-revoke-confirm': 'revoke-confirm',
  '05-create-admin-confirm': 'create-admin-confirm',
  '08-audit': 'audit',
  '09-alerts': 'alerts',
  '10-sessions': 'sessions',
  '11-usage': 'usage',
  '12-flags': 'flags',
  '13-tool-definitions': 'tool-definitions',
  '15-explain': 'explain',
  '16-approvals': 'approvals',
  'badge-ro': 'badge-ro',
  'badge-rw': 'badge-rw',
  'badge-admin': 'badge-admin',
};

/** With UPDATE_DOC_SCREENSHOTS=1, refreshes docs/img/ from this run's screenshots (a normal run leaves docs/ alone). */
export async function copyDocScreenshots(): Promise<void> {
  if (process.env['UPDATE_DOC_SCREENSHOTS'] !== '1') return;
  await mkdir('docs/img', { recursive: true });
  for (const [from, to] of Object.entries(DOC_SCREENSHOTS)) {
    const src = join(SCREENSHOTS, `${from}.png`);
    if (existsSync(src)) await copyFile(src, join('docs/img', `${to}.png`));
  }
}

/** The policy of the admin UI's browser tests (ui.test.ts, ui-a11y.test.ts): filesystem (move_file needs an approval) and memory for code_agent. */
export const UI_POLICY = `
version: 1
servers:
  filesystem:
    identity: { command: npx, args: ["-y", "@modelcontextprotocol/server-filesystem", "/tmp/ks-test"] }
    map: filesystem
    approval: [move_file]
  memory:
    identity: { command: npx, args: ["-y", "@modelcontextprotocol/server-memory"] }
    map: memory
roles:
  code_agent:
    allowed_servers:
      development: [filesystem, memory]
environments:
  development: { forbidden_patterns: [prod, production, live, main], human_grant_required: false }
  production: { forbidden_patterns: [], human_grant_required: true }
rate_limits:
  global: { max_calls_per_session: 200, max_calls_per_minute: 1000, pause_at_percent: 80 }
  per_token: { max_calls_per_minute: 1000, max_calls_per_day: 100000, max_open_sessions: 50, max_new_sessions_per_hour: 500 }
cascade: { threshold: 3, window_calls: 5 }
`;

/**
 * The control plane of a UI test file: the UI built, `t` set up, `policy` as its policy file, listening on a
 * free port of 127.0.0.1, and the gateway driver (its owner key signs in). `baseUrl` is what openBrowser takes.
 */
export async function startUiControlPlane(t: TestContext, policy: string): Promise<{ app: FastifyInstance; gw: GatewayDriver; baseUrl: string }> {
  await ensureUiBuilt();
  await t.setup();
  await mkdir(t.dataDir, { recursive: true });
  const policyFile = join(t.dataDir, 'policy.yaml');
  await writeFile(policyFile, policy);
  const app = await t.app({ policyFile });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const gw = await new GatewayDriver(t, app).init();
  return { app, gw, baseUrl: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` };
}

/** Opens the UI and signs in with `key`, as an operator does; returns once the pages' navigation shows. */
export async function signIn(page: Page, key: string): Promise<void> {
  await page.goto('/ui/');
  await page.getByLabel('Operator key').fill(key);
  await page.keyboard.press('Enter');
  await page.getByRole('navigation', { name: 'Pages' }).waitFor();
}
