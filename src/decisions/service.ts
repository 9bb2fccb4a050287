import { v7 as uuidv7 } from 'uuid';
import { joinSentences } from '../sentences.js';
import type { AgentPrincipal, GatewayPrincipal } from '../tokens/authenticator.js';
import { type DependencyFailureReporter, seeLog } from './dependency-failures.js';
import { runPipeline } from './pipeline.js';
import type { DecisionAnswer } from './schemas.js';
import type { CallContext, DecisionInput, Denial, PipelineStep } from './types.js';

export interface Outcome {
  decision: 'allow' | 'deny';
  code: string;
  message: string;
  /** The kill-switch trigger a denial fired, and extra answer fields (approval_id ...), for the audit row. */
  halt?: Denial['halt'];
  extra?: Record<string, unknown>;
}

/** What the decision service needs from the other domains; wired in decisions/plugin.ts. */
export interface DecisionPorts {
  /** The pipeline steps in DESIGN.md §4 order (policy, tool pin, flags, policy rules, scopes, Redis). */
  steps(): readonly PipelineStep[];
  /** Applies a kill-switch trigger (session and, by policy, token); returns the session as it now is. */
  halt(ctx: CallContext, denial: Denial): Promise<DecisionAnswer['session']>;
  /** The INTENT row of an allow: resolves once durable (Postgres or spool); rejects if neither works. */
  recordIntent(ctx: CallContext, outcome: Outcome): Promise<void>;
  /** The INTENT row of a denial: queued; the answer does not wait (nothing runs). */
  enqueueIntent(ctx: CallContext, outcome: Outcome): void;
  /** The INTENT row of a call denied before its agent token could be checked: queued like a denial's. */
  enqueueUncheckedIntent(call: UncheckedCall, outcome: Pick<Outcome, 'code' | 'message'>): void;
  /** Alerts for denials that operators should see (halts, kill switch) and limit warnings. */
  raiseAlerts(ctx: CallContext, denial: Denial | undefined): void;
  /**
   * The gate let the call through but it is denied after all (`code`: a step after the gate, or its INTENT
   * could not be recorded): gives back what the steps spent for it (the gate's counters and last-calls
   * entry, an approval). Never rejects.
   */
  undoAllow?(ctx: CallContext, code: string): Promise<void>;
  /** Where the driver errors behind DEPENDENCY_UNAVAILABLE go (the log, rate-limited): never the message. */
  failures?: DependencyFailureReporter;
}

/** A call whose agent token could not be checked: only the gateway is known; the rest is claimed. */
export interface UncheckedCall {
  decisionId: string;
  gateway: GatewayPrincipal;
  input: DecisionInput;
  ip: string;
  /** The presented token's type by its prefix (well-formed, checksum verified), if it has one. */
  tokenType: AgentPrincipal['tokenType'] | undefined;
}

/** What observers (metrics, tracing) learn about each answered decision. */
export interface DecisionObservation {
  answer: DecisionAnswer;
  /** Undefined when the answer came before the pipeline (the credential store was unavailable). */
  call: CallContext | undefined;
  /** performance.now() when decide() started, and how long it took, in ms. */
  startedAt: number;
  durationMs: number;
  /** µs spent halting the session after a denial that fires a trigger. */
  haltMicros?: number;
  /** µs until the INTENT row of an allow was durable (Postgres or spool). */
  auditMicros?: number;
}

/** Runs synchronously after each decision: must be quick and must not throw. */
export type DecisionObserver = (o: DecisionObservation) => void;

export function newCallContext(p: {
  gateway: GatewayPrincipal;
  agent: AgentPrincipal;
  input: DecisionInput;
  ip: string;
  dryRun?: boolean;
}): CallContext {
  return {
    decisionId: uuidv7(),
    receivedAt: Date.now(),
    gateway: p.gateway,
    agent: p.agent,
    input: p.input,
    ip: p.ip,
    flagsEvaluated: [],
    limits: {},
    warnings: [],
    dryRun: p.dryRun ?? false,
    trace: [],
  };
}

/** `decide`: runs the pipeline, applies halts, writes the INTENT row and shapes the answer. */
export class DecisionService {
  private readonly observers: DecisionObserver[] = [];

  constructor(private readonly ports: DecisionPorts) {}

  /** Adds an observer told about every answered decision (metrics, tracing). */
  observe(observer: DecisionObserver): void {
    this.observers.push(observer);
  }

