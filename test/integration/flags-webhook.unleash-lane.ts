import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Alert } from '../../src/alerts/store.js';
import { loadConfig } from '../../src/config.js';
import { toUnleashContext } from '../../src/flags/service.js';
import { prepareUnleash } from '../../src/flags/setup.js';
import { bearer, TestContext } from '../helpers/context.js';
import { freePort, restoreFlag, testAdmin, until } from '../helpers/unleash.js';

// The webhook path: Unleash posts flag events to /v1/flags/events; a disable is applied at once as a
// local deny on every replica (Redis pub/sub) and ends when the polled state has caught up.

const unleash = inject('unleash');
const admin = testAdmin(unleash);
const env = unleash.environment;
const ctx = new TestContext();
const touched = new Set<string>();
const rwDev = toUnleashContext({ userId: 'tok-1', tokenType: 'rw', mcpEnvironment: 'development' });
const secret = { authorization: unleash.webhookSecret };
const receiver = { host: '127.0.0.1', port: unleash.webhookPort };

let a: FastifyInstance;
let b: FastifyInstance;

function post(app: FastifyInstance, body: Record<string, unknown>, headers: Record<string, string> = secret) {
  return app.inject({ method: 'POST', url: '/v1/flags/events', headers, payload: body });
}

beforeAll(async () => {
  await ctx.setup();
  // Two replicas of one installation (same database, same Redis prefix), whose PORT is where the run's
  // webhook posts (they do not listen there: only their webhook URL is the run's).
  a = await ctx.app(receiver);
  b = await ctx.app(receiver);
});

afterEach(async () => {
  for (const flag of touched) await restoreFlag(unleash, flag);
  for (const flag of touched) for (const app of [a, b]) await until(() => app.ctx.flags.isEnabled(flag, rwDev), 15_000, `${flag} on again`);
  touched.clear();
});

afterAll(async () => {
  await ctx.teardown();
});

