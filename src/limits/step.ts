import { type DependencyFailureReporter, seeLog } from '../decisions/dependency-failures.js';
import type { CallContext, Denial, HaltTrigger, PipelineStep } from '../decisions/types.js';
import { redisFailureWords } from '../redis/failure.js';
import type { GateOutcome, GateRequest, LimitAlert, RedisGate } from './gate.js';
import type { GateLimits } from './limits.js';
import type { CallSummary } from './summary.js';

// DESIGN.md §4 step 7 as a pipeline step: one Redis round trip for kills, session binding, halts,
// every limit and the cascade window. Halts fired by the script are already in force in Redis when it
// returns; this step then writes their Postgres record through `recordHalt` before answering, so the
// pipeline must NOT halt again for a denial from this step (doing so is harmless: halts are idempotent).

export interface HaltRecorder {
  halt(input: {
    tokenId: string;
    sessionId?: string;
    trigger: HaltTrigger;
    haltToken: boolean;
    summary: Record<string, unknown>;
  }): Promise<unknown>;
}

export interface GateStepDeps {
  gate: RedisGate;
  /** Writes the Postgres record of a halt the script fired (SessionService satisfies this). */
  sessions: HaltRecorder;
  /** Effective limits for this call (policy `limitsFor(policy, role, server)` mapped to GateLimits). */
  limitsFor(ctx: CallContext): GateLimits;
  /** Policy `halt_token_on`: triggers that halt the token and not only the session. */
  haltTokenOn(ctx: CallContext): ReadonlySet<HaltTrigger> | readonly HaltTrigger[];
  /** Break-glass kill keys that apply to this call (full Redis key names). */
  killKeys?(ctx: CallContext): readonly string[];
  /** Receives each 80% alert once per window (route to ctx.alerts.raise). Not awaited. */
  onAlert?(alert: LimitAlert, ctx: CallContext): void | Promise<void>;
  /** Logs failures to record a halt in Postgres (Redis already enforces it). */
  log?: { error(obj: object, msg: string): void; warn?(obj: object, msg: string): void };
  /** Raises the alert of a halt found in Redis after a check whose reply was lost (not awaited). */
  onLostReplyHalt?(ctx: CallContext, trigger: HaltTrigger, tokenHalted: boolean): void;
  /** Waits before each look after a lost reply (tests shorten them). */
  lostReplyRetryMs?: readonly number[];
  /** Where the driver's words of a failed gate check go (the log, rate-limited): never the denial. */
  failures?: DependencyFailureReporter;
}

/** When to look again after a gate check whose reply never came: Redis may still be stalled. */
const LOST_REPLY_RETRY_MS = [500, 2_000, 10_000, 30_000];
/** Looks pending at once, at most: a long stall under load must not pile up one per denied call without end. */
const LOST_REPLY_MAX_PENDING = 1_000;
let lostRepliesPending = 0;

/**
 * A check that timed out may still have run in Redis once it answered again: an allow the caller never
 * saw (its counters, last-calls entry and decision metadata), or a trigger that halted the session or the
 * token with no record in Postgres (operators would see the session active and no alert, while every
 * call of it is refused). Once Redis answers: give back what an allow counted, and record a halt found.
 */
let lostRepliesDroppedLoggedAt = 0;

async function afterLostReply(deps: GateStepDeps, req: GateRequest, ctx: CallContext): Promise<void> {
  if (lostRepliesPending >= LOST_REPLY_MAX_PENDING) {
    if (Date.now() - lostRepliesDroppedLoggedAt > 60_000) {
      lostRepliesDroppedLoggedAt = Date.now();
      deps.log?.error({ pending: lostRepliesPending, decision_id: req.decisionId }, `more than ${LOST_REPLY_MAX_PENDING} gate checks timed out and wait for a look afterwards; this one is not looked at: a halt it may have fired in Redis is not recorded (the reconcile never lifts it; GET /v1/sessions shows it active). Logged at most once a minute`);
    }
    return;
  }
  lostRepliesPending++;
  try {
    await lookAfterLostReply(deps, req, ctx);
  } finally {
    lostRepliesPending--;
  }
}