  async decide(ctx: CallContext): Promise<DecisionAnswer> {
    const startedAt = performance.now();
    const timing: Pick<DecisionObservation, 'haltMicros' | 'auditMicros'> = {};
    const answer = await this.run(ctx, timing);
    if (this.observers.length > 0) this.notify({ answer, call: ctx, startedAt, durationMs: performance.now() - startedAt, ...timing });
    return answer;
  }

  /**
   * The answer when the agent token cannot even be checked (credential store down): fail closed, with a
   * decision id and an INTENT row like any denial (queued: nothing runs), observed like any decision.
   */
  unavailable(p: Omit<UncheckedCall, 'decisionId'>, message: string): DecisionAnswer {
    const startedAt = performance.now();
    const call: UncheckedCall = { decisionId: uuidv7(), ...p };
    const answer: DecisionAnswer = { decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE', decision_id: call.decisionId, message, limits: {} };
    this.ports.enqueueUncheckedIntent(call, { code: answer.code, message });
    this.notify({ answer, call: undefined, startedAt, durationMs: performance.now() - startedAt });
    return answer;
  }

  private notify(o: DecisionObservation): void {
    for (const observer of this.observers) {
      try {
        observer(o);
      } catch {
        // An observer is never a reason to change or fail an answer.
      }
    }
  }

  private async run(ctx: CallContext, timing: Pick<DecisionObservation, 'haltMicros' | 'auditMicros'>): Promise<DecisionAnswer> {
    const denial = await runPipeline(this.ports.steps(), ctx, this.ports.failures);
    let session: DecisionAnswer['session'] = ctx.session ? { id: ctx.session.id, state: ctx.session.state, trigger: ctx.session.trigger ?? null } : undefined;
    if (denial?.halt) {
      const haltStarted = performance.now();
      try {
        session = await this.ports.halt(ctx, denial);
      } catch (err) {
        // The call is denied either way; the halt will be retried by the next trigger or an operator.
        this.ports.failures?.report('the halt (Redis or Postgres)', err, { decision_id: ctx.decisionId, trigger: denial.halt });
        denial.message = joinSentences(denial.message, `The kill-switch halt (${denial.halt}) could not be applied just now (Redis or Postgres did not answer): stop, and report decision ${ctx.decisionId} to an operator, who finds the cause in the control plane's log.`);
      }
      timing.haltMicros = (performance.now() - haltStarted) * 1000;
    }
    this.ports.raiseAlerts(ctx, denial);
    if (denial) {
      // Denied after the gate counted it (an approval already spent elsewhere): it did not run.
      if (ctx.undoGate) await this.ports.undoAllow?.(ctx, denial.code).catch(() => {});
      this.ports.enqueueIntent(ctx, { decision: 'deny', code: denial.code, message: denial.message, ...(denial.halt ? { halt: denial.halt } : {}), ...(denial.extra ? { extra: denial.extra } : {}) });
      return this.answer(ctx, denial, session);
    }
    const message = `${ctx.call?.server ?? ctx.input.server}/${ctx.input.tool} allowed`;
    const auditStarted = performance.now();
    try {
      await this.ports.recordIntent(ctx, { decision: 'allow', code: 'OK', message });
    } catch (err) {
      // No durable INTENT, no call: the audit trail must never miss an allowed action.
      this.ports.failures?.report('the audit trail', err, { decision_id: ctx.decisionId });
      const unavailable: Denial = {
        code: 'DEPENDENCY_UNAVAILABLE',
        message: `The audit trail could not record this call (neither Postgres nor this replica's local spool took its row), and no call runs unrecorded: denied to fail closed. ${seeLog(ctx.decisionId)}`,
      };
      await this.ports.undoAllow?.(ctx, unavailable.code).catch(() => {});
      return this.answer(ctx, unavailable, session);
    } finally {
      timing.auditMicros = (performance.now() - auditStarted) * 1000;
    }
    return this.answer(ctx, undefined, session);
  }

  private answer(ctx: CallContext, denial: Denial | undefined, session: DecisionAnswer['session']): DecisionAnswer {
    const out: DecisionAnswer = {
      decision: denial ? 'deny' : 'allow',
      code: denial ? denial.code : 'OK',
      decision_id: ctx.decisionId,
      message: denial ? denial.message : `${ctx.input.server}/${ctx.input.tool} allowed`,
      limits: ctx.limits,
    };
    if (session) out.session = session;
    if (ctx.warnings.length > 0) out.warning = ctx.warnings.join('; ');
    if (denial?.retryAfterS !== undefined) out.retry_after_s = denial.retryAfterS;
    const approvalId = denial?.extra?.['approval_id'];
    if (typeof approvalId === 'string') out.approval_id = approvalId;
    return out;
  }
}