describe('Unleash webhook receiver', () => {
  it('refuses a missing or wrong secret with 401 and changes nothing', async () => {
    const event = { type: 'feature-environment-disabled', featureName: 'mcp.memory.write', environment: env, id: 1 };
    for (const headers of [{}, { authorization: 'wrong' }, { authorization: `Bearer ${unleash.webhookSecret}` }]) {
      const res = await post(a, event, headers);
      expect(res.statusCode).toBe(401);
      expect(res.json().error.code).toBe('UNAUTHENTICATED');
    }
    expect(a.ctx.flags.status().overrides).toEqual([]);
    expect(a.ctx.flags.isEnabled('mcp.memory.write', rwDev)).toBe(true);
  });

  it('UNLEASH_WEBHOOK_SECRET unset: no published default is accepted; the first build generates a secret, stores it once, and every build on the database accepts only it', async () => {
    const fresh = await new TestContext().setup();
    try {
      // What an installation that never set UNLEASH_WEBHOOK_SECRET gets (before: its published default).
      const unset = { ...receiver, unleashWebhookSecret: loadConfig({}).unleashWebhookSecret };
      const stored = async () => (await fresh.pool().query<{ value: string }>(`SELECT value FROM settings WHERE key = 'unleash_webhook_secret'`)).rows;
      const first = await fresh.app(unset);
      // Anyone who reaches the port: a forged disable with the old published default is refused.
      const published = await post(first, { type: 'feature-environment-disabled', featureName: 'mcp.memory.write', environment: env, id: 1 }, { authorization: 'killswitch-dev-webhook-secret' });
      expect(published.statusCode).toBe(401);
      const rows = await stored();
      expect(rows).toHaveLength(1);
      const generated = rows[0]!.value;
      expect(generated.length).toBeGreaterThanOrEqual(32);
      expect(fresh.logs.text).toContain('UNLEASH_WEBHOOK_SECRET is not set: generated a webhook secret');
      const second = await fresh.app(unset);
      expect(await stored()).toEqual(rows);
      // A forged disable with the old published default (or any other secret) is refused by both replicas.
      const forged = { type: 'feature-environment-disabled', featureName: 'mcp.memory.write', environment: env, id: 1 };
      for (const app of [first, second]) {
        for (const authorization of ['killswitch-dev-webhook-secret', unleash.webhookSecret, '']) {
          const res = await post(app, forged, { authorization });
          expect(res.statusCode).toBe(401);
          expect(res.json().error.code).toBe('UNAUTHENTICATED');
        }
        expect(app.ctx.flags.isEnabled('mcp.memory.write', rwDev)).toBe(true);
      }
      // The stored secret is accepted by both (an event that changes nothing; ids of their own, or the second would be a copy).
      for (const [i, app] of [first, second].entries()) expect((await post(app, { type: 'feature-updated', featureName: 'mcp.memory.write', environment: env, id: 2 + i }, { authorization: generated })).json()).toEqual({ result: 'ignored' });
      // GET /v1/flags compares the registration with the stored secret.
      const viewer = await fresh.operatorKey(second, 'viewer');
      expect((await second.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json().webhook.registration.state).toBe('not-attempted');
    } finally {
      await fresh.teardown();
    }
  });

  it('fails closed: a replica that cannot read the stored webhook secret refuses every event (503) until it can', async () => {
    const fresh = await new TestContext().setup();
    const db = fresh.pool();
    try {
      const unset = { ...receiver, unleashWebhookSecret: loadConfig({}).unleashWebhookSecret };
      await db.query('ALTER TABLE settings RENAME TO settings_away');
      const blind = await fresh.app(unset);
      expect(fresh.logs.text).toContain('cannot read the webhook secret from the database');
      const event = { type: 'feature-environment-disabled', featureName: 'mcp.memory.write', environment: env, id: 1 };
      for (const authorization of ['killswitch-dev-webhook-secret', '', 'anything']) {
        const res = await post(blind, event, { authorization });
        expect(res.statusCode).toBe(503);
        expect(res.json().error.code).toBe('SERVICE_UNAVAILABLE');
      }
      expect(blind.ctx.flags.isEnabled('mcp.memory.write', rwDev)).toBe(true);
      // The poll still works; the Flags page says why events are refused.
      expect(blind.ctx.flags.isReady()).toBe(true);
      const viewer = await fresh.operatorKey(blind, 'viewer');
      expect((await blind.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json().webhook.registration).toMatchObject({ state: 'unknown', error: expect.stringContaining('webhook secret') });
      // Readable again: within a retry interval the secret is generated, stored and the only one accepted.
      await db.query('ALTER TABLE settings_away RENAME TO settings');
      const stored = async () => (await db.query<{ value: string }>(`SELECT value FROM settings WHERE key = 'unleash_webhook_secret'`)).rows[0]?.value;
      await until(async () => (await post(blind, event, { authorization: 'anything' })).statusCode === 401, 15_000, 'the secret read again', 500);
      const secretNow = await stored();
      expect(secretNow).toBeDefined();
      expect((await post(blind, { type: 'feature-updated', featureName: 'mcp.memory.write', environment: env, id: 2 }, { authorization: secretNow! })).json()).toEqual({ result: 'ignored' });
    } finally {
      await fresh.teardown();
    }
  }, 30_000);

  it('a disabled event denies at once on a second replica, and the deny ends once the poll includes the event', async () => {
    const flag = 'mcp.memory.write';
    const revision = a.ctx.flags.status().revision;
    expect(revision).toBeGreaterThan(0);
    // Unleash still has the flag on: only the webhook can explain a deny (the next event id).
    const res = await post(a, { type: 'feature-environment-disabled', featureName: flag, environment: env, id: revision! + 1, createdBy: 'admin', data: null, tags: [] });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ result: 'denied' });
    expect(a.ctx.flags.isEnabled(flag, rwDev)).toBe(false);
    // Its row names who changed the flag in Unleash (createdBy).
    await a.ctx.audit.writer.flush();
    const { rows } = await ctx.pool().query(`SELECT actor_id, details FROM audit_events WHERE action = 'flag.disabled' AND target = $1 AND details->>'event_id' = $2`, [`flag:${flag}`, String(revision! + 1)]);
    expect(rows).toEqual([{ actor_id: 'unleash-webhook', details: { unleash_event: 'feature-environment-disabled', environment: env, event_id: revision! + 1, unleash_user: 'admin', result: 'denied' } }]);
    // Within the promised second (until fails past it); how fast is logged, not asserted.
    const pubsubMs = await until(() => !b.ctx.flags.isEnabled(flag, rwDev), 1_000, 'replica b denies');
    console.log(`webhook event to a deny on the second replica: ${pubsubMs} ms`);
    expect(b.ctx.flags.whyOff(flag, rwDev).reason).toBe('webhook');
    expect(b.ctx.flags.status().overrides).toMatchObject([{ flag, reason: 'disabled', eventId: revision! + 1 }]);
    // Any change in Unleash moves its revision past the event while the flag stays on: the poll now
    // includes the (here synthetic) disable and says on, so the deny ends on both replicas.
    touched.add('mcp.sqlite.delete');
    await admin.setEnabled('mcp.sqlite.delete', env, false);
    for (const app of [a, b]) await until(() => app.ctx.flags.isEnabled(flag, rwDev), 10_000, 'override ended by the poll');
    expect(a.ctx.flags.status().overrides).toEqual([]);
  });

  it('an event for another Unleash environment is ignored; an archived event denies; an enabled event ends an older deny', async () => {
    const other = await post(a, { type: 'feature-environment-disabled', featureName: 'mcp.fetch.read', environment: 'production', id: 10_000_000 });
    expect(other.json()).toEqual({ result: 'ignored' });
    expect(a.ctx.flags.isEnabled('mcp.fetch.read', rwDev)).toBe(true);
    expect(ctx.logs.text).toMatch(/turned off in Unleash environment .{0,2}production.{0,2}, but this control plane reads .{0,2}development/);

    const archived = await post(a, { type: 'feature-archived', featureName: 'mcp.fetch.read', id: 10_000_000 });
    expect(archived.json()).toEqual({ result: 'denied' });
    await until(() => !b.ctx.flags.isEnabled('mcp.fetch.read', rwDev), 1_000, 'b denies archived');
    expect(b.ctx.flags.status().overrides[0]?.reason).toBe('archived');
    const enabled = await post(a, { type: 'feature-environment-enabled', featureName: 'mcp.fetch.read', environment: env, id: 10_000_001 });
    expect(enabled.json()).toEqual({ result: 'cleared' });
    await until(() => b.ctx.flags.isEnabled('mcp.fetch.read', rwDev), 1_000, 'b allows again');
    // Other event types are accepted and change nothing.
    expect((await post(a, { type: 'feature-strategy-update', featureName: 'mcp.fetch.read', environment: env, id: 5 })).json()).toEqual({ result: 'ignored' });
  });

  it('GET /v1/flags on every replica shows when the last webhook event arrived, also one that changed nothing', async () => {
    const viewer = await ctx.operatorKey(a, 'viewer');
    const overview = async (app: FastifyInstance) => (await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json();
    const before = Date.now();
    expect((await post(a, { type: 'feature-updated', featureName: 'mcp.sqlite.read', environment: env, id: 6 })).json()).toEqual({ result: 'ignored' });
    expect((await overview(a)).webhook).toMatchObject({ last_event_type: 'feature-updated', last_event_flag: 'mcp.sqlite.read' });
    await until(async () => (await overview(b)).webhook.last_event_flag === 'mcp.sqlite.read', 1_000, 'replica b heard of the event');
    const seen = (await overview(b)).webhook;
    expect(seen).toMatchObject({ url: expect.stringMatching(/\/v1\/flags\/events$/), last_event_type: 'feature-updated' });
    expect(Date.parse(seen.last_event_at)).toBeGreaterThanOrEqual(before);
  });

  it('a flag turned back on raises FLAG_ENABLED, which acknowledges (as the system, audited) the open FLAG_DISABLED alerts of that flag only', async () => {
    const viewer = await ctx.operatorKey(a, 'viewer');
    const flag = 'mcp.memory.read';
    const other = 'mcp.sqlite.read';
    const alertsOf = async (kind: string, f: string) =>
      ((await a.inject({ method: 'GET', url: `/v1/alerts?kind=${kind}&limit=500`, headers: bearer(viewer) })).json().alerts as Alert[]).filter((x) => x.details.flag === f);
    const id = 20_000_000 + (a.ctx.flags.status().revision ?? 0);
    // Two off/on cycles of one flag, and another flag turned off meanwhile.
    expect((await post(a, { type: 'feature-environment-disabled', featureName: flag, environment: env, id })).json()).toEqual({ result: 'denied' });
    expect((await post(a, { type: 'feature-environment-disabled', featureName: other, environment: env, id: id + 1 })).json()).toEqual({ result: 'denied' });
    await until(async () => (await alertsOf('FLAG_DISABLED', flag)).length === 1 && (await alertsOf('FLAG_DISABLED', other)).length === 1, 3_000, 'two FLAG_DISABLED');
    const [first] = await alertsOf('FLAG_DISABLED', flag);

    expect((await post(a, { type: 'feature-environment-enabled', featureName: flag, environment: env, id: id + 2 })).json()).toEqual({ result: 'cleared' });
    await until(async () => (await alertsOf('FLAG_ENABLED', flag)).length === 1, 3_000, 'FLAG_ENABLED');
    const [enabled] = await alertsOf('FLAG_ENABLED', flag);
    expect(enabled).toMatchObject({ severity: 'info', acknowledged_at: null, details: { flag, event_id: id + 2, resolves: [first!.id] } });
    expect(enabled!.message).toContain(flag);
    const disabledNow = await alertsOf('FLAG_DISABLED', flag);
    expect(disabledNow[0]).toMatchObject({ id: first!.id, acknowledged_by: 'system:flag-webhook', ack_note: expect.stringContaining('flag turned back on') });
    expect(disabledNow[0]!.acknowledged_at).not.toBeNull();
    // The other flag is still off: its alert stays open.
    expect((await alertsOf('FLAG_DISABLED', other))[0]!.acknowledged_at).toBeNull();

    // Audited like a human acknowledgement, with the system as actor.
    const audited = async () =>
      (await ctx.pool().query(`SELECT actor_type, actor_id, details FROM audit_events WHERE action = 'alert.acknowledged' AND target = $1`, [`alert:${first!.id}`])).rows;
    await until(async () => (await audited()).length === 1, 5_000, 'the alert.acknowledged audit row');
    expect((await audited())[0]).toMatchObject({ actor_type: 'system', actor_id: 'flag-webhook', details: { kind: 'FLAG_DISABLED', answered_by: enabled!.id } });

    // Second cycle; then an enable older than the deny in force (out of order) raises nothing.
    expect((await post(a, { type: 'feature-environment-disabled', featureName: flag, environment: env, id: id + 4 })).json()).toEqual({ result: 'denied' });
    await until(async () => (await alertsOf('FLAG_DISABLED', flag)).length === 2, 3_000, 'second FLAG_DISABLED');
    expect((await post(a, { type: 'feature-environment-enabled', featureName: flag, environment: env, id: id + 3 })).json()).toEqual({ result: 'ignored' });
    expect((await post(a, { type: 'feature-environment-enabled', featureName: flag, environment: env, id: id + 5 })).json()).toEqual({ result: 'cleared' });
    await until(async () => (await alertsOf('FLAG_ENABLED', flag)).length === 2, 3_000, 'second FLAG_ENABLED');
    expect((await alertsOf('FLAG_DISABLED', flag)).every((x) => x.acknowledged_by === 'system:flag-webhook')).toBe(true);
    expect((await alertsOf('FLAG_ENABLED', flag)).map((x) => x.details.event_id)).toEqual([id + 5, id + 2]);

    // Turned on in another environment: no alert, and this environment's alert stays open.
    await post(a, { type: 'feature-environment-enabled', featureName: other, environment: 'production', id: id + 6 });
    expect((await post(a, { type: 'feature-environment-enabled', featureName: other, environment: env, id: id + 7 })).json()).toEqual({ result: 'cleared' });
    await until(async () => (await alertsOf('FLAG_ENABLED', other)).length === 1, 3_000, 'FLAG_ENABLED of the other flag');
    expect((await alertsOf('FLAG_ENABLED', other))[0]!.details.event_id).toBe(id + 7);
  });

  it("GET /v1/flags on every replica says whether the start registered the webhook in Unleash, when, and why not", async () => {
    const viewer = await ctx.operatorKey(a, 'viewer');
    const registration = async (app: FastifyInstance) => (await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json().webhook.registration;
    // These replicas were built without the start's sync (as the tests build them): nothing recorded.
    expect(await registration(a)).toMatchObject({ state: 'not-attempted', at: null, error: null, registered_at: null });

    // The start of a replica (`killswitch start`): its sync finds the run's webhook at its URL and rewrites it (Unleash masks URL and secret).
    const log = pino({ level: 'silent' });
    const before = Date.now();
    await prepareUnleash(ctx.config(receiver), log);
    const ok = await registration(b);
    expect(ok).toMatchObject({ state: 'registered', by: 'start', result: 'updated', error: null, url: `http://127.0.0.1:${unleash.webhookPort}/v1/flags/events`, same_secret: true });
    expect(Date.parse(ok.at)).toBeGreaterThanOrEqual(before);
    expect(ok.registered_at).toBe(ok.at);

    // An external Unleash and a control plane given no admin token of it (UNLEASH_ADMIN_TOKEN left at its default):
    // Unleash refuses the registration; the start goes on, and every replica says so.
    await prepareUnleash(ctx.config({ ...receiver, unleashAdminToken: loadConfig({}).unleashAdminToken }), log);
    const failed = await registration(b);
    expect(failed).toMatchObject({ state: 'failed', by: 'start', result: null, error: expect.stringMatching(/answered 40[13]/), registered_at: ok.at });
    expect(Date.parse(failed.at)).toBeGreaterThanOrEqual(Date.parse(ok.at));
    expect(await registration(a)).toEqual(failed);

    // Nothing answers at UNLEASH_URL: failed, with the cause.
    await prepareUnleash(ctx.config({ ...receiver, unleashUrl: `http://127.0.0.1:${await freePort()}/api` }), log);
    expect(await registration(a)).toMatchObject({ state: 'failed', error: expect.stringMatching(/ECONNREFUSED/) });
  });

  it('a flag change only the poll saw (no webhook reached a replica) is one flag.changed row, source poll, however many replicas polled it', async () => {
    const flag = 'mcp.sqlite.delete';
    const changed = async (enabled: string) =>
      (await ctx.pool().query(`SELECT actor_type, actor_id, details FROM audit_events WHERE action = 'flag.changed' AND target = $1 AND details->>'enabled' = $2 AND details->>'source' = 'poll'`, [`flag:${flag}`, enabled]))
        .rows;
    const before = (await changed('false')).length;
    touched.add(flag);
    await admin.setEnabled(flag, env, false);
    for (const app of [a, b]) await until(() => !app.ctx.flags.isEnabled(flag, rwDev), 10_000, 'both replicas polled the change');
    await until(async () => (await changed('false')).length > before, 5_000, 'the polled change audited');
    // Both replicas saw it; the other one's claim in Redis failed, so it wrote nothing.
    await new Promise((r) => setTimeout(r, 200));
    for (const app of [a, b]) await app.ctx.audit.writer.flush();
    const rows = await changed('false');
    expect(rows).toHaveLength(before + 1);
    expect(rows[rows.length - 1]).toMatchObject({ actor_type: 'system', actor_id: 'flags-poll', details: { source: 'poll', enabled: false, previous: true, environment: env } });
    expect(rows[rows.length - 1].details.revision).toBeGreaterThan(0);
    expect(rows[rows.length - 1].details.replica).toBeUndefined();
  });

  it("Unleash's own webhook integration reaches a listening control plane and denies before any poll could", async () => {
    // A replica that polls only every 30 s: its deny comes from the webhook (the reason says so).
    const listening = await ctx.app({ unleashRefreshMs: 30_000 });
    await listening.listen({ host: '127.0.0.1', port: unleash.webhookPort });
    const flag = 'mcp.git.write';
    expect(listening.ctx.flags.isEnabled(flag, rwDev)).toBe(true);
    touched.add(flag);
    await admin.setEnabled(flag, env, false);
    await until(() => !listening.ctx.flags.isEnabled(flag, rwDev), 5_000, 'webhook deny');
    expect(listening.ctx.flags.whyOff(flag, rwDev).reason).toBe('webhook');
    // The other replicas got it through Redis as well (they may also have polled it by now).
    for (const app of [a, b]) await until(() => !app.ctx.flags.isEnabled(flag, rwDev), 3_000, 'replicas deny');
    // Re-enabling in Unleash: the enabled event ends the deny on the slow-polling replica before its next poll.
    await restoreFlag(unleash, flag);
    touched.delete(flag);
    await until(() => listening.ctx.flags.isEnabled(flag, rwDev), 5_000, 'enabled event ends the deny');
    await ctx.close(listening);
  }, 60_000);
});
