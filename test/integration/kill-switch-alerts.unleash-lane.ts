import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { restoreFlag, testAdmin, until } from '../helpers/unleash.js';

// The KILL_SWITCH alerts of calls an Unleash flag denies: one open alert per flag and project, counted up
// in place (a soak test had ~170 a minute for 200 tokens), acknowledged when the flag is turned back on.
// In the Unleash lane: it turns a flag off.

const unleash = inject('unleash');
const admin = testAdmin(unleash);
const env = unleash.environment;
const flag = 'mcp.filesystem.write';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: 'test/fixtures/decisions/policy.yaml' });
  gw = await new GatewayDriver(t, app).init();
});
afterEach(() => restoreFlag(unleash, flag));
afterAll(() => t.teardown());

const write = { server: 'filesystem', tool: 'write_file', arguments: { path: 'k.md', content: 'x' } };
const event = (type: string, id: number) =>
  app.inject({ method: 'POST', url: '/v1/flags/events', headers: { authorization: unleash.webhookSecret }, payload: { type, featureName: flag, environment: env, id } });
const ofFlag = () => t.pool().query(`SELECT * FROM alerts WHERE kind = 'KILL_SWITCH' AND details->>'flag' = $1 ORDER BY id`, [flag]).then((r) => r.rows);

describe('KILL_SWITCH alerts of a flag', () => {
  it('many tokens denied by a flag: one open alert counted up; the flag back on acknowledges it; the next off period raises a new one', async () => {
    const id = 30_000_000 + (app.ctx.flags.status().revision ?? 0);
    const tokens = await Promise.all([1, 2, 3, 4].map(() => gw.token('rw')));
    const deny = async (tok: { raw: string }) => {
      const s = await gw.session(tok.raw);
      expect((await gw.decide(tok.raw, { ...write, session_id: s.session_id })).code).toBe('KILL_SWITCH');
    };

    await admin.setEnabled(flag, env, false);
    expect((await event('feature-environment-disabled', id)).json()).toEqual({ result: 'denied' });
    for (const tok of tokens) await deny(tok);
    await until(async () => (await ofFlag())[0]?.numbers.denied === 4, 5_000, 'four denials counted');
    const [first, ...more] = await ofFlag();
    expect(more).toEqual([]);
    expect(first).toMatchObject({ project_id: 'alpha', acknowledged_at: null, numbers: { denied: 4, tokens: 4 }, details: { flag } });

    await admin.setEnabled(flag, env, true);
    expect((await event('feature-environment-enabled', id + 1)).json()).toEqual({ result: 'cleared' });
    await until(async () => (await ofFlag())[0]?.acknowledged_by === 'system:flag-webhook', 5_000, 'the alert acknowledged');
    // The answering FLAG_ENABLED alert is stored just after it acknowledges what it answers (AlertService.raise).
    const enabled = async () => (await t.pool().query(`SELECT details FROM alerts WHERE kind = 'FLAG_ENABLED' AND details->>'flag' = $1`, [flag])).rows;
    await until(async () => (await enabled()).length > 0, 5_000, 'the FLAG_ENABLED alert');
    expect((await enabled())[0]!.details.resolves).toContain(first.id);

    await admin.setEnabled(flag, env, false);
    expect((await event('feature-environment-disabled', id + 2)).json()).toEqual({ result: 'denied' });
    await deny(await gw.token('rw'));
    await until(async () => (await ofFlag()).length === 2, 5_000, 'a new alert');
    expect((await ofFlag())[1]).toMatchObject({ acknowledged_at: null, numbers: { denied: 1, tokens: 1 } });
  });
});
