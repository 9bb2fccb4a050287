import { appendFileSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { killswitch, listenUrl } from '../helpers/cli.js';
import { bearer, TestContext } from '../helpers/context.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';
import { PgProxy } from './audit-fixtures.js';

// `killswitch status` as the on-call operator runs it: a child process reading a listening control plane
// through its admin API, with the operator key from the environment.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let url = '';
let operatorKey = '';

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  await app.ctx.sessions.ensureState();
  url = await listenUrl(app);
  gw = await new GatewayDriver(t, app).init();
  operatorKey = await t.operatorKey(app, 'operator');
});
afterAll(() => t.teardown());

const cli = (args: string[], env: Record<string, string> = {}) =>
  killswitch(args, { env: { KILLSWITCH_URL: url, KILLSWITCH_OPERATOR_KEY: operatorKey, LOG_LEVEL: 'warn', ...env } });

describe('killswitch status', () => {
  it('shows readiness, the kill in force, the halted session and the open alerts (human and --json); a viewer key is enough', async () => {
    const nothing = await cli(['status']);
    expect(nothing.code, nothing.stderr).toBe(0);
    expect(nothing.stdout).toContain(`Control plane ${url} (KILLSWITCH_URL)`);
    expect(nothing.stdout).toContain('Key: test operator (operator, every project)\n');
    expect(nothing.stdout).toMatch(/Readiness: ready \(.*postgres ok.*\)/);
    expect(nothing.stdout).toContain('Kills in force: none');
    expect(nothing.stdout).toContain('Halted sessions: none');
    expect(nothing.stdout).toMatch(/Policy: one policy \([0-9a-f]{8}\) on 1 live replica/);

    // A kill (by the CLI), and a read-only session halted by a write it tried.
    const killed = await cli(['kill', '--server', 'memory', '--reason', 'INC-21 memory leak', '--expires-in', '2h', '--json']);
    expect(killed.code, killed.stderr).toBe(0);
    const kill = JSON.parse(killed.stdout).kill as { id: string };
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw, { read_only: true })).session_id;
    const denied = await gw.decide(tok.raw, { server: 'filesystem', tool: 'write_file', arguments: { path: 'a.md', content: 'x' }, session_id: s });
    expect(denied.decision).toBe('deny');
    const open = async () => (await app.inject({ method: 'GET', url: '/v1/alerts?acknowledged=false&limit=500', headers: bearer(operatorKey) })).json().alerts as Array<{ kind: string; severity: string }>;
    // Alerts are written after the answers: wait for both before reading the status.
    await until(async () => (await open()).some((a) => a.kind === 'SESSION_HALTED') && (await open()).some((a) => a.kind === 'KILL_CREATED'), 10_000, 'the alerts');
    const alerts = await open();

    const human = await cli(["status"]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stderr).toBe('');
    expect(human.stdout).toContain('Kills in force: 1');
    expect(human.stdout).toContain(kill.id);
    expect(human.stdout).toContain('INC-21 memory leak');
    expect(human.stdout).toMatch(/until \d{4}-/);
    const op = await app.ctx.auth.authenticate(operatorKey);
    expect(human.stdout).toContain(`by operator:${op.id} at `);
    expect(human.stdout).toContain('Halted sessions: 1');
    expect(human.stdout).toMatch(new RegExp(`${s}  WRITE_IN_READ_SESSION  token ${tok.id}  project alpha  halted \\d{4}-`));
    const count = (sev: string) => alerts.filter((a) => a.severity === sev).length;
    expect(human.stdout).toContain(`Open alerts: ${alerts.length} (${count('critical')} critical, ${count('warning')} warning, ${count('info')} info)`);
    expect(human.stdout).toContain('SESSION_HALTED');
    expect(human.stdout).toContain('KILL_CREATED');
    expect(human.stdout.trimEnd().split('\n').length).toBeLessThanOrEqual(40);

    const json = await cli(['status', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const report = JSON.parse(json.stdout);
    expect(Object.keys(report)).toEqual(['control_plane', 'key', 'checked_at', 'exit_code', 'readiness', 'kills', 'halted_sessions', 'open_alerts', 'policy_replicas', 'errors']);
    expect(report).toMatchObject({ control_plane: url, exit_code: 0, errors: [], readiness: { ready: true, warnings: [] } });
    expect(report.readiness.checks).toMatchObject({ postgres: 'ok', redis: 'ok' });
    expect(report.kills.count).toBe(1);
    expect(report.kills.items[0]).toMatchObject({ id: kill.id, target: 'server', server: 'memory', reason: 'INC-21 memory leak', created_by: `operator:${op.id}` });
    expect(report.kills.items[0].expires_at).toEqual(expect.any(String));
    expect(report.halted_sessions).toMatchObject({ count: 1, complete: true, items: [{ id: s, token_id: tok.id, trigger: 'WRITE_IN_READ_SESSION', state: 'halted' }] });
    expect(report.open_alerts).toMatchObject({ count: alerts.length, complete: true, by_severity: { critical: count('critical'), warning: count('warning'), info: count('info') } });
    expect(report.open_alerts.items.map((a: { kind: string }) => a.kind)).toEqual(expect.arrayContaining(['SESSION_HALTED', 'KILL_CREATED']));
    expect(report.policy_replicas).toMatchObject({ distinct: 1, diverged: false });

    // Read-only: a viewer key reads all of it.
    const viewer = await t.operatorKey(app, 'viewer');
    const asViewer = await cli(['status', '--json'], { KILLSWITCH_OPERATOR_KEY: viewer });
    expect(asViewer.code, asViewer.stderr).toBe(0);
    expect(JSON.parse(asViewer.stdout)).toMatchObject({ exit_code: 0, errors: [], kills: { count: 1 }, halted_sessions: { count: 1 } });

    // A key limited to projects says so: its "none" is none of its projects'.
    const team = await app.ctx.credentials.createOperatorKey('test', { name: 'teal on call', role: 'viewer', projects: ['teal'], expires_in: 3_600 });
    const asTeam = await cli(['status'], { KILLSWITCH_OPERATOR_KEY: team.key });
    expect(asTeam.code, asTeam.stderr).toBe(0);
    expect(asTeam.stdout).toMatch(/\nKey: teal on call \(viewer, projects teal: kills, halted sessions and alerts of other projects are not shown; expires \d{4}-[\d-]+T[\d:.]+Z\)\n/);
    expect(asTeam.stdout).toContain('Halted sessions: none');

    // A reason holding ESC and a line break (kills made before the API refused them) is shown escaped.
    await t.pool().query(`UPDATE kills SET reason = $1 WHERE id = $2`, ['INC-21 \u001b[2Jforged\nline', kill.id]);
    const escaped = await cli(['status']);
    expect(escaped.stdout).toContain('INC-21 \\u001b[2Jforged\\u000aline');
    expect(escaped.stdout).not.toContain('\u001b');

    expect((await app.inject({ method: 'DELETE', url: `/v1/kills/${kill.id}`, headers: bearer(operatorKey), payload: { reason: 'test over' } })).statusCode).toBe(200);
    expect((await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/resume`, headers: bearer(operatorKey), payload: { reason: 'test over' } })).statusCode).toBe(200);
  }, 180_000);

  it('an unreachable control plane is exit 1 with what to check; no key is exit 2', async () => {
    const down = await cli(['status'], { KILLSWITCH_URL: 'http://127.0.0.1:9' });
    expect(down.code).toBe(1);
    expect(down.stdout).toBe('');
    expect(down.stderr).toContain('cannot reach the control plane at http://127.0.0.1:9 (KILLSWITCH_URL)');
    expect(down.stderr).toContain('Nothing accepts connections at 127.0.0.1:9: check that the control plane runs there');
    const downJson = await cli(['status', '--json'], { KILLSWITCH_URL: 'http://127.0.0.1:9' });
    expect(downJson.code).toBe(1);
    expect(downJson.stdout).toBe('');
    const noKey = await cli(['status'], { KILLSWITCH_OPERATOR_KEY: '' });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain('KILLSWITCH_OPERATOR_KEY');
    const extra = await cli(['status', '--bogus']);
    expect(extra.code).toBe(2);
  }, 120_000);

  it('a read that fails is exit 1 naming it; the other sections are still shown, and the failed one is never "none"', async () => {
    // The control plane behind a proxy whose GET /v1/alerts fails as a control plane's 503 does.
    const target = new URL(url);
    const proxy: Server = createServer((req, res) => {
      if (req.url?.startsWith('/v1/alerts')) {
        res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'SERVICE_UNAVAILABLE', message: 'the database is unavailable' } }));
        return;
      }
      const up = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      req.pipe(up);
    });
    await new Promise<void>((done) => proxy.listen(0, '127.0.0.1', done));
    try {
      const proxied = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
      const res = await cli(['status'], { KILLSWITCH_URL: proxied });
      expect(res.code, res.stderr).toBe(1);
      expect(res.stdout).toContain('Open alerts: COULD NOT BE READ');
      expect(res.stdout).not.toContain('Open alerts: none');
      expect(res.stdout).toContain('Kills in force: none');
      expect(res.stderr).toContain('killswitch: status: could not read open_alerts: 503 SERVICE_UNAVAILABLE: the database is unavailable');
      const json = await cli(['status', '--json'], { KILLSWITCH_URL: proxied });
      expect(json.code).toBe(1);
      const report = JSON.parse(json.stdout);
      expect(report).toMatchObject({ exit_code: 1, open_alerts: null, errors: [{ read: 'open_alerts' }] });
      expect(report.kills).toMatchObject({ count: 0 });
    } finally {
      proxy.closeAllConnections();
      await new Promise((done) => proxy.close(done));
    }
  }, 120_000);

  it('a control plane whose Redis is gone is exit 3, NOT READY naming the check', async () => {
    // A second control plane reaching Redis through a proxy, which is then taken down.
    const redisProxy = new PgProxy(Number(new URL(TEST_REDIS_URL).port || 6379), new URL(TEST_REDIS_URL).hostname);
    await redisProxy.reserve();
    await redisProxy.up();
    const other = await t.app({ policyFile: POLICY, redisUrl: `redis://127.0.0.1:${redisProxy.port}` });
    await other.ctx.sessions.ensureState();
    const otherUrl = await listenUrl(other);
    const key = await t.operatorKey(other, 'viewer');
    expect((await cli(['status'], { KILLSWITCH_URL: otherUrl, KILLSWITCH_OPERATOR_KEY: key })).code).toBe(0);
    await redisProxy.down();
    await until(async () => other.ctx.redis.redis.status !== 'ready', 5_000, 'Redis connection to drop');

    const res = await cli(["status"], { KILLSWITCH_URL: otherUrl, KILLSWITCH_OPERATOR_KEY: key });
    expect(res.code, res.stderr).toBe(3);
    expect(res.stdout).toMatch(/Readiness: NOT READY: redis: not ready \(.*postgres ok.*\)/);
    expect(res.stderr).toContain('killswitch: status: the control plane is NOT READY (exit 3): ');
    const json = await cli(['status', '--json'], { KILLSWITCH_URL: otherUrl, KILLSWITCH_OPERATOR_KEY: key });
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stdout)).toMatchObject({ exit_code: 3, readiness: { ready: false, checks: { redis: 'not ready' } } });
  }, 120_000);

  // Last: the second replica stays listed as live for a while after it stops.
  it('replicas that decide with different policy files: the policy line says they diverge, and names each policy', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ks-status-'));
    try {
      const other = join(dir, 'policy.yaml');
      copyFileSync(POLICY, other);
      appendFileSync(other, '\n# replica b: a stale mount\n');
      const b = await buildApp(t.config({ policyFile: other }), { migrate: false, logStream: t.logs });
      t.apps.push(b);
      const replicas = async () => (await app.inject({ url: '/v1/policy/replicas', headers: bearer(operatorKey) })).json();
      // The control plane of the not-ready test is still listed too (same installation): counts from the API.
      await until(async () => (await replicas()).distinct === 2, 10_000, 'both policies listed');
      const view = await replicas();

      const human = await cli(['status']);
      expect(human.code, human.stderr).toBe(0);
      const hashes = (view.policies as Array<{ hash: string; replicas: number }>).map((p) => `${p.hash.slice(0, 8)} on ${p.replicas} replica${p.replicas === 1 ? '' : 's'}`);
      expect(human.stdout).toContain(`Policy: REPLICAS DIVERGE: 2 different policies: ${hashes.join(', ')}`);
      expect(human.stdout).toContain(` pid ${process.pid}  `);
      const json = JSON.parse((await cli(['status', '--json'])).stdout);
      expect(json.policy_replicas).toMatchObject({ distinct: 2, diverged: true });
      expect(json.policy_replicas.replicas).toHaveLength(view.replicas.length);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
