import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { pino } from 'pino';
import { afterAll, describe, expect, inject, it, vi } from 'vitest';
import { UnleashAdmin } from '../../src/flags/admin-client.js';
import { type EmbeddedUnleash, startEmbeddedUnleash } from '../../src/flags/embedded.js';
import { prepareUnleash } from '../../src/flags/setup.js';
import { createFlagStep } from '../../src/flags/step.js';
import { bearer, LogCapture, TestContext } from '../helpers/context.js';
import { childEnv, killChildren, withTimeout } from '../helpers/control-plane.js';
import { dbUrl } from '../helpers/env.js';
import { filesystemWrite } from '../helpers/flag-calls.js';
import { captureStderr } from '../helpers/stderr.js';
import { dropDatabase, freePort, TEST_UNLEASH_ADMIN_TOKEN, TEST_UNLEASH_API_TOKEN, unleashDatabaseName, until } from '../helpers/unleash.js';

// The `npm start` path with its own embedded unleash-server (not the run's shared one): database created
// when missing, flags synced, first login; then Unleash goes away and comes back.

const ctx = new TestContext();
const database = unleashDatabaseName('embedded');
const running: Array<Pick<EmbeddedUnleash, 'stop'>> = [];
const children: ChildProcess[] = [];
const cliDatabase = unleashDatabaseName('embedded_cli');

afterAll(async () => {
  killChildren(children);
  await dropDatabase(cliDatabase);
  for (const u of running) await u.stop();
  await ctx.teardown();
  await dropDatabase(database);
});

