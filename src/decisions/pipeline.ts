import { type DependencyFailureReporter, seeLog } from './dependency-failures.js';
import type { CallContext, Denial, PipelineStep } from './types.js';

/**
 * Runs the steps in order; the first denial wins. A step that throws denies the call with
 * DEPENDENCY_UNAVAILABLE naming what it depends on: an error is never an allow (fail closed). The error
 * itself goes to `failures` (the log), never into the message: agents and the audit trail read that.
 */
export async function runPipeline(steps: readonly PipelineStep[], ctx: CallContext, failures?: DependencyFailureReporter): Promise<Denial | undefined> {
  for (const step of steps) {
    const started = performance.now();
    let denial: Denial | undefined;
    try {
      // Most steps answer synchronously: awaiting only real promises spares a promise and a microtask
      // turn per step (eight steps per decision).
      const verdict = step.run(ctx);
      denial = isPromise(verdict) ? await verdict : verdict;
    } catch (err) {
      denial = stepFailed(step, ctx);
      failures?.report(step.dependency ?? `the ${step.name} step`, err, { decision_id: ctx.decisionId, step: step.name });
    }
    const micros = (performance.now() - started) * 1000;
    ctx.trace.push(denial ? { step: step.name, verdict: 'deny', code: denial.code, message: denial.message, micros } : { step: step.name, verdict: 'pass', micros });
    if (denial) return denial;
  }
  return undefined;
}

/** What the agent and the audit trail learn when a step throws: what was unavailable, and what to do. */
export function stepFailed(step: PipelineStep, ctx: CallContext): Denial {
  const what = step.dependency
    ? `${step.dependency} did not answer the ${step.name} check`
    : `The ${step.name} check failed unexpectedly (an internal error, not a dependency)`;
  return { code: 'DEPENDENCY_UNAVAILABLE', message: `${what}, so the call is denied (fail closed). ${seeLog(ctx.decisionId)}` };
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | undefined)?.then === 'function';
}
