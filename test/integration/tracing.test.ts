import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// OpenTelemetry tracing: off by default; when on, one span per decision with a child per pipeline step
// (and the durable INTENT row), placed inside the decision's time, exported over OTLP/HTTP.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
const exporter = new InMemorySpanExporter();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await buildApp(t.config({ policyFile: POLICY }), { migrate: false, logStream: t.logs, spanExporter: exporter });
  t.apps.push(app);
  gw = await new GatewayDriver(t, app).init();
});
afterAll(() => t.teardown());

const nanos = (hr: [number, number]) => BigInt(hr[0]) * 1_000_000_000n + BigInt(hr[1]);

async function spansOf(decisionId: string): Promise<{ root: ReadableSpan; children: ReadableSpan[] }> {
  await app.ctx.tracing!.forceFlush();
  const spans = exporter.getFinishedSpans();
  const root = spans.find((s) => s.name === 'killswitch.decision' && s.attributes['killswitch.decision_id'] === decisionId);
  expect(root, `a decision span for ${decisionId}`).toBeDefined();
  const rootId = root!.spanContext().spanId;
  const children = spans.filter((s) => s.parentSpanContext?.spanId === rootId);
  for (const c of children) {
    expect(c.spanContext().traceId).toBe(root!.spanContext().traceId);
    expect(nanos(c.startTime)).toBeGreaterThanOrEqual(nanos(root!.startTime));
    expect(nanos(c.endTime)).toBeLessThanOrEqual(nanos(root!.endTime));
  }
  return { root: root!, children };
}

describe('decision tracing', () => {
  it('is off by default', async () => {
    const plain = await t.app({ policyFile: POLICY });
    expect(plain.ctx.tracing).toBeUndefined();
  });

  it('an allow: a decision span with one child per step, in order, and the INTENT wait last', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' }, session_id: s.session_id });
    expect(d.decision).toBe('allow');
    const { root, children } = await spansOf(d.decision_id);
    expect(root.attributes).toMatchObject({
      'killswitch.decision': 'allow',
      'killswitch.code': 'OK',
      'killswitch.server': 'filesystem',
      'killswitch.tool': 'read_text_file',
      'killswitch.token_id': tok.id,
      'killswitch.session_id': s.session_id,
      'killswitch.capability': 'read',
    });
    expect(root.resource.attributes['service.name']).toBe('killswitch-control-plane');
    const ordered = [...children].sort((a, b) => (nanos(a.startTime) < nanos(b.startTime) ? -1 : 1)).map((c) => c.name);
    // DESIGN.md §4 order (other steps may sit between these), then the wait for the durable INTENT row.
    const at = (name: string) => ordered.indexOf(name);
    expect(at('step policy-resolve')).toBe(0);
    for (const [a, b] of [
      ['step policy-resolve', 'step flags'],
      ['step flags', 'step scopes'],
      ['step scopes', 'step gate'],
    ]) {
      expect(at(a!), `${a} before ${b} in ${ordered.join(', ')}`).toBeLessThan(at(b!));
      expect(at(a!)).toBeGreaterThanOrEqual(0);
    }
    expect(ordered.at(-1)).toBe('audit-intent');
    expect(new Set(ordered).size).toBe(ordered.length);
    for (const c of children.filter((x) => x.name.startsWith('step '))) expect(c.attributes['killswitch.verdict']).toBe('pass');
  });

  it('a denial: the step that denied carries the code; no INTENT wait', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { server: 'memory', tool: 'delete_entities', arguments: { entityNames: ['x'] }, session_id: s.session_id });
    expect(d.code).toBe('PERMISSION_DENIED');
    const { root, children } = await spansOf(d.decision_id);
    expect(root.attributes).toMatchObject({ 'killswitch.decision': 'deny', 'killswitch.code': 'PERMISSION_DENIED' });
    const scopes = children.find((c) => c.name === 'step scopes');
    expect(scopes?.attributes).toMatchObject({ 'killswitch.verdict': 'deny', 'killswitch.code': 'PERMISSION_DENIED' });
    expect(children.some((c) => c.name === 'step gate' || c.name === 'audit-intent')).toBe(false);
  });

  it('OTEL_TRACES_EXPORTER=otlp sends the spans to the OTLP/HTTP endpoint with OTEL_EXPORTER_OTLP_HEADERS', async () => {
    const received: Array<{ url: string; headers: IncomingHttpHeaders; body: Buffer }> = [];
    const collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    try {
      const port = (collector.address() as AddressInfo).port;
      const traced = await t.app({
        policyFile: POLICY,
        otelTracesExporter: 'otlp',
        otelExporterOtlpEndpoint: `http://127.0.0.1:${port}`,
        otelExporterOtlpHeaders: 'x-collector-key=s3cret',
        otelServiceName: 'killswitch-test',
      });
      const driver = await new GatewayDriver(t, traced).init();
      const tok = await driver.token('rw');
      const s = await driver.session(tok.raw);
      const d = await driver.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/b.md' }, session_id: s.session_id });
      await traced.ctx.tracing!.forceFlush();
      const hit = received.find((r) => r.body.includes(d.decision_id));
      expect(hit, 'an OTLP request carrying the decision id').toBeDefined();
      expect(hit!.url).toBe('/v1/traces');
      expect(hit!.headers['x-collector-key']).toBe('s3cret');
      expect(hit!.body.includes('killswitch-test')).toBe(true);
      expect(hit!.body.includes('step gate')).toBe(true);
    } finally {
      collector.closeAllConnections();
      await new Promise((r) => collector.close(r));
    }
  });
});
