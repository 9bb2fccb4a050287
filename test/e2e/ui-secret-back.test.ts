import type { FastifyInstance } from 'fastify';
import type { Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import type { GatewayDriver } from '../helpers/gateway-client.js';
import { BROWSER_TESTS, type BrowserSession, openBrowser, signIn, startUiControlPlane, UI_POLICY } from './ui-harness.js';

// A secret the admin UI shows once (an agent token, a gateway key) is gone once the operator leaves the
// page: browsers keep a page they leave (the back/forward cache), and Back showed the secret again, with
// its Copy button, to whoever used the browser next. The browser here keeps pages as people's do
// (Playwright turns that off unless told), and each test checks that Back did restore the kept page.

const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let b: BrowserSession;
let page: Page;

beforeAll(async () => {
  let baseUrl: string;
  ({ app, gw, baseUrl } = await startUiControlPlane(t, UI_POLICY));
  b = await openBrowser(baseUrl, { backForwardCache: true });
  page = b.page;
  await signIn(page, gw.owner);
}, 120_000);

afterAll(async () => {
  await b?.browser.close();
  await t.teardown();
});

/** Leaves the admin UI for another page and comes Back; says whether the browser restored the page it kept. */
async function leaveAndComeBack(): Promise<boolean> {
  await page.evaluate("window.__kept = true; window.addEventListener('pageshow', (e) => { window.__restored = e.persisted; })");
  await page.goto('/healthz');
  await page.goBack({ waitUntil: 'commit' });
  await expect.poll(() => page.evaluate('window.__kept === true && window.__restored === true')).toBe(true);
  return true;
}

/** The admin UI's console errors (the page left for, /healthz, is not the UI's: the browser asks it for /favicon.ico). */
function pageErrors(): string[] {
  return b.consoleErrors.filter((e) => !e.endsWith('/favicon.ico)'));
}

/** Every input's value on the page, however it is shown. */
async function inputValues(): Promise<string[]> {
  return page.evaluate('Array.from(document.querySelectorAll("input")).map((i) => i.value)');
}

async function expectGone(dialog: Locator, secret: string): Promise<void> {
  await dialog.getByTestId('secret-gone').waitFor();
  expect(await dialog.getByTestId('raw-token').count()).toBe(0);
  expect(await inputValues()).not.toContain(secret);
  expect(await page.content()).not.toContain(secret);
  expect(await dialog.getByTestId('secret-gone').textContent()).toMatch(/no longer shown.*If you did not copy it, revoke it and create another/);
}

describe.runIf(BROWSER_TESTS)('a secret shown once is gone after Back', () => {
  it('an agent token: the dialog stays, the token is replaced by a note', async () => {
    await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: 'Tokens', exact: true }).click();
    await page.getByRole('button', { name: 'Create token' }).click();
    const form = page.getByRole('dialog', { name: 'Create an agent token' });
    await form.getByLabel('Project id').fill('alpha');
    await form.getByLabel('Description (who holds it and why)').fill('back button');
    await form.getByRole('button', { name: 'Create', exact: true }).click();
    const done = page.getByRole('dialog', { name: 'Token created' });
    const secret = await done.getByTestId('raw-token').inputValue();
    expect(secret).toMatch(/^mcp_ro_/);
    // Leaving the tab for another one is not leaving the page: the token stays until the dialog is closed.
    expect(await done.getByTestId('secret-gone').count()).toBe(0);

    expect(await leaveAndComeBack()).toBe(true);
    await expectGone(done, secret);
    // The token itself was made and works: only its display is gone.
    const listed = await app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(secret), payload: {} });
    expect(listed.statusCode, listed.body).toBe(201);
    await done.getByRole('button', { name: 'Done' }).click();
    expect(pageErrors()).toEqual([]);
  });

  it('a gateway key', async () => {
    await page.getByRole('tab', { name: 'Gateway keys' }).click();
    await page.getByRole('button', { name: 'Create gateway key' }).click();
    const form = page.getByRole('dialog', { name: 'Create a gateway key' });
    await form.getByLabel('Name').fill('back-button-gw');
    await form.getByRole('button', { name: 'Create', exact: true }).click();
    const done = page.getByRole('dialog', { name: 'Key created' });
    const secret = await done.getByTestId('raw-token').inputValue();
    expect(secret).toMatch(/^ksgw_/);

    expect(await leaveAndComeBack()).toBe(true);
    await expectGone(done, secret);
    expect(pageErrors()).toEqual([]);
  });
});
