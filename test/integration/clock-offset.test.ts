import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLOCK_TOLERANCE_MS } from '../../src/clock/offset.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// A replica whose time sync broke (docs/operations.md, "Clocks"): this process's clock runs ten minutes
// behind, as a VM restored from a snapshot would: Date.now() and `new Date()` (a Date subclass in place of
// the global one while this file runs; Vitest's fake Date drifts further behind whenever the event loop is
// busy). Timers, performance.now(), Postgres and Redis are real; Postgres's clock is the one every other
// time is judged by.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const BEHIND_MS = 600_000;
let behindMs = BEHIND_MS;
const RealDate = Date;
class SkewedDate extends RealDate {
  constructor(...args: unknown[]) {
    if (args.length === 0) super(RealDate.now() - behindMs);
    else super(...(args as [string]));
  }
  static override now(): number {
    return RealDate.now() - behindMs;
  }
}
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

const postgresNow = async (): Promise<number> => (await app.ctx.pool.query<{ ms: number }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS ms')).rows[0]!.ms;
const clockRows = async (): Promise<Array<{ action: string; actor: string; offset_ms: number }>> => {
  await app.ctx.audit.writer.flush();
  const { rows } = await app.ctx.pool.query<{ action: string; actor: string; offset_ms: number }>(
    "SELECT action, actor_id AS actor, (details->>'offset_ms')::int AS offset_ms FROM audit_events WHERE action LIKE 'clock.%' ORDER BY ts, seq",
  );
  return rows;
};
const readyz = async (): Promise<string[]> => (await app.inject({ url: '/readyz' })).json().warnings;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  await t.setup();
  globalThis.Date = SkewedDate as DateConstructor;
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
});

afterAll(async () => {
  globalThis.Date = RealDate;
  await t.teardown();
});

describe('a replica whose clock is ten minutes behind Postgres', () => {
  it('says so: a /readyz warning, the offset metric, a CLOCK_SKEW alert and a warn line naming both times', async () => {
    expect((await readyz()).filter((w) => w.startsWith('clock off:'))).toEqual([expect.stringMatching(/^clock off: this replica's clock is (599|600)\.\d s behind Postgres's \(measured at \S+Z\): token, key and grant expiry are judged, and audit rows stamped, with Postgres's time/)]);
    const offset = Number(/^killswitch_clock_offset_seconds (\S+)$/m.exec(await app.ctx.metrics.render())?.[1]);
    expect(Math.abs(offset - BEHIND_MS / 1000)).toBeLessThan(1);
    const alerts = (await app.inject({ url: '/v1/alerts?kind=CLOCK_SKEW', headers: bearer(gw.owner) })).json().alerts as Array<{ severity: string; message: string; numbers: { offset_ms: number }; created_at: string }>;
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({ severity: 'warning', message: expect.stringMatching(/is (599|600)\.\d s behind Postgres's/) });
    expect(Math.abs(alerts[0]!.numbers.offset_ms - BEHIND_MS)).toBeLessThan(1_000);
    // Stamped with Postgres's time, as every alert of this replica is.
    expect(Math.abs(Date.parse(alerts[0]!.created_at) - (await postgresNow()))).toBeLessThan(60_000);
    expect(t.logs.lines.filter((l) => l.includes("this replica's clock is") && l.includes('"offset_ms":'))).toHaveLength(1);
    // And on the audit trail: which replica's rows carry Postgres's time, from when.
    expect(await clockRows()).toEqual([{ action: 'clock.off', actor: 'clock', offset_ms: expect.any(Number) }]);
    expect(Math.abs((await clockRows())[0]!.offset_ms - BEHIND_MS)).toBeLessThan(1_000);
  });

  it('refuses an agent token once Postgres says it has expired, not ten minutes later', async () => {
    const tok = await gw.token('ro');
    // As a replica with a good clock (or Postgres) set it: expiring in 1.5 s of real time.
    await app.ctx.pool.query("UPDATE agent_tokens SET expires_at = now() + interval '1.5 seconds' WHERE id = $1", [tok.id]);
    await sleep(2_000);
    const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(tok.raw), payload: {} });
    expect(res.statusCode, res.body).toBe(401);
    expect(res.body).toMatch(/expired/i);
  });

  it("stops honouring a production grant once Postgres says it has expired (the in-memory set between reloads)", async () => {
    const tok = await gw.token('ro', { environment: 'production' });
    const made = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, reason: 'INC-88 prod read', expires_in: 600 } });
    expect(made.statusCode, made.body).toBe(201);
    await app.ctx.pool.query("UPDATE grants SET expires_at = now() + interval '1.5 seconds' WHERE id = $1", [made.json().id]);
    await app.ctx.grants.reload();
    expect(app.ctx.grants.has('production', tok.id, undefined)).toBe(true);
    await sleep(2_000);
    expect(app.ctx.grants.has('production', tok.id, undefined)).toBe(false);
  });

  it("sets expiry and stamps audit rows with Postgres's time: a key for an hour lasts an hour, an audit row is not ten minutes old", async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(gw.owner), payload: { type: 'ro', role: 'code_agent', project_id: 'alpha', environment: 'development', expires_in: 3600 } });
    expect(res.statusCode, res.body).toBe(201);
    const { token: raw, key } = res.json() as { token: string; key: { id: string; expires_at: string } };
    const expiresAt = Date.parse(key.expires_at);
    expect(Math.abs(expiresAt - ((await postgresNow()) + 3_600_000))).toBeLessThan(5_000);
    const grant = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: key.id, reason: 'INC-89', expires_in: 600, kind: 'large_results' } });
    expect(grant.statusCode, grant.body).toBe(201);
    expect(Math.abs(Date.parse(grant.json().expires_at) - ((await postgresNow()) + 600_000))).toBeLessThan(5_000);
    const s = await gw.session(raw);
    const decided = await gw.decide(raw, { session_id: s.session_id, server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' } });
    await app.ctx.audit.writer.flush();
    const { rows } = await app.ctx.pool.query<{ ms: number }>('SELECT (extract(epoch FROM max(ts)) * 1000)::float8 AS ms FROM audit_events WHERE token_id = $1', [key.id]);
    expect(Math.abs(rows[0]!.ms - (await postgresNow()))).toBeLessThan(5_000);
    // The incident timeline's default window (the last hour) ends now by Postgres's clock: the call is in it.
    const timeline = await app.inject({ url: `/v1/incidents/timeline?target=token:${key.id}`, headers: bearer(gw.owner) });
    expect(timeline.statusCode, timeline.body).toBe(200);
    expect((timeline.json().events as Array<{ decision_id: string | null }>).some((e) => e.decision_id === decided.decision_id)).toBe(true);
  });

  it('put right while running (the wall clock steps): measured again at once, its own time used again, the warning gone, an info line', async () => {
    behindMs = 0;
    // The step is seen by the next read of the clock (a decision's audit row), not only by the 30 s timer.
    const tok = await gw.token('ro');
    await gw.session(tok.raw);
    await until(() => !app.ctx.clock.isOff, 5_000, "the replica to see its clock is right again");
    expect((await readyz()).filter((w) => w.startsWith('clock off:'))).toEqual([]);
    expect(Math.abs(app.ctx.clock.now() - Date.now())).toBeLessThanOrEqual(CLOCK_TOLERANCE_MS);
    expect(t.logs.lines.filter((l) => l.includes("this replica's clock agrees with Postgres's again"))).toHaveLength(1);
    await until(async () => (await clockRows()).length === 2, 5_000, 'the clock.back audit row');
    expect((await clockRows()).map((r) => r.action)).toEqual(['clock.off', 'clock.back']);
  });
});
