import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// A halting trigger fires before the gate checks whose session a call names. A call that names another
// token's session must halt only its own token: it must not be told, nor recorded as if, that session
// was halted, and above all must not be shown that session's last calls (their arguments).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(() => t.teardown());

describe("a halting denial that names another token's session", () => {
  it("shows nothing of that session, halts only the caller's token, and records the id only as claimed", async () => {
    // The victim: another project's token, whose session read a confidential file.
    const victim = await gw.token('rw', { project: 'growth' });
    const vs = await gw.session(victim.raw);
    const read = await gw.decide(victim.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'plans/growth-q4-CONFIDENTIAL.md' }, session_id: vs.session_id });
    expect(read).toMatchObject({ decision: 'allow' });

    const prober = await gw.token('rw', { project: 'payments' });
    for (const attempt of [1, 2]) {
      // An unknown server halts (UNAUTHORIZED_SERVER); the second time the prober's token is halted already.
      const d = await gw.decide(prober.raw, { server: 'evilserver', tool: 'x', session_id: vs.session_id });
      expect(d, `attempt ${attempt}`).toMatchObject({ decision: 'deny', code: 'UNKNOWN_SERVER' });
      expect(d.session, `attempt ${attempt}`).toBeUndefined();
      expect(JSON.stringify(d), `attempt ${attempt}`).not.toContain('CONFIDENTIAL');
      expect(d.message).toContain('This token is');
      expect(d.message).not.toContain(`Session ${vs.session_id}`);
    }

    // The victim's session is untouched, and the prober's token is halted.
    const detail = await app.inject({ url: `/v1/sessions/${vs.session_id}`, headers: bearer(gw.owner) });
    expect(detail.json()).toMatchObject({ state: 'active' });
    const own = await gw.session(prober.raw);
    expect(own.state).toBe('halted');

    // The audit rows and the alert keep the named id only as a claim: the victim session's timeline stays its own.
    await app.ctx.audit.writer.flush();
    const rows = (await t.pool().query(`SELECT session_id, project_id, details FROM audit_events WHERE kind = 'INTENT' AND token_id = $1 ORDER BY seq`, [prober.id])).rows;
    expect(rows).toHaveLength(2);
    for (const r of rows) expect(r).toMatchObject({ session_id: null, project_id: 'payments', details: { claimed_session_id: vs.session_id } });
    const ofSession = (await t.pool().query(`SELECT token_id FROM audit_events WHERE session_id = $1 AND kind = 'INTENT'`, [vs.session_id])).rows;
    expect(ofSession.map((r) => r.token_id)).toEqual([victim.id]);
    await until(async () => (await t.pool().query(`SELECT 1 FROM alerts WHERE kind = 'SESSION_HALTED' AND token_id = $1`, [prober.id])).rowCount! > 0, 5_000, 'the halt alert');
    const alert = (await t.pool().query(`SELECT session_id, details FROM alerts WHERE kind = 'SESSION_HALTED' AND token_id = $1`, [prober.id])).rows[0];
    expect(alert).toMatchObject({ session_id: null, details: { claimed_session_id: vs.session_id } });
  });

  it("still shows the caller's own halted session with its last calls", async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/readme.md' }, session_id: s.session_id });
    const d = await gw.decide(tok.raw, { server: 'evilserver', tool: 'x', session_id: s.session_id });
    expect(d).toMatchObject({ code: 'UNKNOWN_SERVER', session: { id: s.session_id, state: 'halted', trigger: 'UNAUTHORIZED_SERVER' } });
    expect(JSON.stringify(d.session.last_calls)).toContain('docs/readme.md');
    await app.ctx.audit.writer.flush();
    const row = (await t.pool().query(`SELECT session_id, details FROM audit_events WHERE decision_id = $1`, [d.decision_id])).rows[0];
    expect(row.session_id).toBe(s.session_id);
    expect(row.details.claimed_session_id).toBeUndefined();
  });
});