async function lookAfterLostReply(deps: GateStepDeps, req: GateRequest, ctx: CallContext): Promise<void> {
  for (const wait of deps.lostReplyRetryMs ?? LOST_REPLY_RETRY_MS) {
    await new Promise((r) => setTimeout(r, wait).unref());
    let found: Awaited<ReturnType<RedisGate['afterLostReply']>>;
    try {
      found = await deps.gate.afterLostReply(req);
    } catch {
      continue; // Redis still unavailable: look again later
    }
    const trigger = (found.sessionTrigger ?? found.tokenTrigger) as HaltTrigger | undefined;
    if (found.undone || trigger) deps.log?.warn?.({ decision_id: req.decisionId, undone: found.undone, halt: trigger ?? null }, 'a gate check whose reply was lost (Redis timeout) had run in Redis; what it counted was given back and a halt it fired is recorded');
    if (!trigger) return;
    try {
      const result = (await deps.sessions.halt({
        tokenId: req.tokenId,
        ...(found.sessionTrigger ? { sessionId: req.sessionId } : {}),
        trigger,
        haltToken: found.tokenTrigger !== undefined,
        summary: { decision_id: req.decisionId, server: req.server, tool: req.tool, message: `Halted in Redis (${trigger}) by a call whose answer was lost to a Redis timeout (the call was denied DEPENDENCY_UNAVAILABLE)` },
      })) as { already_halted?: unknown } | undefined;
      if (!result?.already_halted) deps.onLostReplyHalt?.(ctx, trigger, found.tokenTrigger !== undefined);
    } catch (err) {
      deps.log?.error({ err, decision_id: req.decisionId }, 'recording a halt found after a lost gate reply failed');
    }
    return;
  }
}

export const GATE_STEP_NAME = 'gate';

/**
 * The KILL_SWITCH denial from what the kill key holds (src/kills/mirror.ts: the kill's id, its target in
 * words, its reason, when it ends). Agents and their users read it: it names the kill the way operators
 * see it in the API and the UI, never the Redis key it is stored under.
 */
function killDenial(stored: string): Denial {
  let v: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(stored);
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) v = parsed as Record<string, unknown>;
  } catch {
    // a plain-text reason
  }
  const text = (x: unknown) => (typeof x === 'string' && x.trim() !== '' ? x.trim().replace(/\.+$/, '') : undefined);
  const id = text(v['id']);
  const target = text(v['target']);
  const reason = text(v['reason']) ?? text(v['message']) ?? (Object.keys(v).length === 0 ? text(stored) : undefined);
  const expiresAt = text(v['expires_at']);
  // A writer of an earlier version put the id into the reason and did not say when the kill ends.
  const ref = id && !reason?.includes(id) ? ` (kill ${id})` : '';
  const lift = id ? ` (DELETE /v1/kills/${id})` : '';
  const until = expiresAt
    ? `It ends at ${expiresAt}, unless an operator lifts it sooner${lift}.`
    : 'expires_at' in v
      ? `It stays in force until an operator lifts it${lift}.`
      : `It stays in force until it expires or an operator lifts it${lift}.`;
  return {
    code: 'KILL_SWITCH',
    message: `Stopped by an operator kill${target ? ` of ${target}` : ''}${reason ? `: ${reason}` : ''}${ref}. ${until}`,
    extra: id ? { kill_id: id } : {},
  };
}

const callWords = (ctx: CallContext) => `${ctx.input.server}/${ctx.input.tool}`;

function resumeHint(o: GateOutcome, ctx: CallContext): string {
  return o.tokenHalted
    ? `This token is halted too (every session, new ones included) until an operator resumes it: POST /v1/keys/${ctx.agent.id}/resume.`
    : `The session is halted until an operator resumes it: POST /v1/sessions/${ctx.input.session_id}/resume.`;
}

