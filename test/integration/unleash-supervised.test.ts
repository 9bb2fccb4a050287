import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { UnleashAdmin } from '../../src/flags/admin-client.js';
import { startEmbeddedUnleash } from '../../src/flags/embedded.js';
import { createFlagStep } from '../../src/flags/step.js';
import { EMBEDDED_DOWN_SENTENCE, EMBEDDED_UNLEASH_DOWN_WARNING, SupervisedUnleash, superviseWith } from '../../src/flags/supervisor.js';
import { bearer, LogCapture, TestContext } from '../helpers/context.js';
import { dbUrl } from '../helpers/env.js';
import { filesystemWrite } from '../helpers/flag-calls.js';
import { alive, dropDatabase, startStandaloneUnleash, TEST_UNLEASH_ADMIN_TOKEN, TEST_UNLEASH_API_TOKEN, until } from '../helpers/unleash.js';

// The embedded Unleash of `killswitch start` (no UNLEASH_URL), killed while the control plane runs: its
// own child here (not the run's shared Unleash), supervised as server.ts supervises it.

const ctx = new TestContext();
let database: string | undefined;
let embedded: SupervisedUnleash | undefined;

afterAll(async () => {
  await embedded?.stop();
  await ctx.teardown();
  if (database) await dropDatabase(database);
});

describe('a supervised embedded Unleash', () => {
  it('killed, is restarted with a doubling delay; meanwhile /readyz warns (still ready) and FLAGS_STALE says so; flags change again once it is back; a shutdown restarts nothing', async () => {
    await ctx.setup();
    const started = await startStandaloneUnleash('supervised');
    database = started.database;
    const options = {
      port: started.port,
      host: '127.0.0.1',
      databaseUrl: dbUrl(started.database),
      adminPassword: 'unleash4all',
      adminToken: TEST_UNLEASH_ADMIN_TOKEN,
      backendTokens: [TEST_UNLEASH_API_TOKEN],
      logLevel: 'error' as const,
    };
    const supervisorLog = new LogCapture();
    // The first delay outlasts UNLEASH_STALE_AFTER_S below, so the staleness alarm fires while it is down.
    embedded = new SupervisedUnleash(started.unleash, options, pino({ level: 'info' }, supervisorLog), { firstDelayMs: 8_000, maxDelayMs: 30_000, healthyAfterMs: 600_000 });
    const app = await ctx.app({ unleashUrl: embedded.apiUrl, unleashRefreshMs: 200, unleashStaleAfterS: 2 });
    superviseWith(app, embedded);
    const readyz = async () => (await app.inject({ method: 'GET', url: '/readyz' })).json<{ ready: boolean; checks: Record<string, string>; warnings: string[] }>();
    // On a loaded machine a slow fetch can make the flags stale (and alert) before the kill (UNLEASH_STALE_AFTER_S
    // is 2 here): start fresh, and look only at an alert raised after the kill. Ready with no warning once fresh.
    await until(async () => !app.ctx.flags.isStale() && (await readyz()).warnings.length === 0, 20_000, 'fresh flags before the kill');
    expect(await readyz()).toMatchObject({ ready: true });
    const killedAt = Date.now();
    const firstPid = embedded.pid!;
    process.kill(firstPid, 'SIGKILL');
    await until(() => embedded!.state().up === false, 10_000, 'the supervisor to see the exit');
    expect(supervisorLog.text).toMatch(/embedded Unleash exited \(SIGKILL\): restarting it in 8 s/);
    // Still ready: every replica decides with the flags it holds; the warning says what is wrong.
    expect(await readyz()).toMatchObject({ ready: true, checks: { flags: 'ok' }, warnings: [EMBEDDED_UNLEASH_DOWN_WARNING] });
    const step = createFlagStep(app.ctx.flags);
    expect(await step.run(filesystemWrite())).toBeUndefined();

    await until(() => app.ctx.flags.isStale(), 10_000, 'stale');
    const viewer = await ctx.operatorKey(app, 'viewer');
    let stale: { message: string; details: Record<string, unknown> } | undefined;
    await until(
      async () => {
        const res = await app.inject({ method: 'GET', url: '/v1/alerts?kind=FLAGS_STALE', headers: bearer(viewer) });
        stale = (res.json().alerts as Array<{ message: string; details: Record<string, unknown>; created_at: string }> | undefined)?.find((a) => Date.parse(a.created_at) >= killedAt);
        return stale !== undefined;
      },
      5_000,
      'FLAGS_STALE alert',
    );
    expect(stale!.message).toContain(EMBEDDED_DOWN_SENTENCE);
    expect(stale!.details).toMatchObject({ embedded_unleash: 'restarting' });

    // Back on the same port and database, without the control plane restarting.
    await until(() => embedded!.state().up, 60_000, 'the restart');
    expect(embedded.pid).toBeDefined();
    expect(embedded.pid).not.toBe(firstPid);
    expect(embedded.state()).toMatchObject({ up: true, restarts: 1 });
    expect(supervisorLog.text).toMatch(/embedded Unleash restarted after \d+ s down \(restart 1 /);
    // Up again: the down warning is gone; the flags read stale (a warning of its own) until the next fetch.
    expect((await readyz()).warnings.filter((w) => !w.startsWith('flags stale: '))).toEqual([]);
    await until(() => !app.ctx.flags.isStale(), 20_000, 'fresh again');
    expect((await readyz()).warnings).toEqual([]);
    const admin = new UnleashAdmin(embedded.apiUrl, TEST_UNLEASH_ADMIN_TOKEN);
    await admin.setEnabled('mcp.filesystem.write', app.ctx.config.unleashEnvironment, false);
    await until(async () => (await step.run(filesystemWrite()))?.code === 'KILL_SWITCH', 10_000, 'a flag turned off after the restart');

    // A second exit soon after: the delay has doubled.
    const secondPid = embedded.pid!;
    process.kill(secondPid, 'SIGKILL');
    await until(() => embedded!.state().up === false, 10_000, 'the second exit');
    expect(supervisorLog.text).toMatch(/embedded Unleash exited \(SIGKILL\): restarting it in 16 s/);
    expect(embedded.state().nextAttemptAt).not.toBeNull();

    // The control plane shuts down while a restart is pending: it is called off.
    await ctx.close(app);
    expect(embedded.state()).toMatchObject({ up: false, nextAttemptAt: null, restarts: 1 });
    expect(embedded.pid).toBeUndefined();

    // An exit during a shutdown (Ctrl-C reaches the child too) is expected: not logged, not restarted.
    const other = new SupervisedUnleash(await startEmbeddedUnleash(options), options, pino({ level: 'info' }, supervisorLog), { firstDelayMs: 1, maxDelayMs: 1, healthyAfterMs: 1 });
    const otherPid = other.pid!;
    other.shuttingDown();
    process.kill(otherPid, 'SIGINT');
    await until(() => !alive(otherPid), 10_000, 'the child to exit');
    await until(() => other.pid === undefined, 5_000, 'the supervisor to see the exit');
    expect(other.state()).toMatchObject({ up: true, nextAttemptAt: null, restarts: 0 });
    expect(supervisorLog.lines.filter((l) => l.includes(`"unleash_pid":${otherPid}`))).toEqual([]);
  }, 180_000);
});

