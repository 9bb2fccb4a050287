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
      // Most steps answer synchronously: awaiting only real promises spares a promise and a microtask
      // turn per step (eight steps per decision).
      const verdict = step.run(ctx);
      denial = isPromise(verdict) ? await verdict : verdict;
    } catch (err) {
      denial = { code: 'DEPENDENCY_UNAVAILABLE', message: `${step.name} failed (${(err as Error)?.message ?? String(err)}); denied to fail closed` };
    }
    const micros = (performance.now() - started) * 1000;
    ctx.trace.push(denial ? { step: step.name, verdict: 'deny', code: denial.code, message: denial.message, micros } : { step: step.name, verdict: 'pass', micros });
    if (denial) return denial;
  }
  return undefined;
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | undefined)?.then === 'function';
}