/** Turns the gate's answer into the pipeline's Denial (undefined when allowed). */
export function denialFor(o: GateOutcome, ctx: CallContext, limits?: GateLimits): Denial | undefined {
  const sid = ctx.input.session_id;
  const withCalls = (d: Denial): Denial => (o.lastCalls ? { ...d, extra: { ...d.extra, last_calls: o.lastCalls } } : d);
  switch (o.reason) {
    case 'OK':
      if (o.allowed) return undefined;
      break;
    case 'UNAVAILABLE': {
      // What happened in Redis's own terms (a timeout, no connection, an error answer such as OOM), never its text.
      const what = o.failure ? redisFailureWords(o.failure) : 'is unreachable or slower than REDIS_TIMEOUT_MS';
      return { code: 'DEPENDENCY_UNAVAILABLE', message: `Redis (sessions, halts and limits) ${what}, so the call is denied (fail closed). ${seeLog(ctx.decisionId)}` };
    }
    case 'NO_EPOCH':
      return { code: 'DEPENDENCY_UNAVAILABLE', message: 'Redis lost its state (restart or flush); halts and sessions are being reloaded from Postgres. Calls are denied until then; retry in a few seconds.' };
    case 'UNVERIFIED':
      return { code: 'DEPENDENCY_UNAVAILABLE', message: 'The connection to Redis was just (re)opened; halts and kills in force are being checked against Postgres. Calls are denied until then; retry in a few seconds.' };
    case 'KILL':
      return killDenial(o.kill?.reason ?? '');
    case 'SESSION_UNKNOWN':
      return { code: 'SESSION_UNKNOWN', message: `Session ${sid} was not issued to this token, or it has closed. Open one with POST /v1/sessions and use the session_id it returns.` };
    case 'SESSION_HALTED':
      if (o.tokenHalted) {
        return {
          code: 'SESSION_HALTED',
          message: `Session ${sid} is halted (${o.heldTrigger}), and so is this token; an operator resumes both with POST /v1/keys/${ctx.agent.id}/resume (it resumes the token's halted sessions too); resuming the session alone is not enough.`,
        };
      }
      return { code: 'SESSION_HALTED', message: `Session ${sid} is halted (${o.heldTrigger}) until an operator resumes it: POST /v1/sessions/${sid}/resume.` };
    case 'TOKEN_HALTED':
      return { code: 'SESSION_HALTED', message: `This token is halted (${o.heldTrigger}): every session of it, new ones included, is stopped until an operator resumes it: POST /v1/keys/${ctx.agent.id}/resume.` };
    case 'READ_ONLY':
      return withCalls({
        code: 'PERMISSION_DENIED',
        halt: 'WRITE_IN_READ_SESSION',
        message: `Session ${sid} was opened read-only and ${callWords(ctx)} is a ${ctx.call?.capability ?? 'write'} call. ${resumeHint(o, ctx)}`,
      });
    case 'UNDECLARED_SERVER':
      return withCalls({
        code: 'PERMISSION_DENIED',
        halt: 'UNAUTHORIZED_SERVER',
        message: `Session ${sid} declared servers [${o.session?.servers?.join(', ') ?? ''}]; ${ctx.input.server} is not one of them. ${resumeHint(o, ctx)}`,
      });
    case 'LIMIT': {
      const e = o.exceeded;
      if (!e) return { code: 'RATE_LIMITED', message: 'A limit was reached.' };
      if (e.halts) {
        return withCalls({
          code: 'SESSION_HALTED',
          halt: 'SESSION_LIMIT',
          message: `Limit reached: ${e.used}/${e.max} ${e.label}. Pause and report the calls made so far. ${resumeHint(o, ctx)}`,
          extra: { limit: e.name },
        });
      }
      const retryAfterS = Math.max(1, Math.ceil(e.retryAfterMs / 1000));
      return { code: 'RATE_LIMITED', message: `Rate limit: ${e.used}/${e.max} ${e.label}. Retry after ${retryAfterS} s.`, retryAfterS, extra: { limit: e.name } };
    }
    case 'CASCADE':
      return withCalls({
        code: 'CASCADE_WRITE',
        halt: 'CASCADE_WRITE',
        message: `${o.cascade?.writes ?? 3} writes to ${o.cascade?.resources.length ?? 3} different resources (${o.cascade?.resources.join(', ') ?? ''}) within this token's last ${limits?.cascade?.windowCalls ?? 5} calls: stop and confirm the chain was intended. ${resumeHint(o, ctx)}`,
      });
  }
  // A reply this code does not know (a script of another version loaded under the same name, a damaged
  // reply) is never an allow.
  return { code: 'DEPENDENCY_UNAVAILABLE', message: `The Redis gate gave an answer this control plane does not understand (${String(o.reason).slice(0, 40)}), so the call is denied (fail closed). Check that every replica runs the same version.` };
}

