import { mkdir, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { freePort } from '../helpers/unleash.js';
import { BROWSER_TESTS, type BrowserSession, ensureUiBuilt, openBrowser, UI_POLICY } from './ui-harness.js';

// What a keyboard or screen-reader user of the admin UI notices (an accessibility review against WCAG 2.2
// AA): names of buttons, what is announced, where the focus goes, optional fields that are optional, and
// pages that reflow at 320 CSS px. A real browser against a real control plane; each effect is also checked
// through the API.

const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let b: BrowserSession;
let page: Page;

const write = (path: string) => ({ server: 'filesystem', tool: 'write_file', arguments: { path, content: 'x' } });
const read = (path: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path } });

async function apiGet<T>(url: string): Promise<T> {
  const res = await app.inject({ url, headers: bearer(gw.owner) });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as T;
}

async function apiPost<T>(url: string, payload: Record<string, unknown>): Promise<T> {
  const res = await app.inject({ method: 'POST', url, headers: bearer(gw.owner), payload });
  expect(res.statusCode, res.body).toBeLessThan(300);
  return res.json() as T;
}

async function goto(link: string, heading: string): Promise<void> {
  // Each test may run alone (vitest -t), or after the sign-in test failed: sign in first when needed.
  if (page.url() === 'about:blank') await page.goto('/ui/');
  const key = page.getByLabel('Operator key');
  if (await key.count()) {
    await key.fill(gw.owner);
    await page.keyboard.press('Enter');
  }
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: link, exact: true }).click();
  await page.getByRole('heading', { level: 1, name: heading, exact: true }).waitFor();
}

/** The focused element's id or test id. */
const focused = () => page.evaluate<string>("document.activeElement?.id || document.activeElement?.getAttribute('data-testid') || ''");

async function grantNow(id: string): Promise<{ revoked_at: string | null }> {
  const { grants } = await apiGet<{ grants: { id: string; revoked_at: string | null }[] }>('/v1/grants');
  const grant = grants.find((g) => g.id === id);
  expect(grant).toBeDefined();
  return grant!;
}

/** A token whose session wrote in a read-only session: session and token halted, with last calls. */
async function haltedSession(): Promise<{ token: { raw: string; id: string }; session: string }> {
  const token = await gw.token('rw');
  const s = await gw.session(token.raw, { read_only: true, purpose: 'read the docs' });
  await gw.decide(token.raw, { ...read('docs/a.md'), session_id: s.session_id });
  const denied = await gw.decide(token.raw, { ...write('docs/b.md'), session_id: s.session_id });
  expect(denied).toMatchObject({ decision: 'deny', session: { state: 'halted' } });
  return { token, session: s.session_id };
}

