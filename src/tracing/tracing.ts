import type { SpanExporter } from '@opentelemetry/sdk-trace';
import type { Config } from '../config.js';
import type { DecisionObservation } from '../decisions/service.js';

// Optional OpenTelemetry tracing of decisions: one span per decision with one child per pipeline step,
// so a slow decision shows where its time went. Off unless OTEL_TRACES_EXPORTER is otlp or console.
// The OpenTelemetry packages (otel.ts) are imported only when it is on: off, which is the default, they
// are never loaded (~3 MB less live heap and a shorter start).

export const TRACER_NAME = 'killswitch';

export interface DecisionTracing {
  /** A DecisionObserver (decisions/service.ts). */
  record(o: DecisionObservation): void;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

/** Whether the configuration turns tracing on (the standard OTEL_* variables, read by src/config.ts). */
export function tracingConfigured(config: Pick<Config, 'otelSdkDisabled' | 'otelTracesExporter'>): boolean {
  return !config.otelSdkDisabled && (config.otelTracesExporter === 'console' || config.otelTracesExporter === 'otlp');
}

/**
 * The decision tracer of one app instance, or undefined when tracing is off. `exporter` replaces the
 * configured one and turns tracing on (tests pass an InMemorySpanExporter).
 */
export async function createDecisionTracing(config: Config, exporter?: SpanExporter): Promise<DecisionTracing | undefined> {
  if (!exporter && !tracingConfigured(config)) return undefined;
  const { startDecisionTracing } = await import('./otel.js');
  return startDecisionTracing(config, exporter);
}
