import { hostname } from 'node:os';
import { type Attributes, type HrTime, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  ParentBasedSampler,
  type Sampler,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { redactText } from '../audit/redact.js';
import { type Config, parseKeyValueList } from '../config.js';
import type { DecisionObservation } from '../decisions/service.js';
import { type DecisionTracing, TRACER_NAME } from './tracing.js';

// The OpenTelemetry side of tracing.ts, loaded only when tracing is on. One span per decision with one
// child per pipeline step (and the halt and the durable INTENT row), built after the answer from the
// times the pipeline already measures (CallContext.trace), and exported in batches off the request path:
// a decision never waits for the collector. The provider is ours, not the global one: each app instance
// has its own.

const SERVICE_VERSION = '0.1.0';

/**
 * performance.now() times of one decision as wall-clock HrTime, all with the same offset: the SDK would
 * compute a fresh offset for each span from Date.now() (1 ms resolution), and children could then start
 * before their parent.
 */
function clockOf(): (perfMs: number) => HrTime {
  const origin = Date.now() - performance.now();
  return (perfMs) => {
    const ms = origin + perfMs;
    const sec = Math.floor(ms / 1000);
    return [sec, Math.min(999_999_999, Math.round((ms - sec * 1000) * 1e6))];
  };
}

function samplerFrom(config: Pick<Config, 'otelTracesSampler' | 'otelTracesSamplerArg'>): Sampler {
  const ratio = config.otelTracesSamplerArg === '' ? 1 : Number(config.otelTracesSamplerArg);
  switch (config.otelTracesSampler) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

/** The configured exporter; called only when tracing.ts found tracing on (console or otlp). */
function exporterFrom(config: Config): SpanExporter {
  if (config.otelTracesExporter === 'console') return new ConsoleSpanExporter();
  const base = config.otelExporterOtlpEndpoint || 'http://localhost:4318';
  const url = config.otelExporterOtlpTracesEndpoint || `${base.replace(/\/+$/, '')}/v1/traces`;
  return new OTLPTraceExporter({ url, headers: parseKeyValueList(config.otelExporterOtlpHeaders) ?? {} });
}

/**
 * The decision tracer of one app instance. `exporter` replaces the configured one (tests pass an
 * InMemorySpanExporter).
 */
export function startDecisionTracing(config: Config, exporter?: SpanExporter): DecisionTracing {
  const spanExporter = exporter ?? exporterFrom(config);
  const provider = new TracerProvider({
    sampler: samplerFrom(config),
    resource: resourceFromAttributes({
      ...(parseKeyValueList(config.otelResourceAttributes) ?? {}),
      'service.name': config.otelServiceName,
      'service.version': SERVICE_VERSION,
      'service.instance.id': `${hostname()}:${process.pid}`,
    }),
    spanProcessors: [new BatchSpanProcessor({ exporter: spanExporter })],
  });
  const tracer = provider.getTracer(TRACER_NAME, SERVICE_VERSION);

  return {
    record(o: DecisionObservation): void {
      const { answer, call } = o;
      const hr = clockOf();
      const end = o.startedAt + o.durationMs;
      const attributes: Attributes = { 'killswitch.decision': answer.decision, 'killswitch.code': answer.code };
      if (answer.decision_id) attributes['killswitch.decision_id'] = answer.decision_id;
      if (call) {
        Object.assign(attributes, {
          'killswitch.server': redactText(call.input.server),
          'killswitch.tool': redactText(call.input.tool),
          'killswitch.session_id': call.input.session_id,
          'killswitch.token_id': call.agent.id,
          'killswitch.token_type': call.agent.tokenType,
          'killswitch.role': call.agent.role,
          'killswitch.project_id': call.agent.projectId,
          'killswitch.environment': call.agent.environment,
          'killswitch.gateway_id': call.gateway.id,
        });
        if (call.call) attributes['killswitch.capability'] = call.call.capability;
        if (answer.session?.trigger) attributes['killswitch.halt_trigger'] = answer.session.trigger;
      }
      const root = tracer.startSpan('killswitch.decision', { kind: SpanKind.SERVER, startTime: hr(o.startedAt), attributes });
      if (answer.code === 'DEPENDENCY_UNAVAILABLE') root.setStatus({ code: SpanStatusCode.ERROR, message: answer.message });
      if (call) {
        const parent = trace.setSpan(ROOT_CONTEXT, root);
        // The steps run back to back from the start of decide(); each one's start is the sum before it.
        let at = o.startedAt;
        for (const t of call.trace) {
          const stepEnd = at + t.micros / 1000;
          const a: Attributes = { 'killswitch.step': t.step, 'killswitch.verdict': t.verdict };
          if (t.code) a['killswitch.code'] = t.code;
          const span = tracer.startSpan(`step ${t.step}`, { startTime: hr(at), attributes: a }, parent);
          if (t.code === 'DEPENDENCY_UNAVAILABLE') span.setStatus({ code: SpanStatusCode.ERROR, message: t.message ?? t.code });
          span.end(hr(stepEnd));
          at = stepEnd;
        }
        if (o.haltMicros !== undefined) {
          tracer.startSpan('halt', { startTime: hr(at), attributes: { 'killswitch.step': 'halt' } }, parent).end(hr(at + o.haltMicros / 1000));
        }
        if (o.auditMicros !== undefined) {
          const auditStart = end - o.auditMicros / 1000;
          tracer.startSpan('audit-intent', { startTime: hr(auditStart), attributes: { 'killswitch.step': 'audit-intent' } }, parent).end(hr(end));
        }
      }
      root.end(hr(end));
    },
    forceFlush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}
