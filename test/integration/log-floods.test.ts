import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replicaWithoutAudit } from '../helpers/audit-down.js';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Lines an outage used to repeat once per request or batch (chaos review, 2026-12-06: 75 `session not
// opened: Redis unavailable` in 4 s from one client, 275 `audit rows could not be written ...` in 10 s):
// the first is logged at once, the rest counted, and the count is logged (here: at the shutdown).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const BURST = 20;
const t = new TestContext();
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  gw = await new GatewayDriver(t, await t.app({ policyFile: POLICY })).init();
});
afterAll(() => t.teardown());

const linesOf = (msg: string, from = 0) =>
  t.logs.lines
    .slice(from)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['msg'] === msg);

describe('a burst of failures logs a bounded number of lines, with the count', () => {
  it('session opens while Redis is unreachable: one line at once, then one with repeats', async () => {
    const cut = await t.app({ policyFile: POLICY, redisUrl: 'redis://127.0.0.1:1' });
    const tok = await gw.token('rw');
    for (let i = 0; i < BURST; i++) {
      const res = await cut.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(tok.raw), payload: {} });
      expect(res.statusCode).toBe(503);
      expect(res.json().error.message).toMatch(/Redis is unavailable/);
    }
    const during = linesOf('session not opened: Redis unavailable');
    expect(during).toHaveLength(1);
    expect(during[0]).toMatchObject({ level: 50, at_most_every_s: 30, token_id: tok.id });
    expect(during[0]!['repeats']).toBeUndefined();
    await t.close(cut);
    const after = linesOf('session not opened: Redis unavailable');
    expect(after).toHaveLength(2);
    expect(after[1]).toMatchObject({ level: 50, repeats: BURST - 1 });
  });

  it('agent tokens that cannot be checked (credential store down): their DEPENDENCY_UNAVAILABLE denials share the per-code budget of every denial (10 info lines a second)', async () => {
    const other = await t.app({ policyFile: POLICY });
    const g2 = await new GatewayDriver(t, other).init();
    const seen = await g2.token('rw');
    const s = await g2.session(seen.raw); // the gateway key is now cached
    const unseen = await Promise.all(Array.from({ length: 5 }, () => g2.token('rw')));
    const before = t.logs.lines.length;
    await other.ctx.pool.end(); // the credential store is gone; the audit writer has its own pool
    const calls = 50;
    const answers = await Promise.all(
      Array.from({ length: calls }, (_, i) =>
        other.inject({ method: 'POST', url: '/v1/decisions', headers: g2.headers(unseen[i % unseen.length]!.raw), payload: { server: 'filesystem', tool: 'read_text_file', arguments: {}, session_id: s.session_id } }),
      ),
    );
    expect(answers.map((a) => a.json().code)).toEqual(Array(calls).fill('DEPENDENCY_UNAVAILABLE'));
    const info = t.logs.lines
      .slice(before)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l['msg'] === 'decision denied' && l['code'] === 'DEPENDENCY_UNAVAILABLE' && l['level'] === 30);
    // 10 in the second the burst takes (20 should it straddle two); it was one per call.
    expect(info.length).toBeGreaterThanOrEqual(10);
    expect(info.length).toBeLessThanOrEqual(20);
    await t.close(other);
  });

  it('the kill reconciler retrying every 5 s while Redis is unreachable: one line at once, then one with repeats', async () => {
    // Only this app's lines: the other tests' apps reconcile too.
    const from = t.logs.lines.length;
    const cut = await t.app({ policyFile: POLICY, redisUrl: 'redis://127.0.0.1:1' });
    const msg = 'kills: reconciling Redis with Postgres failed; retrying';
    const ours = () => linesOf(msg, from);
    for (let i = 0; i < BURST; i++) await cut.ctx.kills.tick();
    expect(ours()).toHaveLength(1);
    expect(ours()[0]).toMatchObject({ level: 40, at_most_every_s: 30 });
    await t.close(cut);
    const after = ours();
    expect(after).toHaveLength(2);
    // BURST - 1 ticks of ours, and the timer's own if one came (every 5 s).
    expect(after[1]!['repeats']).toBeGreaterThanOrEqual(BURST - 1);
  });

  it('audit rows that reach neither Postgres nor the spool: one line per kind at once, then the count', async () => {
    const { app, restore } = await replicaWithoutAudit(t, 'session.opened', { policyFile: POLICY });
    const tok = await gw.token('rw');
    try {
      for (let i = 0; i < BURST; i++) {
        const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(tok.raw), payload: {} });
        expect(res.statusCode).toBe(503);
      }
      for (const msg of ['audit rows could not be written to Postgres nor to the spool', 'audit INSERT failed; writing to the local spool until Postgres is back', 'session not opened: its audit row could not be written']) {
        expect(linesOf(msg), msg).toHaveLength(1);
      }
    } finally {
      await restore();
    }
    const lost = linesOf('audit rows could not be written to Postgres nor to the spool');
    expect(lost).toHaveLength(2);
    expect(lost[1]).toMatchObject({ level: 50, repeats: BURST - 1, lost_total: BURST });
    const notOpened = linesOf('session not opened: its audit row could not be written');
    expect(notOpened).toHaveLength(2);
    expect(notOpened[1]).toMatchObject({ repeats: BURST - 1 });
  });
});