describe('embedded Unleash', () => {
  it('starts on a new database, syncs the policy flags, lets the admin log in; while it is down the last state stays (stale), after a restart it recovers', async () => {
    await ctx.setup();
    await dropDatabase(database);
    // What the embedded Unleash writes (its stderr is piped to ours) is what an operator reads on `npm start`.
    const written = captureStderr();
    const port = await freePort();
    const startConfig = ctx.config({
      unleashUrl: '',
      unleashPort: port,
      unleashDatabaseUrl: dbUrl(database),
      unleashAdminToken: TEST_UNLEASH_ADMIN_TOKEN,
      unleashApiToken: TEST_UNLEASH_API_TOKEN,
      unleashRefreshMs: 200,
      unleashStaleAfterS: 2,
      // The embedded Unleash logs at this level too: nothing listens at the webhook URL here.
      logLevel: 'error',
    });
    const startLog = new LogCapture();
    const { config, embedded } = await prepareUnleash(startConfig, pino({ level: 'info' }, startLog));
    expect(embedded).toBeDefined();
    running.push(embedded!);
    // The child's pid is a field of its own: pino's `pid` (written once) stays this process's.
    const up = startLog.lines.filter((l) => l.includes('"msg":"embedded Unleash is up"'));
    expect(up).toHaveLength(1);
    expect(up[0]!.match(/"pid":/g)).toHaveLength(1);
    expect(JSON.parse(up[0]!)).toMatchObject({ pid: process.pid, unleash_pid: embedded!.pid, url: embedded!.uiUrl });
    expect(config.unleashUrl).toBe(`http://127.0.0.1:${port}/api`);

    // First login to the UI, as documented: admin / UNLEASH_ADMIN_PASSWORD.
    const login = await fetch(`${embedded!.uiUrl}/auth/simple/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'admin', password: config.unleashAdminPassword }),
    });
    expect(login.status).toBe(200);
    const admin = new UnleashAdmin(config.unleashUrl, config.unleashAdminToken);
    for (const s of ['filesystem', 'postgres', 'shell']) expect(await admin.getFeature(`mcp.${s}.write`)).toBeDefined();

    const app = await ctx.app({ ...config, logLevel: 'info' });
    const step = createFlagStep(app.ctx.flags);
    expect(app.ctx.flags.isReady()).toBe(true);
    expect(await step.run(filesystemWrite())).toBeUndefined();

    // Unleash goes away: the last fetched state stays in force, with the staleness alarm.
    await embedded!.stop();
    await until(() => app.ctx.flags.isStale(), 15_000, 'stale');
    expect(await step.run(filesystemWrite())).toBeUndefined();
    const viewer = await ctx.operatorKey(app, 'viewer');
    const view = (await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json();
    expect(view).toMatchObject({ ready: true, stale: true, source: 'poll' });
    expect(ctx.logs.text).toMatch(/flags: stale/);
    await until(async () => {
      const res = await app.inject({ method: 'GET', url: '/v1/alerts?kind=FLAGS_STALE', headers: bearer(viewer) });
      return res.statusCode === 200 && res.json().alerts.length > 0;
    }, 5_000, 'FLAGS_STALE alert');
    // /readyz (and so `killswitch status`) says it: still ready, but a flag turned off in Unleash does not reach it.
    const stale = (await app.inject({ method: 'GET', url: '/readyz' })).json();
    expect(stale.ready).toBe(true);
    expect(stale.warnings).toEqual([expect.stringMatching(/^flags stale: no successful Unleash fetch for \d+ s \(last at \S+Z\); .*a flag turned off in Unleash does not reach this replica: stop calls with killswitch kill/)]);

    // Back on the same port and database: fetches succeed again and toggles propagate.
    const again = await startEmbeddedUnleash({
      port,
      host: '127.0.0.1',
      databaseUrl: dbUrl(database),
      adminPassword: config.unleashAdminPassword,
      adminToken: config.unleashAdminToken,
      backendTokens: [config.unleashApiToken],
      logLevel: 'error',
    });
    running.push(again);
    await until(() => !app.ctx.flags.isStale(), 20_000, 'fresh again');
    expect(ctx.logs.text).toMatch(/flags are fresh/);
    expect((await app.inject({ method: 'GET', url: '/readyz' })).json().warnings).toEqual([]);
    await until(async () => (await app.inject({ method: 'GET', url: '/v1/alerts?kind=FLAGS_RECOVERED', headers: bearer(viewer) })).json().alerts?.length > 0, 5_000, 'FLAGS_RECOVERED alert');
    await admin.setEnabled('mcp.filesystem.write', config.unleashEnvironment, false);
    await until(async () => (await step.run(filesystemWrite()))?.code === 'KILL_SWITCH', 10_000, 'deny after recovery');

    // unleash-server 7.5.1 (pinned) runs queries on a busy pg client, and pg 8 prints a DeprecationWarning
    // for it at boot: not something an operator can act on, so the launcher turns those warnings off.
    expect(written.join('')).not.toMatch(/DeprecationWarning/);
    vi.restoreAllMocks();
  }, 120_000);
});

describe('killswitch unleash', () => {
  it('a signal the moment its Unleash first answers /health stops it cleanly (exit 0, Unleash gone): the handlers are in place before Unleash starts', { timeout: 120_000 }, async () => {
    // The first /health is where a script that waited for Unleash (or an impatient Ctrl-C) may send its
    // signal. The handlers once went in only after the flags sync: node died by the signal (exit code null).
    await dropDatabase(cliDatabase);
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const port = await freePort();
      const env = childEnv(ctx, inject('unleash'), await freePort(), {
        UNLEASH_URL: '',
        UNLEASH_PORT: String(port),
        UNLEASH_DATABASE_URL: dbUrl(cliDatabase),
        UNLEASH_ADMIN_TOKEN: TEST_UNLEASH_ADMIN_TOKEN,
        UNLEASH_API_TOKEN: TEST_UNLEASH_API_TOKEN,
      });
      const child = spawn('node', ['bin/killswitch.js', 'unleash'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      let out = '';
      for (const stream of [child.stdout!, child.stderr!]) {
        stream.on('data', (c: Buffer) => {
          out += c.toString('utf8');
        });
      }
      const closed = once(child, 'close');
      const deadline = Date.now() + 90_000;
      // As often as a request can be made: the signal follows the first 200 at once.
      while (!(await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.status === 200, () => false))) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`no /health (exit ${child.exitCode}):\n${out.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 2));
      }
      child.kill(signal);
      if (signal === 'SIGINT') {
        // A Ctrl-C under `npm run unleash:dev`: the terminal's SIGINT, then npm's copy a few ms later.
        await new Promise((r) => setTimeout(r, 15));
        child.kill(signal);
      }
      const [code, killedBy] = await withTimeout(closed, 30_000, `exit after ${signal}`);
      expect({ code, killedBy }, out.slice(-3000)).toEqual({ code: 0, killedBy: null });
      // Its Unleash stopped with it.
      await expect(fetch(`http://127.0.0.1:${port}/health`)).rejects.toThrow();
    }
  });
});
