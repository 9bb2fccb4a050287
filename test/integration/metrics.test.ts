import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { listenMetrics } from '../../src/metrics/routes.js';
import { generateCredential } from '../../src/tokens/format.js';
import { alertRuleMetrics, CLUSTER_ONLY_METRICS, undeclaredMetrics } from '../helpers/alert-rules.js';
import { bearer, TestContext } from '../helpers/context.js';
import { exposition, type Labels } from '../helpers/exposition.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { dashboardDrift, dashboardQueries, loadDashboard } from '../helpers/grafana-dashboard.js';

// GET /metrics: the named series exist and move with traffic (decisions, steps, authentication, Redis,
// Postgres, audit writer, alerts, halts, flags), the endpoint needs an unrestricted operator key on the
// API port, and METRICS_PORT serves it without a key.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let viewer: string;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  app.ctx.metrics.stateCountsTtlMs = 0;
  gw = await new GatewayDriver(t, app).init();
  viewer = await t.operatorKey(app, 'viewer');
});
afterAll(() => t.teardown());

async function scrape(key = viewer) {
  const res = await app.inject({ url: '/metrics', headers: bearer(key) });
  expect(res.statusCode, res.body).toBe(200);
  expect(res.headers['content-type']).toContain('text/plain');
  return exposition(res.body);
}

const read = (path: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path } });

