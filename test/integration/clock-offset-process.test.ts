import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { api, startChild } from '../helpers/control-plane.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// The same replica as clock-offset.test.ts, as a whole process: a real `killswitch start` whose clock
// libfaketime (Debian's faketime package) sets ten minutes behind, for every read of the wall clock in the
// process (Node, pino, pg, the Unleash client), while its monotonic clock, Postgres and Redis are real.
// Skipped where libfaketime is not installed, unless REQUIRE_FAKETIME=1 (CI installs it: .ci/run).

const LIB_DIR = '/usr/lib';
const libfaketime = (() => {
  for (const arch of existsSync(LIB_DIR) ? readdirSync(LIB_DIR) : []) {
    const candidate = join(LIB_DIR, arch, 'faketime', 'libfaketime.so.1');
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
})();
const REQUIRED = process.env['REQUIRE_FAKETIME'] === '1';

const unleash = inject('unleash');
const t = new TestContext();
const children: ChildProcess[] = [];
let app: FastifyInstance;
let gw: GatewayDriver;

const postgresNow = async (): Promise<number> => (await app.ctx.pool.query<{ ms: number }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS ms')).rows[0]!.ms;

beforeAll(async () => {
  await t.setup();
  // Keys made with a good clock, as another replica would.
  app = await t.app({ policyFile: 'test/fixtures/decisions/policy.yaml' });
  gw = await new GatewayDriver(t, app).init();
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await t.teardown();
});

describe.runIf(libfaketime !== undefined || REQUIRED)('a real killswitch start ten minutes behind (libfaketime)', () => {
  it("warns, writes clock.off, and uses Postgres's time for what it issues and records: a key's expiry, an audit row, an alert", { timeout: 90_000 }, async () => {
    expect(libfaketime, 'libfaketime (apt-get install faketime)').toBeDefined();
    const cp = await startChild(t, unleash, { LD_PRELOAD: libfaketime!, FAKETIME: '-600', FAKETIME_DONT_FAKE_MONOTONIC: '1' }, children);
    // The process's own clock is behind: its log lines are stamped ten minutes ago.
    const started = cp.logs().find((l) => typeof l['offset_ms'] === 'number')!;
    expect(Math.abs((started['offset_ms'] as number) - 600_000)).toBeLessThan(2_000);
    expect((await postgresNow()) - (started['time'] as number)).toBeGreaterThan(590_000);

    const ready = (await api(cp.base, 'GET', '/readyz', {})).body as { warnings: string[] };
    expect(ready.warnings).toEqual([expect.stringMatching(/^clock off: this replica's clock is (599|600|601)\.\d s behind Postgres's/)]);

    const made = await api(cp.base, 'POST', '/v1/keys', bearer(gw.owner), { type: 'ro', role: 'code_agent', project_id: 'alpha', environment: 'development', expires_in: 3600 });
    expect(made.status).toBe(201);
    const key = made.body['key'] as unknown as { id: string; expires_at: string };
    expect(Math.abs(Date.parse(key.expires_at) - ((await postgresNow()) + 3_600_000))).toBeLessThan(5_000);

    const session = await api(cp.base, 'POST', '/v1/sessions', gw.headers(made.body.token!), {});
    expect(session.status).toBe(201);
    const decided = await api(cp.base, 'POST', '/v1/decisions', gw.headers(made.body.token!), { session_id: session.body.session_id, server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' } });
    expect(decided.body['decision']).toBe('allow');
    const rowAt = async () =>
      (await app.ctx.pool.query<{ ms: number | null }>('SELECT (extract(epoch FROM max(ts)) * 1000)::float8 AS ms FROM audit_events WHERE token_id = $1', [key.id])).rows[0]!.ms;
    await until(async () => (await rowAt()) !== null, 10_000, "the child's audit rows");
    expect(Math.abs((await rowAt())! - (await postgresNow()))).toBeLessThan(10_000);

    const alerts = (await api(cp.base, 'GET', '/v1/alerts?kind=CLOCK_SKEW', bearer(gw.owner))).body['alerts'] as unknown as Array<{ created_at: string }>;
    expect(alerts).toHaveLength(1);
    expect(Math.abs(Date.parse(alerts[0]!.created_at) - (await postgresNow()))).toBeLessThan(60_000);
    const rows = await app.ctx.pool.query<{ action: string }>("SELECT action FROM audit_events WHERE action LIKE 'clock.%'");
    expect(rows.rows.map((r) => r.action)).toEqual(['clock.off']);
  });
});
