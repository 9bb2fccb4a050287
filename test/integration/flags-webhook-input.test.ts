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
