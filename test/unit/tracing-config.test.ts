import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createDecisionTracing, tracingConfigured } from '../../src/tracing/tracing.js';

// Tracing is off unless OTEL_TRACES_EXPORTER asks for an exporter, and OTEL_SDK_DISABLED turns it off
// whatever else is set; off, the OpenTelemetry packages are not even imported (src/tracing/tracing.ts).

const BASE = { DATABASE_URL: 'postgres://x@127.0.0.1/x', TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234' };

describe('tracingConfigured', () => {
  it.each([
    [{}, false],
    [{ OTEL_TRACES_EXPORTER: 'none' }, false],
    [{ OTEL_TRACES_EXPORTER: 'console' }, true],
    [{ OTEL_TRACES_EXPORTER: 'otlp' }, true],
    [{ OTEL_TRACES_EXPORTER: 'otlp', OTEL_SDK_DISABLED: 'true' }, false],
  ])('%j → %s', async (env, on) => {
    const config = loadConfig({ ...BASE, ...env });
    expect(tracingConfigured(config)).toBe(on);
    const tracing = await createDecisionTracing(config);
    expect(tracing !== undefined).toBe(on);
    await tracing?.shutdown();
  });
});

describe('with tracing off', () => {
  it('the control plane imports no OpenTelemetry module', { timeout: 60_000 }, async () => {
    // A fresh process loads the whole app and asks for a tracer with tracing off; a preload records every
    // module URL the loader resolves. (Before tracing.ts imported otel.ts lazily: 240 of ~800.)
    const script = `
      await import('./src/app.ts');
      const { createDecisionTracing } = await import('./src/tracing/tracing.ts');
      const { loadConfig } = await import('./src/config.ts');
      const tracing = await createDecisionTracing(loadConfig(${JSON.stringify(BASE)}));
      const urls = [...globalThis.__resolved];
      console.log(JSON.stringify({ tracing: tracing !== undefined, modules: urls.length, otel: urls.filter((u) => u.includes('@opentelemetry')) }));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', './test/fixtures/record-imports/register.mjs', '--import', 'tsx', '--input-type=module', '-e', script]);
    const out = JSON.parse(stdout.trim().split('\n').pop()!) as { tracing: boolean; modules: number; otel: string[] };
    expect(out.tracing).toBe(false);
    expect(out.modules).toBeGreaterThan(300);
    expect(out.otel).toEqual([]);
  });
});