describe('GET /metrics', () => {
  it('needs an operator key that is not limited to projects', async () => {
    expect((await app.inject({ url: '/metrics' })).statusCode).toBe(401);
    const tok = await gw.token('ro');
    const agent = await app.inject({ url: '/metrics', headers: bearer(tok.raw) });
    expect(agent.statusCode).toBe(403);
    expect(agent.json().error.code).toBe('MCP_TOKEN_FORBIDDEN');
    const limited = await t.operatorKey(app, 'viewer', ['alpha']);
    const res = await app.inject({ url: '/metrics', headers: bearer(limited) });
    expect(res.statusCode).toBe(403);
    expect(res.json().error.code).toBe('FORBIDDEN');
  });

  it('exposes the named series, and their values move with traffic', async () => {
    const before = await scrape();
    for (const name of [
      'killswitch_flags_ready',
      'killswitch_flags_stale',
      'killswitch_flags_state_age_seconds',
      'killswitch_flags_last_fetch_success',
      'killswitch_flags_webhook_overrides',
      'killswitch_redis_up',
      'killswitch_postgres_pool_connections',
      'killswitch_audit_queue_depth',
      'killswitch_audit_spool_rows',
      'killswitch_audit_replay_lag_seconds',
      'killswitch_audit_rows_written_total',
      'killswitch_sessions_halted',
      'killswitch_tokens_halted',
      'killswitch_approvals_pending',
      'killswitch_kills_active',
      'killswitch_authentications_total',
      'process_cpu_user_seconds_total',
      'nodejs_eventloop_lag_seconds',
    ]) {
      expect(before.value(name), name).toBeDefined();
    }
    expect(before.v('killswitch_flags_ready')).toBe(1);
    expect(before.v('killswitch_flags_last_fetch_success')).toBe(1);
    expect(before.v('killswitch_flags_state_age_seconds')).toBeLessThan(10);
    expect(before.v('killswitch_redis_up')).toBe(1);
    expect(before.v('killswitch_audit_spool_rows')).toBe(0);
    expect(before.v('killswitch_audit_replay_lag_seconds')).toBe(0);

    // Traffic: 12 allows, 4 scope denials, 3 bad agent tokens, 1 halt (ro token writing).
    const rw = await gw.token('rw');
    const s = await gw.session(rw.raw);
    for (let i = 0; i < 12; i++) expect((await gw.decide(rw.raw, { ...read(`docs/${i}.md`), session_id: s.session_id })).decision).toBe('allow');
    for (let i = 0; i < 4; i++) {
      const d = await gw.decide(rw.raw, { server: 'memory', tool: 'delete_entities', arguments: { entityNames: ['x'] }, session_id: s.session_id });
      expect(d.code).toBe('PERMISSION_DENIED');
    }
    // A well-formed token nobody issued, and a typo (fails the checksum before any lookup).
    for (const bad of [generateCredential('mcp_rw_'), generateCredential('mcp_rw_'), 'mcp_rw_notARealTokenAtAll000000000000']) {
      const res = await app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers(bad), payload: { ...read('a'), session_id: s.session_id } });
      expect(res.statusCode).toBe(401);
    }
    const ro = await gw.token('ro');
    const roSession = await gw.session(ro.raw);
    const halted = await gw.decide(ro.raw, { server: 'filesystem', tool: 'write_file', arguments: { path: 'x.md', content: 'x' }, session_id: roSession.session_id });
    expect(halted.session).toMatchObject({ state: 'halted' });
    await app.ctx.audit.writer.flush();
    // Alerts are raised without waiting (stored, then counted): wait for the one of the halt.
    const haltAlerts = () => scrape().then((m) => m.v('killswitch_alerts_raised_total', { kind: 'SESSION_HALTED', severity: 'critical' }));
    const haltAlertsBefore = before.v('killswitch_alerts_raised_total', { kind: 'SESSION_HALTED', severity: 'critical' });
    for (let i = 0; i < 40 && (await haltAlerts()) === haltAlertsBefore; i++) await new Promise((r) => setTimeout(r, 50));

    const after = await scrape();
    const delta = (name: string, labels: Labels = {}) => after.v(name, labels) - before.v(name, labels);
    expect(delta('killswitch_decisions_total', { decision: 'allow', code: 'OK' })).toBe(12);
    expect(delta('killswitch_decisions_total', { decision: 'deny', code: 'PERMISSION_DENIED' })).toBe(5);
    expect(delta('killswitch_decision_duration_seconds_count', { decision: 'allow' })).toBe(12);
    expect(delta('killswitch_decision_duration_seconds_count', { decision: 'deny' })).toBe(5);
    expect(after.v('killswitch_decision_duration_seconds_bucket', { decision: 'allow', le: '+Inf' })).toBe(after.v('killswitch_decision_duration_seconds_count', { decision: 'allow' }));
    // Every allow passed every step, then waited for its INTENT row.
    for (const step of ['policy-resolve', 'tool-pin', 'flags', 'policy-rules', 'approval', 'scopes', 'gate', 'audit-intent']) {
      expect(delta('killswitch_decision_step_duration_seconds_count', { step }), step).toBeGreaterThanOrEqual(12);
    }
    expect(delta('killswitch_decision_step_duration_seconds_count', { step: 'halt' })).toBe(1);
    expect(delta('killswitch_decision_step_duration_seconds_sum', { step: 'gate' })).toBeGreaterThan(0);
    expect(delta('killswitch_http_request_duration_seconds_count', { route: '/v1/decisions', status_code: '200' })).toBe(17);
    expect(delta('killswitch_http_request_duration_seconds_count', { route: '/v1/decisions', status_code: '401' })).toBe(3);

    expect(delta('killswitch_authentications_total', { kind: 'agent', result: 'failed' })).toBe(2);
    expect(delta('killswitch_authentications_total', { kind: 'malformed', result: 'failed' })).toBe(1);
    expect(delta('killswitch_authentications_total', { kind: 'agent', result: 'ok' })).toBeGreaterThanOrEqual(17);
    expect(delta('killswitch_authentications_total', { kind: 'gateway', result: 'ok' })).toBeGreaterThanOrEqual(19);

    // The gate's one Redis round trip per decision that reaches it (the denials stop at the scope check),
    // and the audit writer's group commits.
    expect(delta('killswitch_redis_command_duration_seconds_count', { command: 'evalsha' })).toBeGreaterThanOrEqual(12);
    expect(delta('killswitch_postgres_query_duration_seconds_count', { pool: 'audit' })).toBeGreaterThan(0);
    expect(delta('killswitch_audit_batch_rows_count')).toBeGreaterThan(0);
    expect(delta('killswitch_audit_batch_rows_sum')).toBeGreaterThanOrEqual(17);
    expect(delta('killswitch_audit_rows_written_total')).toBeGreaterThanOrEqual(17);
    expect(delta('killswitch_audit_batches_total')).toBe(delta('killswitch_audit_batch_rows_count'));
    expect(after.v('killswitch_audit_rows_lost_total')).toBe(0);

    expect(delta('killswitch_alerts_raised_total', { kind: 'SESSION_HALTED', severity: 'critical' })).toBe(1);
    expect(delta('killswitch_sessions_halted')).toBeGreaterThanOrEqual(1);
    expect(delta('killswitch_tokens_halted')).toBe(1);

    // Revoking the halted token ends the incident: its halts need nobody now, so the gauges (and the
    // KillswitchSessionsHalted alert on them) no longer count them, though the halt stays on record.
    expect((await app.inject({ method: 'POST', url: `/v1/keys/${ro.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'INC-3 ended by revoking' } })).statusCode).toBe(200);
    const revoked = await scrape();
    expect(revoked.v('killswitch_sessions_halted')).toBe(after.v('killswitch_sessions_halted') - 1);
    expect(revoked.v('killswitch_tokens_halted')).toBe(after.v('killswitch_tokens_halted') - 1);
    expect((await app.inject({ url: `/v1/sessions/${roSession.session_id}`, headers: bearer(gw.owner) })).json()).toMatchObject({ state: 'halted' });
  });

  it('deploy/prometheus/alerts.yml uses only metrics this endpoint serves', async () => {
    const { text } = await scrape();
    const { rules, names } = alertRuleMetrics();
    expect(rules).toBeGreaterThan(10);
    // The workers' metrics are checked against a cluster's scrape in workers.test.ts.
    const single = [...names].filter((n) => !CLUSTER_ONLY_METRICS.has(n));
    expect(single.length).toBeGreaterThan(20);
    expect(undeclaredMetrics(text, single)).toEqual([]);
    expect([...CLUSTER_ONLY_METRICS].filter((n) => names.has(n))).toEqual([...CLUSTER_ONLY_METRICS]);
  });

  it('deploy/grafana/killswitch.json queries only metrics and labels this endpoint serves', async () => {
    // A series of each labelled metric the dashboard reads, so that its labels are in the scrape: a
    // decision of each kind, a failed Redis command, a failed Postgres query, an alert.
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, { ...read('docs/dashboard.md'), session_id: s.session_id })).decision).toBe('allow');
    expect((await gw.decide(tok.raw, { server: 'memory', tool: 'delete_entities', arguments: { entityNames: ['x'] }, session_id: s.session_id })).code).toBe('PERMISSION_DENIED');
    const key = app.ctx.redis.key('metrics-dashboard-string');
    await app.ctx.redis.redis.set(key, 'not a number', 'PX', 60_000);
    await expect(app.ctx.redis.redis.incr(key)).rejects.toThrow(/not an integer/);
    await expect(app.ctx.pool.query('SELECT 1 / 0')).rejects.toThrow(/division by zero/);
    await app.ctx.alerts.raise({ kind: 'SESSION_RESUMED', message: 'metrics test: an alert for the dashboard check' });

    const queries = dashboardQueries(loadDashboard());
    const controlPlane = queries.filter((q) => !q.expr.includes('killswitch_gateway_') && !q.expr.includes('$gateway'));
    expect(controlPlane.length).toBeGreaterThan(40);
    // The gateway's expressions are checked against GatewayMetrics in test/unit/grafana-dashboard.test.ts.
    expect(dashboardDrift(queries, 'control-plane', (await scrape()).text)).toEqual([]);
  });

  it('docs/operations.md lists every killswitch_ metric served, and each one it lists is served (the cluster-only ones by WORKERS > 1)', async () => {
    const { text } = await scrape();
    const served = new Set([...text.matchAll(/^# TYPE (killswitch_[a-z0-9_]+) /gm)].map((m) => m[1]!));
    const doc = readFileSync('docs/operations.md', 'utf8');
    const section = doc.slice(doc.indexOf('## 3. Prometheus metrics'), doc.indexOf('## 4. Alert rules'));
    // The first cell of each row of the table: one name, or several sharing a row.
    const listed = new Set(
      section
        .split('\n')
        .filter((l) => l.startsWith('| `killswitch_'))
        .flatMap((l) => [...l.split('|')[1]!.matchAll(/`(killswitch_[a-z0-9_]+)`/g)].map((m) => m[1]!)),
    );
    expect(served.size).toBeGreaterThan(30);
    expect([...served].filter((n) => !listed.has(n))).toEqual([]);
    expect([...listed].filter((n) => !served.has(n) && !CLUSTER_ONLY_METRICS.has(n))).toEqual([]);
    expect([...CLUSTER_ONLY_METRICS].filter((n) => !listed.has(n))).toEqual([]);
  });

  it('counts failed Redis commands by command, not the CLIENT SETINFO ioredis sends at each connect (Redis before 7.2 refuses it)', async () => {
    const before = await scrape();
    const redis = app.ctx.redis.redis;
    // What ioredis sends on connect (unknown before Redis 7.2; an attribute no Redis knows here, so it fails on every version).
    const client = redis.client.bind(redis) as (...args: string[]) => Promise<unknown>;
    await expect(client('SETINFO', 'NO-SUCH-ATTRIBUTE', 'x')).rejects.toThrow();
    // A command of ours that fails is counted.
    const key = app.ctx.redis.key('metrics-test-string');
    await redis.set(key, 'not a number', 'PX', 60_000);
    await expect(redis.incr(key)).rejects.toThrow(/not an integer/);
    const after = await scrape();
    expect(after.v('killswitch_redis_errors_total', { command: 'incr' }) - before.v('killswitch_redis_errors_total', { command: 'incr' })).toBe(1);
    // Nor the two this instance's own connect sent, on a Redis older than 7.2.
    expect(after.value('killswitch_redis_errors_total', { command: 'client' })).toBeUndefined();
  });

  it('counts Postgres errors by pool and SQLSTATE class', async () => {
    const before = await scrape();
    await expect(app.ctx.pool.query('SELECT 1 / 0')).rejects.toThrow(/division by zero/);
    const after = await scrape();
    expect(after.v('killswitch_postgres_errors_total', { pool: 'main', class: '22' }) - before.v('killswitch_postgres_errors_total', { pool: 'main', class: '22' })).toBe(1);
  });

  it('reports webhook overrides and approvals pending', async () => {
    const before = await scrape();
    const tok = await gw.token('rw');
    const tool = { name: 'metrics_probe', description: 'v1', inputSchema: { type: 'object' } };
    const report = (description: string) =>
      app.inject({ method: 'POST', url: '/v1/gateway/tools', headers: gw.headers(tok.raw), payload: { servers: [{ name: 'memory', identity: { command: 'npx' }, tools: [{ ...tool, description }] }] } });
    const first = await report('v1');
    expect(first.statusCode, first.body).toBe(200);
    expect((await report('v2, changed')).statusCode).toBe(200);
    // The fixture policy wants a human to approve filesystem/move_file's exact arguments.
    const s = await gw.session(tok.raw);
    const move = await gw.decide(tok.raw, { server: 'filesystem', tool: 'move_file', arguments: { source: 'a.md', destination: 'b.md' }, session_id: s.session_id });
    expect(move.code).toBe('APPROVAL_REQUIRED');
    // Last: the override ends at the next poll that has caught up with Unleash (about a second).
    const env = inject('unleash').environment;
    expect(await app.ctx.flags.applyWebhookEvent({ type: 'feature-environment-disabled', featureName: 'mcp.metrics-test-only.read', environment: env })).toBe('denied');
    const after = await scrape();
    expect(after.v('killswitch_approvals_pending', { kind: 'call' }) - before.v('killswitch_approvals_pending', { kind: 'call' })).toBe(1);
    expect(after.value('killswitch_kills_active')).toBe(0);
    expect(after.v('killswitch_flags_webhook_overrides') - before.v('killswitch_flags_webhook_overrides')).toBe(1);
    expect(after.v('killswitch_approvals_pending', { kind: 'tool_definition' }) - before.v('killswitch_approvals_pending', { kind: 'tool_definition' })).toBe(1);
    // The alert is stored before it is counted (raised without waiting).
    let alerts = 0;
    for (let i = 0; i < 40 && alerts === 0; i++) {
      alerts = (await scrape()).v('killswitch_alerts_raised_total', { kind: 'FLAG_DISABLED' }) - before.v('killswitch_alerts_raised_total', { kind: 'FLAG_DISABLED' });
      if (alerts === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(alerts).toBe(1);
  });

  it('METRICS_PORT serves the same text without a key, on its own listener', async () => {
    const other = await t.app({ policyFile: POLICY, metricsPort: 0, metricsHost: '127.0.0.1' });
    const address = await listenMetrics(other);
    expect(address).toBeDefined();
    const res = await fetch(`http://127.0.0.1:${address!.port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    expect(text).toContain('# TYPE killswitch_decisions_total counter');
    expect(text).toContain('killswitch_flags_ready 1');
    expect((await fetch(`http://127.0.0.1:${address!.port}/v1/keys`)).status).toBe(404);
    // Without METRICS_PORT there is no second listener.
    expect(await listenMetrics(app)).toBeUndefined();
  });
});

describe('configuration errors name the variable and exit 2', () => {
  const run = promisify(execFile);
  async function start(env: Record<string, string>) {
    try {
      await run('node', ['bin/killswitch.js', 'start'], { env: { ...process.env, ...env }, timeout: 30_000 });
      return { code: 0, stderr: '' };
    } catch (err) {
      const e = err as { code: number; stderr: string };
      return { code: e.code, stderr: e.stderr };
    }
  }

  it.each([
    ['METRICS_PORT', 'ninety'],
    ['METRICS_PORT', '8080'], // the same as PORT
    ['SHUTDOWN_TIMEOUT_MS', '-5'],
    ['OTEL_TRACES_EXPORTER', 'zipkin'],
    ['OTEL_EXPORTER_OTLP_ENDPOINT', 'collector:4318'],
    ['OTEL_TRACES_SAMPLER_ARG', '2'],
  ])('killswitch start with %s=%s', async (variable, value) => {
    const res = await start({ [variable]: value });
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`killswitch: configuration error: ${variable}=`);
    expect(res.stderr).toContain(`Example: ${variable}=`);
  });
});
