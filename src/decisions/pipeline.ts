import type { CallContext, Denial, PipelineStep } from './types.js';

/**
 * Runs the steps in order; the first denial wins. A step that throws denies the call with
 * DEPENDENCY_UNAVAILABLE naming the step: an error is never an allow (fail closed).
 */
export async function runPipeline(steps: readonly PipelineStep[], ctx: CallContext): Promise<Denial | undefined> {
  for (const step of steps) {
    const started = performance.now();
    let denial: Denial | undefined;
    try {
      denial = await step.run(ctx);
    } catch (err) {
      denial = { code: 'DEPENDENCY_UNAVAILABLE', message: `${step.name} failed (${(err as Error)?.message ?? String(err)}); denied to fail closed` };
    }
    const micros = (performance.now() - started) * 1000;
    ctx.trace.push(denial ? { step: step.name, verdict: 'deny', code: denial.code, message: denial.message, micros } : { step: step.name, verdict: 'pass', micros });
    if (denial) return denial;
  }
  return undefined;
}
