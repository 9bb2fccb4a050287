import { readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/gateway.js';
import { alertRuleMetrics, GATEWAY_METRIC_PREFIX, undeclaredMetrics } from '../helpers/alert-rules.js';
import { exposition } from '../helpers/exposition.js';
import { GatewayHarness, textOf } from './gateway-harness.js';

// The gateway's Prometheus metrics (src/gateway/metrics.ts), scraped as Prometheus would: GET /metrics
// on the HTTP front, or on `killswitch.metrics`' own listener (the only one a stdio gateway has). Real
// control plane; the upstreams are server-filesystem and the fake stdio upstream.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FAKE_UPSTREAM = fileURLToPath(new URL('./gateway-fake-upstream.mjs', import.meta.url));
const h = new GatewayHarness();

beforeAll(async () => {
  await h.start();
  writeFileSync(join(h.dir, 'notes.md'), 'metrics notes\n');
}, 120_000);
afterAll(() => h.stop());

const call = async (client: Client, name: string, args: Record<string, unknown>) => (await client.callTool({ name, arguments: args })) as CallToolResult;
const codeOf = (r: CallToolResult) => (r._meta?.['killswitch/decision'] as { code?: string } | undefined)?.code;

async function scrape(url: string) {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return exposition(await res.text());
}

/** A request with the Host header of our choosing (fetch sends the URL's). */
function rawGet(url: string, host: string, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers: { host } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject).end();
  });
}

/** The HTTP front's GET /metrics of a gateway listening on a free port. */
async function frontMetrics(gateway: Gateway): Promise<string> {
  const front = await gateway.listenHttp({ port: 0 });
  return new URL('/metrics', front.url).href;
}

const CALLS = 'killswitch_gateway_calls_total';
const CP_COUNT = 'killswitch_gateway_control_plane_request_duration_seconds_count';
const UPSTREAM_COUNT = 'killswitch_gateway_upstream_call_duration_seconds_count';

