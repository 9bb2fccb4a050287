import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { UnleashAddon } from '../../src/flags/admin-client.js';
import type { EmbeddedUnleash } from '../../src/flags/embedded.js';
import { prepareUnleash, syncFromConfig } from '../../src/flags/setup.js';
import { registeredWebhook } from '../../src/flags/sync.js';
import { LogCapture, TestContext } from '../helpers/context.js';
import { dropDatabase, freePort, startStandaloneUnleash, TEST_UNLEASH_ADMIN_TOKEN, TEST_UNLEASH_API_TOKEN, testAdmin, testPolicyNames } from '../helpers/unleash.js';

// Replicas started together on a fresh Unleash (a review of a three-replica installation): each found no
// webhook integration and created one (every flag event then delivered, audited and alerted three times),
// and two of three start syncs failed racing on the context fields. Each test has an Unleash of its own,
// empty, as a new installation's is.

const t = new TestContext();
const started: Array<{ unleash: EmbeddedUnleash; database: string }> = [];

beforeAll(() => t.setup());
afterAll(async () => {
  for (const s of started) {
    await s.unleash.stop();
    await dropDatabase(s.database);
  }
  await t.teardown();
});

async function freshUnleash(tag: string) {
  const s = await startStandaloneUnleash(`${tag}-${process.pid}`, { empty: true });
  started.push(s);
  return s.unleash;
}

const isOurs = (a: UnleashAddon) => a.provider === 'webhook' && (a.description ?? '').startsWith('killswitch control plane:');

describe('flags syncs at the same time on a fresh Unleash', () => {
  it('without the start lock (a shell beside starts): every sync succeeds, and one integration is left enabled', async () => {
    const unleash = await freshUnleash('race-nolock');
    const config = loadConfig({}, { unleashUrl: unleash.apiUrl, unleashAdminToken: TEST_UNLEASH_ADMIN_TOKEN, unleashWebhookSecret: 'race-test-webhook-secret' });
    const names = await testPolicyNames();
    const url = `http://127.0.0.1:${await freePort()}/v1/flags/events`;
    const results = await Promise.allSettled([0, 1, 2, 3].map(() => syncFromConfig(config, { names, webhookUrl: url })));
    expect(results.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok'))).toEqual(['ok', 'ok', 'ok', 'ok']);
    const ours = (await testAdmin({ apiUrl: unleash.apiUrl, adminToken: TEST_UNLEASH_ADMIN_TOKEN }).listAddons()).filter(isOurs).map(registeredWebhook);
    expect(ours.filter((w) => w.enabled)).toHaveLength(1);
    const fields = (await testAdmin({ apiUrl: unleash.apiUrl, adminToken: TEST_UNLEASH_ADMIN_TOKEN }).listContextFields()).map((f) => f.name);
    expect(fields).toEqual(expect.arrayContaining(['tokenType', 'role', 'mcpEnvironment', 'projectId', 'server', 'tool', 'capability']));
  }, 120_000);

  it('three replicas starting together: every start syncs the flags, and Unleash gets one webhook integration; a fourth with another secret says at error that it takes it', async () => {
    const unleash = await freshUnleash('race-start');
    const port = await freePort();
    const config = t.config({ unleashUrl: unleash.apiUrl, unleashApiToken: TEST_UNLEASH_API_TOKEN, unleashAdminToken: TEST_UNLEASH_ADMIN_TOKEN, unleashWebhookSecret: 'race-test-webhook-secret', port });
    const logs = [new LogCapture(), new LogCapture(), new LogCapture()];
    const starts = await Promise.all(logs.map((l) => prepareUnleash(config, pino({ level: 'info' }, l))));
    expect(logs.map((l) => l.lines.filter((x) => x.includes('flags sync failed')))).toEqual([[], [], []]);
    expect(starts.map((s) => s.flagsAtStart !== undefined)).toEqual([true, true, true]);
    const ours = (await testAdmin({ apiUrl: unleash.apiUrl, adminToken: TEST_UNLEASH_ADMIN_TOKEN }).listAddons()).filter(isOurs).map(registeredWebhook);
    expect(ours.map((w) => [w.url, w.enabled])).toEqual([[`http://127.0.0.1:${port}/v1/flags/events`, true]]);

    // A fourth replica with another UNLEASH_WEBHOOK_SECRET: it starts (a rotation goes through this), but
    // says at error, before it takes the webhook, that the others will refuse its events.
    const other = new LogCapture();
    const same = new LogCapture();
    await prepareUnleash({ ...config, unleashWebhookSecret: 'a-different-webhook-secret' }, pino({ level: 'info' }, other));
    expect(other.lines.filter((l) => JSON.parse(l).level === 50 && l.includes('was registered with another secret'))).toHaveLength(1);
    // One of the first three, restarted, takes it back: it says the same (replicas disagree), and a start after it does not.
    await prepareUnleash(config, pino({ level: 'info' }, new LogCapture()));
    await prepareUnleash(config, pino({ level: 'info' }, same));
    expect(same.text).not.toContain('another secret');
  }, 120_000);
});
