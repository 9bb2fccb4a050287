import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';

// What reaches POST /v1/flags/events more than once: a second delivery of one Unleash event (two
// integrations posting to one URL, replicas that each registered one) is applied once. Posts events
// only: the run's Unleash is not changed.

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

describe('POST /v1/flags/events delivered twice', () => {
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

});
