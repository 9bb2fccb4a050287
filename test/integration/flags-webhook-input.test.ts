import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { buildApp } from '../../src/app.js';
import { bearer, TestContext } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';

// Event types that are names of Object.prototype's members (a fuzz review): `__proto__` was looked up on a
// plain object, so its audit row carried an object where the action belongs, was stored as something else
// than it was hashed as, and broke the replica's chain for good (verify names only a chain's first break,
// so later tampering went unreported); `constructor` and the like stored a row with no action.

const t = new TestContext();
const secret = { authorization: inject('unleash').webhookSecret };
let app: Awaited<ReturnType<typeof buildApp>>;
let owner: string;

beforeAll(async () => {
  await t.setup();
  app = await t.app();
  owner = await t.operatorKey(app, 'owner');
});
afterAll(() => t.teardown());

describe('POST /v1/flags/events: event types that are Object.prototype names', () => {
  it('are recorded as flag.changed with the type as sent, and the audit chain still verifies', async () => {
    const types = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];
    for (const type of types) {
      const res = await app.inject({ method: 'POST', url: '/v1/flags/events', headers: secret, payload: { type, featureName: 'mcp.enabled' } });
      expect(res.statusCode, `${type}: ${res.body}`).toBe(200);
      expect(res.json().result).toBe('ignored');
    }
    const rows = async () =>
      (await t.pool().query(`SELECT action, details ->> 'unleash_event' AS type FROM audit_events WHERE actor_id = 'unleash-webhook' ORDER BY seq`)).rows;
    await until(async () => (await rows()).length >= types.length, 10_000, 'the five audit rows');
    expect(await rows()).toEqual(types.map((type) => ({ action: 'flag.changed', type })));
    const verify = await app.inject({ method: 'GET', url: '/v1/audit/verify', headers: bearer(owner) });
    expect(verify.json()).toMatchObject({ ok: true });
  });
});

describe('GET /v1/flags while a webhook deny is in force', () => {
  // The incident runbook (section F.a) has the operator check that the flag reads `"enabled": false` with
  // source "webhook" in the second between the webhook and the next poll; the flag read `true` (the
  // polled state) beside evaluations that were all false, and the admin UI's Flags page showed it "on".
  it('shows the flag off, from the webhook, with the polled state still on', async () => {
    const flag = 'mcp.memory.write';
    // An event id no poll reaches for minutes: the deny stays in force for the whole test.
    const event = { type: 'feature-environment-disabled', featureName: flag, environment: inject('unleash').environment, id: 2_000_000_000, createdBy: 'admin' };
    expect((await app.inject({ method: 'POST', url: '/v1/flags/events', headers: secret, payload: event })).json()).toEqual({ result: 'denied' });
    const res = await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(owner) });
    expect(res.statusCode).toBe(200);
    const entry = (res.json().flags as { name: string }[]).find((f) => f.name === flag);
    expect(entry).toMatchObject({ enabled: false, source: 'webhook', evaluations: { rw: { development: false } } });
  });
});