export function createGateStep(deps: GateStepDeps): PipelineStep {
  return {
    name: GATE_STEP_NAME,
    async run(ctx) {
      const call = ctx.call;
      if (!call) return { code: 'DEPENDENCY_UNAVAILABLE', message: 'The call was not resolved from the policy before the Redis step (internal ordering error); denied.' };
      let limits: GateLimits;
      let haltTokenOn: ReadonlySet<HaltTrigger> | readonly HaltTrigger[];
      let killKeys: readonly string[];
      try {
        limits = deps.limitsFor(ctx);
        haltTokenOn = deps.haltTokenOn(ctx);
        killKeys = deps.killKeys?.(ctx) ?? [];
      } catch (err) {
        return { code: 'DEPENDENCY_UNAVAILABLE', message: `Limits for this call could not be determined (${(err as Error).message}); denied.` };
      }
      const req: GateRequest = {
        decisionId: ctx.decisionId,
        tokenId: ctx.agent.id,
        sessionId: ctx.input.session_id,
        server: call.server,
        tool: call.tool,
        capability: call.capability,
        resourceIds: call.resourceIds,
        arguments: ctx.input.arguments,
        limits,
        haltTokenOn,
        killKeys,
        dryRun: ctx.dryRun,
      };
      const o = await deps.gate.check(req);
      if (o.allowed && !ctx.dryRun) ctx.undoGate = (code) => deps.gate.undo(req, o.now, code);
      if (o.reason === 'UNAVAILABLE') {
        // The driver's words (an OOM answer, a timeout, a closed connection) for the operator, under the decision id.
        deps.failures?.report('Redis', o.cause ?? new Error(o.error ?? 'unknown'), { decision_id: ctx.decisionId, step: GATE_STEP_NAME, ...(ctx.dryRun ? { during: 'explain' } : {}) });
        // Only a timeout leaves a script that may still run later: a refused command never ran, an error answer ended it.
        if (o.failure?.kind === 'timeout' && !ctx.dryRun) void afterLostReply(deps, req, ctx);
      }
      if (o.session) ctx.session = o.session;
      Object.assign(ctx.limits, o.limits);
      ctx.warnings.push(...o.warnings);
      if (!ctx.dryRun && deps.onAlert) {
        for (const alert of o.alerts) {
          Promise.resolve(deps.onAlert(alert, ctx)).catch((err: unknown) => deps.log?.error({ err }, 'raising a limit alert failed'));
        }
      }
      const denial = denialFor(o, ctx, limits);
      if (denial?.halt && o.trigger && !ctx.dryRun) {
        const summary = {
          message: denial.message,
          decision_id: ctx.decisionId,
          server: call.server,
          tool: call.tool,
          calls_so_far: o.limits,
          last_calls: o.lastCalls ?? ([] as CallSummary[]),
        };
        try {
          await deps.sessions.halt({ tokenId: ctx.agent.id, sessionId: ctx.input.session_id, trigger: o.trigger, haltToken: o.tokenHalted === true, summary });
        } catch (err) {
          // Redis already enforces the halt; the service retries the Postgres record.
          deps.log?.error({ err, session_id: ctx.input.session_id }, 'recording a halt in Postgres failed');
        }
      }
      return denial;
    },
  };
}