beforeAll(async () => {
  await ensureUiBuilt();
  await t.setup();
  await mkdir(t.dataDir, { recursive: true });
  const policyFile = join(t.dataDir, 'policy.yaml');
  await writeFile(policyFile, UI_POLICY);
  // Its real port in the configuration: the Flags page shows the webhook address built from it.
  const port = await freePort();
  app = await t.app({ policyFile, port });
  await app.listen({ port, host: '127.0.0.1' });
  gw = await new GatewayDriver(t, app).init();
  b = await openBrowser(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`);
  page = b.page;
}, 120_000);

afterAll(async () => {
  await b?.browser.close();
  await t.teardown();
});

describe.skipIf(!BROWSER_TESTS)('admin UI accessibility', { timeout: 90_000 }, () => {
  // Each test from a freshly loaded UI (still signed in: the key is in sessionStorage), so a dialog one
  // test leaves open does not fail the next.
  beforeEach(async () => {
    if (page.url() === 'about:blank') return;
    await page.goto('about:blank');
    await page.goto('/ui/');
  });

  it('signed out, the title says Sign in; a refused key marks the field; after signing in the focus is on the main area', async () => {
    await page.goto('/ui/#/audit');
    const field = page.getByLabel('Operator key');
    await field.waitFor();
    expect(await page.title()).toBe('Sign in · MCP kill switch');
    await field.fill('mcp_rw_not_an_operator_key');
    await page.keyboard.press('Enter');
    const error = page.getByRole('alert');
    await error.waitFor();
    expect(await field.getAttribute('aria-invalid')).toBe('true');
    expect(await field.getAttribute('aria-describedby')).toBe(await error.getAttribute('id'));
    await field.fill(gw.owner);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { level: 1, name: 'Audit trail' }).waitFor();
    await expect.poll(focused).toBe('main');
    expect(await page.title()).toBe('Audit · MCP kill switch');
  });

  it('an optional reason may be left empty: a gateway key and an operator key are revoked with Enter alone, and each revoke is announced', async () => {
    const gwKey = await apiPost<{ gateway_key: { id: string } }>('/v1/gateway-keys', { name: 'a11y spare gateway' });
    const opKey = await apiPost<{ operator_key: { id: string } }>('/v1/operator-keys', { name: 'a11y spare viewer', role: 'viewer' });
    await goto('Tokens', 'Tokens and keys');
    await page.getByRole('tab', { name: 'Gateway keys' }).click();
    await page.getByRole('button', { name: 'Revoke a11y spare gateway' }).click();
    let dialog = page.getByRole('dialog', { name: 'Revoke this gateway key?' });
    await dialog.getByLabel('Reason (optional; recorded in the audit trail)').waitFor();
    await page.keyboard.press('Enter');
    await dialog.waitFor({ state: 'detached' });
    await page.getByTestId('gateway-key-notice').getByText(/^Gateway key a11y spare gateway \(ksgw_\w+…\) revoked/).waitFor();
    const gws = await apiGet<{ keys: { id: string; revoked_at: string | null }[] }>('/v1/gateway-keys');
    expect(gws.keys.find((k) => k.id === gwKey.gateway_key.id)?.revoked_at).not.toBeNull();

    await page.getByRole('tab', { name: 'Operator keys' }).click();
    await page.getByRole('button', { name: 'Revoke a11y spare viewer' }).click();
    dialog = page.getByRole('dialog', { name: 'Revoke this operator key?' });
    await dialog.getByLabel('Reason (optional; recorded in the audit trail)').waitFor();
    // The button is not held back either.
    await dialog.getByRole('button', { name: 'Revoke operator key' }).click();
    await dialog.waitFor({ state: 'detached' });
    await page.getByTestId('operator-key-notice').getByText(/^Operator key a11y spare viewer \(ksop_\w+…\) revoked/).waitFor();
    const ops = await apiGet<{ keys: { id: string; revoked_at: string | null }[] }>('/v1/operator-keys');
    expect(ops.keys.find((k) => k.id === opKey.operator_key.id)?.revoked_at).not.toBeNull();
    // No reason was typed: none was sent (not an empty one), and the audit rows have none.
    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query("SELECT details FROM audit_events WHERE action IN ('gateway_key.revoked', 'operator_key.revoked') AND target IN ($1, $2)", [
      `gateway_key:${gwKey.gateway_key.id}`,
      `operator_key:${opKey.operator_key.id}`,
    ]);
    expect(rows).toHaveLength(2);
    expect(rows.map((r) => r.details.reason ?? null)).toEqual([null, null]);
  });

  it('an alert is acknowledged without a note, with Enter alone', async () => {
    const token = await gw.token('ro');
    const raised = await app.ctx.alerts.raise({ kind: 'RATE_LIMITED', message: 'a11y test: token hit its per-minute limit', token_id: token.id, numbers: { used: 61, max: 60 } });
    await goto('Alerts', 'Alerts');
    const item = page.locator(`li[data-alert-id="${raised.id}"]`);
    await item.getByRole('button', { name: /^Acknowledge/ }).click();
    const dialog = page.getByRole('dialog', { name: 'Acknowledge RATE_LIMITED?' });
    await dialog.getByLabel('Note (optional)').waitFor();
    await page.keyboard.press('Enter');
    await page.getByTestId('alert-notice').getByText('RATE_LIMITED alert acknowledged.', { exact: true }).waitFor();
    expect((await apiGet<{ acknowledged_at: string | null }>(`/v1/alerts/${raised.id}`)).acknowledged_at).not.toBeNull();
  });

  it('revoking a grant asks first (with a reason for the audit trail), names the token, is announced and keeps the focus on the page', async () => {
    const token = await gw.token('rw', { environment: 'production' });
    const grant = await apiPost<{ id: string }>('/v1/grants', { kind: 'production', token_id: token.id, reason: 'INC-9 deploy window', expires_in: 3600 });
    await goto('Grants', 'Grants');
    // The heading shows before the grants are fetched: wait for the table (one only: locators are strict).
    await page.getByRole('table', { name: 'Active grants' }).waitFor();
    const revoke = page.getByRole('button', { name: `Revoke production access grant of token …${token.id.slice(-8)}` });
    await revoke.click();
    const dialog = page.getByRole('dialog', { name: 'Revoke this grant?' });
    await dialog.getByText(token.id).waitFor();
    // Nothing is revoked before the confirmation.
    expect((await grantNow(grant.id)).revoked_at).toBeNull();
    await dialog.getByLabel('Reason (optional; recorded in the audit trail)').fill('deploy done early');
    await page.keyboard.press('Enter');
    await dialog.waitFor({ state: 'detached' });
    const notice = page.getByTestId('grant-notice');
    await notice.getByText(`The production access grant of token …${token.id.slice(-8)} is revoked.`, { exact: true }).waitFor();
    expect(await notice.getAttribute('aria-live')).toBe('polite');
    await expect.poll(focused).toBe('grant-notice');
    expect((await grantNow(grant.id)).revoked_at).not.toBeNull();
    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query("SELECT details FROM audit_events WHERE action = 'grant.revoke' AND details->>'id' = $1", [grant.id]);
    expect(rows.map((r) => r.details.reason)).toEqual(['deploy done early']);
  });

  it('approving a call and a tool definition: the buttons name what they decide, and the decision is announced', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw, { purpose: 'tidy the docs' });
    const asked = await gw.decide(tok.raw, { server: 'filesystem', tool: 'move_file', arguments: { source: 'a.md', destination: 'b.md' }, session_id: s.session_id });
    expect(asked).toMatchObject({ code: 'APPROVAL_REQUIRED' });
    await goto('Approvals', 'Approvals');
    const card = page.locator(`article[data-approval-id="${asked.approval_id as string}"]`);
    await card.getByRole('button', { name: 'Reject call filesystem/move_file', exact: true }).waitFor();
    await card.getByRole('button', { name: 'Approve call filesystem/move_file', exact: true }).click();
    const dialog = page.getByRole('dialog', { name: 'Approve filesystem/move_file?' });
    await dialog.getByLabel('Why is it safe? (audited)').fill('renaming is intended');
    await page.keyboard.press('Enter');
    await page.getByTestId('approval-notice').getByText('Call filesystem/move_file approved.', { exact: true }).waitFor();
    expect(await page.getByTestId('approval-notice').getAttribute('aria-live')).toBe('polite');
    // Its sub-headings come under the page's h1 (no level skipped).
    await goto('Approvals', 'Approvals');
    await page.getByLabel('State').selectOption('approved');
    await page.getByRole('heading', { level: 2, name: 'Arguments (exactly what the approval covers)' }).first().waitFor();

    const report = (description: string) =>
      app.inject({
        method: 'POST',
        url: '/v1/gateway/tools',
        headers: gw.headers(tok.raw),
        payload: { servers: [{ name: 'memory', identity: { command: 'npx', args: ['@modelcontextprotocol/server-memory'] }, tools: [{ name: 'read_graph', description }] }] },
      });
    expect((await report('Read the knowledge graph')).statusCode).toBe(200);
    expect((await report('Read the graph, changed')).json().servers[0].tools[0].status).toBe('changed');
    await goto('Tool definitions', 'Tool definitions');
    await page.getByRole('button', { name: 'Reject definition of memory/read_graph', exact: true }).waitFor();
    await page.getByRole('button', { name: 'Approve definition of memory/read_graph', exact: true }).click();
    const toolDialog = page.getByRole('dialog', { name: /^Approve memory\/read_graph/ });
    await toolDialog.getByLabel('Reason (recorded in the audit trail)').fill('release notes checked');
    await page.keyboard.press('Enter');
    await page.getByTestId('tool-notice').getByText('Definition of memory/read_graph approved.', { exact: true }).waitFor();
  });

  it('a session halted only by its token offers Resume token, not a Resume session that always fails', async () => {
    const halted = await haltedSession();
    // Its own halt resumed (through the API): only the token's halt holds it now.
    await apiPost(`/v1/sessions/${halted.session}/resume`, { reason: 'the write was intended' });
    expect(await apiGet<{ state: string; halted_by: string }>(`/v1/sessions/${halted.session}`)).toMatchObject({ state: 'halted', halted_by: 'token' });
    await goto('Sessions', 'Sessions');
    const card = page.locator(`article[data-session-id="${halted.session}"]`);
    await card.getByText('Halted by its token', { exact: true }).waitFor();
    await card.getByRole('button', { name: /^Resume token/ }).waitFor();
    expect(await card.getByRole('button', { name: /^Resume session/ }).count()).toBe(0);
    // Its last calls: a level-2 heading under the page's h1, and a table named by its caption.
    await card.getByRole('heading', { level: 2, name: 'Last calls' }).waitFor();
    expect(await card.getByRole('table', { name: `Last calls of session ${halted.session}` }).count()).toBe(1);
  });

  it('the explain page has its live region before the first answer, so the first verdict is read out', async () => {
    const ro = await gw.token('ro');
    await goto('Explain a denial', 'Explain a denial');
    const live = page.getByTestId('explain-result');
    expect(await live.getAttribute('aria-live')).toBe('polite');
    expect(await live.textContent()).toBe('');
    await page.getByLabel('Agent token id').fill(ro.id);
    await page.getByLabel('Server').fill('filesystem');
    await page.getByLabel('Tool').fill('write_file');
    await page.getByRole('button', { name: 'Explain' }).click();
    await live.locator('.verdict-deny').getByText('PERMISSION_DENIED').waitFor();
    await page.getByRole('heading', { level: 2, name: 'Steps' }).waitFor();
  });

  it('Create token stays enabled: a submit without the write-risk confirmation says what is missing and marks that checkbox', async () => {
    await goto('Tokens', 'Tokens and keys');
    await page.getByRole('tab', { name: 'Agent tokens' }).click();
    await page.getByRole('button', { name: 'Create token' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create an agent token' });
    await dialog.getByLabel('Project id').fill('gamma');
    await dialog.getByLabel('Description (who holds it and why)').fill('a11y writer');
    await dialog.locator('input[name="token-type"][value="rw"]').check();
    const create = dialog.getByRole('button', { name: 'Create', exact: true });
    expect(await create.isEnabled()).toBe(true);
    await create.click();
    const error = dialog.getByRole('alert').filter({ hasText: 'Not created yet' });
    await error.waitFor();
    expect(await error.textContent()).toMatch(/I understand that this AI can modify data/);
    const ack = dialog.getByRole('checkbox', { name: /I understand/ });
    expect(await ack.getAttribute('aria-invalid')).toBe('true');
    expect((await ack.getAttribute('aria-describedby'))?.split(' ')).toContain(await error.getAttribute('id'));
    // The focus is on what is missing: Space ticks it, and the note goes.
    expect(await ack.evaluate((el) => el === el.ownerDocument.activeElement)).toBe(true);
    expect((await apiGet<{ keys: { description: string }[] }>('/v1/keys')).keys.some((k) => k.description === 'a11y writer')).toBe(false);
    await page.keyboard.press('Space');
    await error.waitFor({ state: 'detached' });
    expect(await ack.getAttribute('aria-invalid')).toBeNull();
    await create.click();
    const done = page.getByRole('dialog', { name: 'Token created' });
    await done.getByTestId('raw-token').waitFor();
    await done.getByRole('button', { name: 'Done' }).click();
    await done.waitFor({ state: 'detached' });

    // Its write scopes are marked by more than colour: a visible mark, and "(write)" for screen readers.
    const created = (await apiGet<{ keys: { id: string; description: string }[] }>('/v1/keys')).keys.find((k) => k.description === 'a11y writer')!;
    const row = page.locator(`tr[data-token-id="${created.id}"]`);
    const insert = row.locator('li.scope').filter({ hasText: 'db:insert' });
    expect(await insert.textContent()).toBe('db:insert (write)');
    expect(await insert.locator('svg').count()).toBe(1);
    const select = row.locator('li.scope').filter({ hasText: 'db:select' });
    expect(await select.textContent()).toBe('db:select');
    expect(await page.getByRole('table', { name: 'Agent tokens' }).count()).toBe(1);
  });

  it('Kill everything stays enabled: a submit without the second confirmation says so and marks the checkbox', async () => {
    await goto('Kills', 'Kills');
    const form = page.getByRole('form', { name: 'Create a kill' });
    await form.getByLabel('Stop').selectOption('everything');
    await form.getByLabel(/^Reason/).fill('credential leak, stop all agents');
    const kill = form.getByRole('button', { name: 'Kill everything' });
    expect(await kill.isEnabled()).toBe(true);
    await kill.click();
    const error = form.getByRole('alert');
    await error.waitFor();
    expect(await error.textContent()).toMatch(/I mean it/);
    const confirm = form.getByLabel(/I mean it/);
    expect(await confirm.getAttribute('aria-invalid')).toBe('true');
    expect(await confirm.getAttribute('aria-describedby')).toBe(await error.getAttribute('id'));
    // Nothing was sent.
    expect((await apiGet<{ kills: unknown[] }>('/v1/kills?state=all')).kills).toHaveLength(0);
    await confirm.check();
    await error.waitFor({ state: 'detached' });
    expect(await confirm.getAttribute('aria-invalid')).toBeNull();
    // Back to a server kill: the form is left as it was found, nothing killed.
    await form.getByLabel('Stop').selectOption('server');
  });

  it('audit rows each have their own Details button name', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw, { purpose: 'audit names' });
    await gw.decide(tok.raw, { ...write('docs/a.md'), session_id: s.session_id });
    await gw.decide(tok.raw, { ...read('docs/a.md'), session_id: s.session_id });
    await app.ctx.audit.writer.flush();
    await goto('Audit', 'Audit trail');
    await page.locator('tr[data-audit-id]').nth(1).waitFor();
    const names = await page.locator('tr[data-audit-id] button[aria-expanded]').evaluateAll((bs) => bs.map((x) => (x.textContent ?? '').trim()));
    expect(names.length).toBeGreaterThan(1);
    expect(names.every((n) => /^Details of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \S+/.test(n))).toBe(true);
    expect(names.some((n) => n.endsWith(' filesystem/write_file'))).toBe(true);
    // By name, as a screen reader's list of buttons shows them: each its own.
    expect(await page.getByRole('button', { name: /^Details of .* filesystem\/write_file$/ }).count()).toBeGreaterThan(0);
  });

  it('at 320 CSS px no page scrolls sideways: Sessions, Usage, Audit, Flags, Incident timeline and Explain', async () => {
    await haltedSession();
    const before = page.viewportSize()!;
    const pages: [string, string, () => Promise<void>][] = [
      ['Sessions', 'Sessions', () => page.locator('table.calls').first().waitFor()],
      ['Usage', 'Usage', () => page.locator('canvas').first().waitFor()],
      ['Audit', 'Audit trail', () => page.locator('tr[data-audit-id]').first().waitFor()],
      ['Flags', 'Flags', () => page.getByRole('cell', { name: 'mcp.enabled' }).first().waitFor()],
      ['Incident timeline', 'Incident timeline', () => page.locator('form').first().waitFor()],
      ['Explain a denial', 'Explain a denial', () => page.getByLabel('Agent token id').waitFor()],
    ];
    const wide: Record<string, number> = {};
    try {
      await page.setViewportSize({ width: 320, height: 640 });
      // The navigation wraps at this width: open it through its links all the same.
      for (const [link, heading, loaded] of pages) {
        await goto(link, heading);
        await loaded();
        const width = await page.evaluate<number>('document.documentElement.scrollWidth');
        if (width > 320) wide[link] = width;
      }
      // Explain with an answer, with its table of each session's verdict.
      const tok = await gw.token('rw');
      await gw.session(tok.raw, { read_only: true, purpose: 'reads' });
      await gw.session(tok.raw, { purpose: 'writes' });
      await page.getByLabel('Agent token id').fill(tok.id);
      await page.getByLabel('Server').fill('filesystem');
      await page.getByLabel('Tool').fill('write_file');
      await page.getByRole('button', { name: 'Explain' }).click();
      await page.getByRole('table', { name: /^Verdict in each session checked/ }).waitFor();
      const explained = await page.evaluate<number>('document.documentElement.scrollWidth');
      if (explained > 320) wide['Explain (answered)'] = explained;
    } finally {
      await page.setViewportSize(before);
    }
    expect(wide).toEqual({});
  });

  it('no console errors', () => {
    expect(b.consoleErrors.filter((e) => !/status of 401 .*\/v1\/scopes\)$/.test(e))).toEqual([]);
  });
});
