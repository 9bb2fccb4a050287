import type { SpanExporter } from '@opentelemetry/sdk-trace';
import type { FastifyInstance } from 'fastify';
import { logLevelRoutes } from '../http/log-level.js';
import { createDecisionTracing, type DecisionTracing } from '../tracing/tracing.js';
import type { Metrics } from './metrics.js';
import { metricsRoutes } from './routes.js';

declare module '../context.js' {
  interface AppContext {
    /** Prometheus metrics of this instance (created first in buildApp, so pools and Redis are instrumented). */
    metrics: Metrics;
    /** OpenTelemetry decision tracing; undefined when off (the default). */
    tracing: DecisionTracing | undefined;
  }
}

/**
 * GET /metrics, the runtime log level, and the decision observers (metrics, optional tracing).
 * Registered after decisionsPlugin: it observes ctx.decisions.
 */
export async function operabilityPlugin(app: FastifyInstance, opts: { spanExporter?: SpanExporter | undefined } = {}): Promise<void> {
  const { ctx } = app;
  ctx.metrics.watch(ctx);
  ctx.closers.push(async () => ctx.metrics.close());
  ctx.decisions.observe(ctx.metrics.observeDecision);
  ctx.tracing = await createDecisionTracing(ctx.config, opts.spanExporter);
  const tracing = ctx.tracing;
  if (tracing) {
    ctx.decisions.observe((o) => tracing.record(o));
    // Pushed last, so it runs first on close: after the server drained, before Redis and Postgres go.
    ctx.closers.push(() => tracing.shutdown().catch((err: unknown) => ctx.log.warn({ err }, 'tracing: spans could not be flushed on close')));
    ctx.log.info({ exporter: opts.spanExporter ? 'custom' : ctx.config.otelTracesExporter, sampler: ctx.config.otelTracesSampler }, 'tracing: a span per decision and per step');
  }
  await app.register(metricsRoutes);
  await app.register(logLevelRoutes);
}