describe('GET /metrics on the HTTP front', () => {
  it('counts an allow and a deny by outcome and code, times the decision waits and the upstream call, and shows no credential', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway();
    const url = await frontMetrics(gateway);
    const client = await h.client(gateway, token);

    const read = await call(client, 'read_text_file', { path: 'notes.md' });
    expect(read.isError, textOf(read)).toBeFalsy();
    const write = await call(client, 'write_file', { path: 'notes.md', content: 'no' });
    expect(codeOf(write)).toBe('PERMISSION_DENIED');

    const m = await scrape(url);
    expect(m.value(CALLS, { method: 'tools/call', server: 'filesystem', outcome: 'allowed', code: 'OK' })).toBe(1);
    expect(m.value(CALLS, { method: 'tools/call', server: 'filesystem', outcome: 'denied', code: 'PERMISSION_DENIED' })).toBe(1);
    expect(m.v(CALLS)).toBe(2);
    // Two decisions and one result report, all answered; the session was opened once.
    expect(m.value(CP_COUNT, { request: 'decision', result: 'ok' })).toBe(2);
    expect(m.value(CP_COUNT, { request: 'result', result: 'ok' })).toBe(1);
    expect(m.value(CP_COUNT, { request: 'session', result: 'ok' })).toBe(1);
    expect(m.v(CP_COUNT) - m.v(CP_COUNT, { result: 'ok' })).toBe(0);
    expect(m.value('killswitch_gateway_control_plane_request_duration_seconds_bucket', { request: 'decision', result: 'ok', le: '+Inf' })).toBe(2);
    expect(m.v('killswitch_gateway_control_plane_request_duration_seconds_sum', { request: 'decision' })).toBeGreaterThan(0);
    // Only the allowed call reached the upstream.
    expect(m.value(UPSTREAM_COUNT, { server: 'filesystem', result: 'ok' })).toBe(1);
    expect(m.v(UPSTREAM_COUNT)).toBe(1);
    expect(m.value('killswitch_gateway_agent_sessions')).toBe(1);
    expect(m.value('killswitch_gateway_upstream_up', { server: 'filesystem' })).toBe(1);
    // Nothing that identifies an agent or a call: no token, no key, no session id, no argument, no tool name.
    for (const secret of [token, h.gatewayKey, 'notes.md', 'write_file']) expect(m.text).not.toContain(secret);
    expect(new Set(m.samples.filter((s) => s.name === CALLS).flatMap((s) => Object.keys(s.labels)))).toEqual(new Set(['method', 'server', 'outcome', 'code']));
  });

  it('a tool no upstream offers is counted by method alone (UNKNOWN_TOOL is decided by nobody: not a call, not in the audit trail)', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway();
    const url = await frontMetrics(gateway);
    const client = await h.client(gateway, token);
    for (const name of ['exfiltrate_secrets', 'filesystem__nope']) {
      const err = await client.callTool({ name, arguments: {} }).then(
        () => undefined,
        (e: Error) => e.message,
      );
      expect(err).toContain('UNKNOWN_TOOL');
    }
    const m = await scrape(url);
    expect(m.value('killswitch_gateway_unknown_names_total', { method: 'tools/call' })).toBe(2);
    expect(m.v(CALLS)).toBe(0);
    expect(m.text).not.toContain('exfiltrate');
  });

  it('a control plane that cannot be reached: the call is counted no_decision DEPENDENCY_UNAVAILABLE, and the decision request unreachable', async () => {
    // The control plane behind a forwarder this test can take away, after the session is open.
    const target = new URL(h.url);
    const sockets = new Set<Socket>();
    const forwarder = createNetServer((inbound) => {
      const outbound = connect(Number(target.port), target.hostname);
      sockets.add(inbound).add(outbound);
      inbound.pipe(outbound).pipe(inbound);
      const end = () => {
        inbound.destroy();
        outbound.destroy();
      };
      inbound.on('error', end).on('close', end);
      outbound.on('error', end).on('close', end);
    });
    await new Promise<void>((r) => forwarder.listen(0, '127.0.0.1', () => r()));
    const forwarded = `http://127.0.0.1:${(forwarder.address() as { port: number }).port}`;

    const gateway = await h.gateway({ killswitch: { url: forwarded } });
    const url = await frontMetrics(gateway);
    const client = await h.client(gateway, await h.token('ro'));
    const allowed = await call(client, 'read_text_file', { path: 'notes.md' });
    expect(allowed.isError, textOf(allowed)).toBeFalsy();

    await new Promise<void>((r) => {
      forwarder.close(() => r());
      for (const s of sockets) s.destroy();
    });
    const denied = await call(client, 'read_text_file', { path: 'notes.md' });
    expect(codeOf(denied)).toBe('DEPENDENCY_UNAVAILABLE');
    expect(textOf(denied)).toMatch(/control plane (unreachable|response broke off)/);

    const m = await scrape(url);
    expect(m.value(CALLS, { method: 'tools/call', server: 'filesystem', outcome: 'no_decision', code: 'DEPENDENCY_UNAVAILABLE' })).toBe(1);
    expect(m.value(CALLS, { outcome: 'allowed', code: 'OK' })).toBe(1);
    expect(m.value(CALLS, { outcome: 'denied' })).toBeUndefined();
    expect(m.value(CP_COUNT, { request: 'decision', result: 'unreachable' })).toBe(1);
    expect(m.value(CP_COUNT, { request: 'decision', result: 'ok' })).toBe(1);
    // It never reached the upstream.
    expect(m.v(UPSTREAM_COUNT)).toBe(1);
  });

  it('upstream failures: a JSON-RPC error is failed UPSTREAM_ERROR (upstream result error), a crash failed UPSTREAM_UNAVAILABLE with the upstream down', async () => {
    const hold = join(h.scratch, 'metrics-hold');
    const gateway = await h.gateway({
      mcpServers: { filesystem: { disabled: true }, memory: { command: process.execPath, args: [FAKE_UPSTREAM], cwd: ROOT, env: { FAKE_UPSTREAM_HOLD: hold } } },
      killswitch: { startTimeoutMs: 60_000 },
    });
    const url = await frontMetrics(gateway);
    const client = await h.client(gateway, await h.token('ro'));

    const failed = await call(client, 'search_nodes', { query: 'error:100' });
    expect(codeOf(failed)).toBe('UPSTREAM_ERROR');
    let m = await scrape(url);
    expect(m.value(CALLS, { method: 'tools/call', server: 'memory', outcome: 'failed', code: 'UPSTREAM_ERROR' })).toBe(1);
    expect(m.value(UPSTREAM_COUNT, { server: 'memory', result: 'error' })).toBe(1);
    expect(m.value('killswitch_gateway_upstream_up', { server: 'memory' })).toBe(1);

    // Every restart fails while the hold file exists: the upstream stays down.
    writeFileSync(hold, 'stay down');
    const crashed = await call(client, 'search_nodes', { query: 'crash' });
    expect(codeOf(crashed)).toBe('UPSTREAM_UNAVAILABLE');
    const down = await call(client, 'read_graph', {});
    expect(codeOf(down)).toBe('UPSTREAM_UNAVAILABLE');
    m = await scrape(url);
    expect(m.value(CALLS, { method: 'tools/call', server: 'memory', outcome: 'failed', code: 'UPSTREAM_UNAVAILABLE' })).toBe(2);
    expect(m.value(UPSTREAM_COUNT, { server: 'memory', result: 'unavailable' })).toBe(2);
    expect(m.value('killswitch_gateway_upstream_up', { server: 'memory' })).toBe(0);
  }, 90_000);

  it('with http.allowedHosts, answers only those Hosts (a page rebound to the address reads nothing); GET only, /healthz still to any Host', async () => {
    const gateway = await h.gateway({ killswitch: { http: { allowedHosts: ['prometheus.internal:9090'] } } });
    const url = await frontMetrics(gateway);
    const allowed = await rawGet(url, 'prometheus.internal:9090');
    expect(allowed.status).toBe(200);
    expect(allowed.body).toContain('# TYPE killswitch_gateway_calls_total counter');
    const rebound = await rawGet(url, 'attacker.example:8788');
    expect(rebound.status).toBe(403);
    expect(rebound.body).not.toContain('killswitch_gateway');
    expect(rebound.body).toContain('http.allowedHosts');
    expect((await rawGet(new URL('/healthz', url).href, 'attacker.example:8788')).status).toBe(200);
    // Reading is all it does: another method, or another path, is the MCP front's 404.
    for (const method of ['POST', 'HEAD', 'DELETE']) expect((await rawGet(url, 'prometheus.internal:9090', method)).status, method).toBe(404);
    expect((await rawGet(`${url}/`, 'prometheus.internal:9090')).status).toBe(404);
  });

  it('docs/gateway.md lists every killswitch_gateway_ metric served, each one it lists is served, and alerts.yml uses only served ones', async () => {
    const gateway = await h.gateway();
    const m = await scrape(await frontMetrics(gateway));
    const served = new Set([...m.text.matchAll(/^# TYPE (killswitch_gateway_[a-z0-9_]+) /gm)].map((x) => x[1]!));
    const doc = readFileSync('docs/gateway.md', 'utf8');
    const section = doc.slice(doc.indexOf('## Metrics'), doc.indexOf('\n## ', doc.indexOf('## Metrics') + 1));
    const listed = new Set(
      section
        .split('\n')
        .filter((l) => l.startsWith(`| \`${GATEWAY_METRIC_PREFIX}`))
        .flatMap((l) => [...l.split('|')[1]!.matchAll(/`(killswitch_gateway_[a-z0-9_]+)`/g)].map((x) => x[1]!)),
    );
    expect(served.size).toBeGreaterThanOrEqual(5);
    expect([...served].filter((n) => !listed.has(n))).toEqual([]);
    expect([...listed].filter((n) => !served.has(n))).toEqual([]);
    const { gatewayNames } = alertRuleMetrics();
    expect(gatewayNames.size).toBeGreaterThan(0);
    expect(undeclaredMetrics(m.text, gatewayNames)).toEqual([]);
  });
});

describe('killswitch.metrics: a listener of its own', () => {
  it('serves only GET /metrics, and the HTTP front then does not', async () => {
    const gateway = await h.gateway({ killswitch: { metrics: { host: '127.0.0.1', port: 0 } } });
    const listener = await gateway.listenMetrics();
    expect(listener?.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const m = await scrape(listener!.url);
    expect(m.text).toContain('# TYPE killswitch_gateway_calls_total counter');
    expect((await fetch(new URL('/healthz', listener!.url))).status).toBe(404);
    const front = await gateway.listenHttp({ port: 0 });
    expect((await fetch(new URL('/metrics', front.url))).status).toBe(404);
    expect((await fetch(new URL('/healthz', front.url))).status).toBe(200);
  });

  it('answers for a stdio gateway (killswitch gateway as a desktop client starts it), with the process metrics', async () => {
    const transport = h.stdioGateway(await h.token('ro'), join(h.scratch, 'stdio-metrics-gateway.json'), { killswitch: { metrics: { port: 0 } } });
    // Port 0: the gateway says on stderr where it listens.
    let stderr = '';
    const metricsUrl = new Promise<string>((resolve) => {
      transport.stderr?.on('data', (chunk: Buffer) => {
        stderr += chunk.toString('utf8');
        const found = /metrics at (http:\/\/\S+\/metrics)/.exec(stderr)?.[1];
        if (found) resolve(found);
      });
    });
    const client = new Client({ name: 'stdio-metrics', version: '1' });
    try {
      await client.connect(transport, { timeout: 60_000 });
      const url = await metricsUrl;
      // No metrics.host in the config: loopback, never every interface.
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const read = await call(client, 'read_text_file', { path: 'notes.md' });
      expect(read.isError, textOf(read)).toBeFalsy();
      const m = await scrape(url);
      expect(m.value(CALLS, { method: 'tools/call', server: 'filesystem', outcome: 'allowed', code: 'OK' })).toBe(1);
      expect(m.value('killswitch_gateway_agent_sessions')).toBe(1);
      expect(m.v('process_resident_memory_bytes')).toBeGreaterThan(0);
      expect(m.text).toContain('# TYPE nodejs_eventloop_lag_p99_seconds gauge');
    } finally {
      await client.close().catch(() => {});
    }
  }, 90_000);
});
