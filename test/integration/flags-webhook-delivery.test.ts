import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { registrationRecord, saveRegistration, WEBHOOK_OTHER_SECRET_WARNING } from '../../src/flags/registration.js';
import { webhookUrl } from '../../src/flags/setup.js';
import { TestContext } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';

// What reaches POST /v1/flags/events more than once, or with a secret this replica does not accept: a
// second delivery of one Unleash event (two integrations posting to one URL, replicas that each registered
// one) is applied once; events refused for their secret are said at warn, and /readyz warns while the
// webhook is registered with another secret. Posts events only: the run's Unleash is not changed.

const unleash = inject('unleash');
const t = new TestContext();
const secret = { authorization: unleash.webhookSecret };
let a: FastifyInstance;
let b: FastifyInstance;

beforeAll(async () => {
  await t.setup();
  a = await t.app();
  b = await t.app();
});
afterAll(() => t.teardown());

const post = (app: FastifyInstance, payload: Record<string, unknown>, headers: Record<string, string> = secret) => app.inject({ method: 'POST', url: '/v1/flags/events', headers, payload });

describe('POST /v1/flags/events delivered twice or with another secret', () => {
  it('an event id delivered again (to the same or another replica) is answered duplicate: one audit row', async () => {
    // Id 1: every poll is past it, so the deny it sets ends at the next poll.
    const event = { type: 'feature-environment-disabled', featureName: 'mcp.memory.write', environment: unleash.environment, id: 1, createdBy: 'admin' };
    const answers = [];
    for (const app of [a, b, a]) answers.push((await post(app, event)).json().result);
    expect(answers).toEqual(['denied', 'duplicate', 'duplicate']);
    // Another event id is applied as usual.
    expect((await post(b, { ...event, id: 2 })).json().result).toBe('denied');
    const rows = async () => (await t.pool().query<{ id: string }>(`SELECT details ->> 'event_id' AS id FROM audit_events WHERE actor_id = 'unleash-webhook' ORDER BY seq`)).rows;
    await until(async () => (await rows()).length >= 2, 10_000, 'the audit rows');
    const alerts = async () => (await t.pool().query<{ n: string }>(`SELECT count(*) AS n FROM alerts WHERE kind = 'FLAG_DISABLED'`)).rows[0]!.n;
    await until(async () => Number(await alerts()) >= 1, 10_000, 'the FLAG_DISABLED alert');
    // The writes are flushed in batches: a third row or a second alert would be there by now (after an event of id 2 was written).
    await until(async () => (await rows()).some((r) => r.id === '2'), 10_000, 'the row of event 2');
    expect((await rows()).map((r) => r.id)).toEqual(['1', '2']);
  });

  it('events refused for their secret are logged at warn (not every one), and /readyz warns while the webhook is registered with another secret', async () => {
    const before = t.logs.lines.length;
    for (let i = 0; i < 3; i++) expect((await post(a, { type: 'feature-updated', featureName: 'mcp.enabled', id: 100 + i }, { authorization: 'another-replicas-secret' })).statusCode).toBe(401);
    const refused = t.logs.lines.slice(before).filter((l) => l.includes('refused') && l.includes('Unleash webhook event'));
    expect(refused).toHaveLength(1);
    expect(JSON.parse(refused[0]!)).toMatchObject({ level: 40, authorization: 'another secret' });

    const readyz = async () => (await a.inject({ method: 'GET', url: '/readyz' })).json() as { ready: boolean; warnings: string[] };
    expect((await readyz()).warnings).not.toContain(WEBHOOK_OTHER_SECRET_WARNING);
    // A replica (or shell) with another UNLEASH_WEBHOOK_SECRET registered the webhook at this URL.
    const url = webhookUrl(a.ctx.config);
    expect(await saveRegistration(t.config(), registrationRecord('start', url, 'another-replicas-secret', { ok: true, result: 'updated' }))).toBeNull();
    await until(async () => (await readyz()).warnings.includes(WEBHOOK_OTHER_SECRET_WARNING), 30_000, 'the /readyz warning');
    expect((await readyz()).ready).toBe(true);
  }, 40_000);
});
