import type { FastifyInstance } from 'fastify';
import type { RaiseAlert } from '../alerts/service.js';
import type { Alert } from '../alerts/store.js';
import { approvalRoutes, createApprovalSteps, startApprovals } from '../approvals/index.js';
import { type CallResult, intentRow, resultRow, uncheckedIntentRow } from '../audit/rows.js';
import type { AppContext } from '../context.js';
import { createFlagStep } from '../flags/step.js';
import { grantRoutes } from '../grants/routes.js';
import { GrantService } from '../grants/service.js';
import { incidentRoutes } from '../incidents/routes.js';
import { killsPlugin } from '../kills/plugin.js';
import type { LimitAlert } from '../limits/gate.js';
import { fromPolicyLimitsShared, limitOfServer } from '../limits/limits.js';
import { createGateStep } from '../limits/step.js';
import { type CallOutcome, type CallSummary, outcomeError, summarizeArguments, summarizeTool } from '../limits/summary.js';
import { checkPolicy, haltsToken, limitsFor, resolveCall, scopeCheck } from '../policy/index.js';
import { joinSentences } from '../sentences.js';
import { toolRoutes } from '../tools/routes.js';
import { ToolRegistry } from '../tools/service.js';
import { createToolPinStep } from '../tools/step.js';
import { Callability } from './callability.js';
import { DependencyFailureLog } from './dependency-failures.js';
import { Explainer } from './explain.js';
import { ResultService } from './results.js';
import { decisionRoutes } from './routes.js';
import type { DecisionAnswer } from './schemas.js';
import { DecisionService } from './service.js';
import type { CallContext, Denial, HaltTrigger, PipelineStep } from './types.js';

declare module '../context.js' {
  interface AppContext {
    tools: ToolRegistry;
    grants: GrantService;
    decisions: DecisionService;
    results: ResultService;
    explainer: Explainer;
    callability: Callability;
  }
}

/** DESIGN.md §4 steps 3 to 7, in order; the first denial wins. */
export function buildSteps(ctx: AppContext, failures?: DependencyFailureLog): PipelineStep[] {
  const { policy, grants } = ctx;
  // The approval queue (src/approvals): checked here, spent after the gate (see createApprovalSteps).
  const approval = createApprovalSteps(ctx.approvals);
  return [
    {
      name: 'policy-resolve',
      run(call) {
        const resolved = resolveCall(policy.current(), call.input);
        if ('denial' in resolved) return resolved.denial;
        call.call = resolved.call;
        return undefined;
      },
    },
    createToolPinStep(ctx.tools),
    createFlagStep(ctx.flags),
    {
      name: 'policy-rules',
      // Only to open a production grant request in the approval queue (approvals.requestGrant).
      dependency: 'The approval queue (Redis or Postgres)',
      run(call) {
        const production = grants.has('production', call.agent.id, call.input.session_id);
        // What the calling gateway reported it runs the server with counts beside the policy's identity
        // (in memory with the tool pins); explain, which has no gateway, checks every gateway's report.
        const reported = ctx.tools.reportedUpstreams(call.call!.server, call.dryRun ? undefined : call.gateway.id);
        const denial = checkPolicy(policy.current(), call.agent, call.call!, call.input, { production }, reported);
        // A missing grant goes to the approval queue (one request per token and session), so an operator
        // can grant it there; explain opens nothing.
        if (denial?.code === 'HUMAN_AUTHORIZATION_REQUIRED' && !call.dryRun) return ctx.approvals.requestGrant(call, denial);
        return denial;
      },
    },
    approval.check,
    { name: 'scopes', run: (call) => scopeCheck(call.agent, call.call!) },
    createGateStep({
      gate: ctx.gate,
      sessions: ctx.sessions,
      limitsFor: (call) => fromPolicyLimitsShared(limitsFor(policy.current(), call.agent.role, call.call!.server)),
      haltTokenOn: () => policy.current().haltTokenOn,
      // Break-glass kills (src/kills): read in the same Redis round trip as halts and limits.
      killKeys: (call) => ctx.kills.keysFor(call),
      onLostReplyHalt: (call, trigger, tokenHalted) =>
        void ctx.alerts.raise({
          kind: 'SESSION_HALTED',
          severity: 'critical',
          message: `Kill-switch trigger ${trigger} fired in Redis by a call whose answer was lost to a Redis timeout (it was denied DEPENDENCY_UNAVAILABLE); ${tokenHalted ? `token ${call.agent.displayPrefix}… is halted` : `session ${call.input.session_id} is halted`} until an operator resumes it`,
          token_id: call.agent.id,
          project_id: call.agent.projectId,
          session_id: call.input.session_id,
          server: call.call?.server ?? call.input.server,
          details: { decision_id: call.decisionId, trigger, lost_reply: true },
        }),
      // The gate reports a limit once per window (a minute, a day, a session's total): a busy agent passes
      // 80% of a per-minute limit every minute, and one that opens a session per task does in every session.
      // One open alert per token and limit (and server, for a server's limit) counts the windows in place,
      // rather than a row, a stream message and a webhook call each time (~1,440 a day per busy agent).
      onAlert: (alert, call) => {
        const server = call.call?.server ?? call.input.server;
        const match = { token_id: call.agent.id, detail: 'limit', value: alert.limit, ...(limitOfServer(alert.limit) ? { server } : {}) };
        void ctx.alerts.raiseOrUpdate(limitWarningAlert(alert, call), match, (open) => limitWarningAlert(alert, call, open));
      },
      log: ctx.log,
      ...(failures ? { failures } : {}),
    }),
    approval.use,
  ];
}

const GATE_STEP = 'gate';

/** What a KILL_SWITCH denial came from: an operator kill (its id) or the first Unleash flag off. */
function killSwitchCause(call: CallContext, denial: Denial): { detail: 'kill_id' | 'flag'; value: string } | undefined {
  const killId = denial.extra?.['kill_id'];
  if (typeof killId === 'string') return { detail: 'kill_id', value: killId };
  const flag = call.flagsEvaluated.find((f) => !f.enabled)?.name;
  return flag === undefined ? undefined : { detail: 'flag', value: flag };
}

/** Token ids a KILL_SWITCH alert lists (numbers.tokens counts them: at most this many). */
const KILL_SWITCH_TOKEN_IDS = 20;

/** The KILL_SWITCH alert of a flag or kill and project: new, or `open` with this denial counted in. */
function killSwitchAlert(by: { detail: 'kill_id' | 'flag'; value: string }, call: CallContext, denial: Denial, open?: Alert): RaiseAlert {
  const now = new Date().toISOString();
  const listed = Array.isArray(open?.details['agent_ids']) ? (open.details['agent_ids'] as string[]) : [];
  const tokenIds = listed.includes(call.agent.id) || listed.length >= KILL_SWITCH_TOKEN_IDS ? listed : [...listed, call.agent.id];
  const denied = (open?.numbers['denied'] ?? 0) + 1;
  const since = typeof open?.details['first_denied_at'] === 'string' ? open.details['first_denied_at'] : now;
  const tokens = `${tokenIds.length}${tokenIds.length >= KILL_SWITCH_TOKEN_IDS ? ' or more' : ''} token${tokenIds.length === 1 ? '' : 's'}`;
  const what = by.detail === 'flag' ? `Flag ${by.value}` : `Kill ${by.value}`;
  return {
    kind: 'KILL_SWITCH',
    severity: 'warning',
    project_id: call.agent.projectId,
    message: `${what} denied calls of ${tokens} of project ${call.agent.projectId} since ${since} (${denied} counted, at most one per token and minute). Last: ${denial.message}`,
    numbers: { denied, tokens: tokenIds.length },
    details: {
      [by.detail]: by.value,
      agent_ids: tokenIds,
      first_denied_at: since,
      last_denied_at: now,
      decision_id: call.decisionId,
      code: denial.code,
      server: call.call?.server ?? call.input.server,
      tool: call.input.tool,
    },
  };
}

/** The RATE_LIMIT_WARNING of a token and limit: new, or `open` with this window counted in. */
function limitWarningAlert(alert: LimitAlert, call: CallContext, open?: Alert): RaiseAlert {
  const now = new Date().toISOString();
  const windows = (open?.numbers['windows'] ?? 0) + 1;
  const since = typeof open?.details['first_at'] === 'string' ? open.details['first_at'] : now;
  const counted = windows === 1 ? '' : `; ${windows} windows reached it since ${since} (counted in this alert until it is acknowledged)`;
  return {
    kind: 'RATE_LIMIT_WARNING',
    severity: 'warning',
    message: `${alert.message} (token ${call.agent.displayPrefix}…, session ${call.input.session_id})${counted}`,
    token_id: call.agent.id,
    project_id: call.agent.projectId,
    session_id: call.input.session_id,
    server: call.call?.server ?? call.input.server,
    numbers: { used: alert.used, max: alert.max, percent: alert.percent, windows },
    details: { limit: alert.limit, first_at: since, last_at: now, last_session_id: call.input.session_id },
  };
}

/** Registers the decision API, tool reports and approvals of definitions, and grants. */
export async function decisionsPlugin(app: FastifyInstance): Promise<void> {
  const { ctx } = app;
  ctx.tools = new ToolRegistry(ctx.pool, ctx.redis, undefined, ctx.log);
  ctx.tools.setAdminRecorder((a) => ctx.audit.recordAdmin(a));
  await ctx.tools.start();
  ctx.closers.push(() => ctx.tools.stop());
  ctx.grants = new GrantService(ctx.pool, ctx.redis, ctx.config.grantMaxSeconds, ctx.clock.now);
  await ctx.grants.start();
  ctx.closers.push(() => ctx.grants.stop());
  ctx.callability = new Callability(ctx.policy, ctx.grants);
  ctx.approvals = await startApprovals(ctx);
  // Kills before the steps: the gate step reads ctx.kills.
  await killsPlugin(app);
  await app.register(incidentRoutes);

  // One per app: decisions and explain share its rate limit, so an outage logs once per interval.
  const failures = new DependencyFailureLog(ctx.log);
  ctx.dependencyFailures = failures;
  const steps = buildSteps(ctx, failures);
  // Denials whose trigger found the token (or the session) halted already: a policy change that removes a
  // server from a role makes every call of a halted agent fire UNAUTHORIZED_SERVER again, before the gate
  // would answer SESSION_HALTED. One halt, one alert: these raise none.
  const repeatedHalts = new WeakSet<Denial>();
  const lastCallsView = async (call: CallContext, denial: Denial): Promise<CallSummary[]> => {
    const fromGate = denial.extra?.['last_calls'];
    if (Array.isArray(fromGate)) return fromGate as CallSummary[];
    return ctx.sessions.lastCalls(call.input.session_id, 3).catch(() => []);
  };

  ctx.decisions = new DecisionService({
    steps: () => steps,
    failures,
    async halt(call, denial): Promise<DecisionAnswer['session']> {
      const trigger = denial.halt!;
      const gateFired = call.trace.at(-1)?.step === GATE_STEP;
      if (!gateFired) {
        // Denials of the earlier steps: record the call on the session, then halt (the gate step halts its own).
        await ctx.sessions
          .pushCall(call.agent.id, call.input.session_id, { id: call.decisionId, server: call.input.server, tool: summarizeTool(call.input.tool), args: summarizeArguments(call.input.arguments), decision: 'deny', code: denial.code })
          .catch(() => false);
        const result = await ctx.sessions.halt({
          tokenId: call.agent.id,
          sessionId: call.input.session_id,
          trigger,
          haltToken: haltsToken(ctx.policy.current(), trigger),
          summary: { decision_id: call.decisionId, code: denial.code, message: denial.message, server: call.input.server, tool: call.input.tool },
        });
        if (!result.session_halted && !result.token_halted) return undefined;
        // The session named is not this token's (the halt script checks the owner): only the token was
        // halted. Nothing of that session (its state, its last calls) is this caller's to see.
        if (!result.session_halted) call.sessionNotBound = true;
        const earlier = result.already_halted;
        if (earlier) {
          repeatedHalts.add(denial);
          const since = earlier.since.toISOString();
          denial.message = joinSentences(
            denial.message,
            result.token_halted
              ? `This token is halted (${earlier.trigger}) since ${since}: every session of it, new ones included, is stopped until an operator resumes it: POST /v1/keys/${call.agent.id}/resume.`
              : `Session ${call.input.session_id} is halted (${earlier.trigger}) since ${since} until an operator resumes it: POST /v1/sessions/${call.input.session_id}/resume.`,
          );
          if (call.sessionNotBound) return undefined;
          return { id: call.input.session_id, state: 'halted', trigger: earlier.trigger as HaltTrigger, last_calls: await lastCallsView(call, denial) };
        }
        // The step that denied wrote why; the agent and the operator also need to know what now stops.
        denial.message = joinSentences(
          denial.message,
          result.token_halted
            ? `This token is now halted (${trigger}): every session of it, new ones included, is stopped until an operator resumes it: POST /v1/keys/${call.agent.id}/resume.`
            : `Session ${call.input.session_id} is now halted (${trigger}) until an operator resumes it: POST /v1/sessions/${call.input.session_id}/resume.`,
        );
        if (call.sessionNotBound) return undefined;
      }
      return { id: call.input.session_id, state: 'halted', trigger, last_calls: await lastCallsView(call, denial) };
    },
    recordIntent: (call, outcome) => ctx.audit.recordIntent(intentRow(call, outcome)),
    enqueueIntent: (call, outcome) => ctx.audit.enqueue(intentRow(call, outcome)),
    enqueueUncheckedIntent: (call, outcome) => ctx.audit.enqueue(uncheckedIntentRow({ ...call, outcome })),
    async undoAllow(call, code) {
      const [undone] = await Promise.all([
        call.undoGate?.(code).catch((err: unknown) => {
          ctx.log.warn({ err: (err as Error).message, decision_id: call.decisionId }, 'could not give back what the gate counted for a call denied after it; its counters and last-calls entry keep it as allowed');
          return false;
        }),
        ctx.approvals.release(call),
      ]);
      // The denial's answer and INTENT row show the counts as they now are: this call no longer counts.
      if (undone) for (const use of Object.values(call.limits)) use.used = Math.max(0, use.used - 1);
    },
    raiseAlerts(call, denial) {
      if (!denial) return;
      const base = {
        token_id: call.agent.id,
        project_id: call.agent.projectId,
        session_id: call.sessionNotBound ? null : call.input.session_id,
        server: call.call?.server ?? call.input.server,
        details: { decision_id: call.decisionId, code: denial.code, tool: call.input.tool, ...(call.sessionNotBound ? { claimed_session_id: call.input.session_id } : {}) },
      };
      if (denial.halt) {
        if (repeatedHalts.has(denial)) return;
        void ctx.alerts.raise({ ...base, kind: 'SESSION_HALTED', severity: 'critical', message: `Kill-switch trigger ${denial.halt}: ${denial.message}`, details: { ...base.details, trigger: denial.halt } });
      } else if (denial.code === 'KILL_SWITCH') {
        const by = killSwitchCause(call, denial);
        if (!by) {
          // A kill stored without its id (an earlier version's writer): one alert per token and message per minute.
          void ctx.alerts.raiseOnce(`kill:${call.agent.id}:${denial.message.slice(0, 80)}`, 60, { ...base, kind: 'KILL_SWITCH', severity: 'warning', message: denial.message });
          return;
        }
        // A killed capability is hit by every call of every token: one open alert per flag (or kill) and
        // project, counted up in place, not one per token and minute (a soak test: ~170 a minute for 200
        // tokens). Still reported at most once per token and minute, so its Postgres write stays rare.
        void ctx.alerts.firstInWindow(`kill:${call.agent.id}:${by.detail}:${by.value}`, 60).then((first) => {
          if (!first) return;
          const match = { project_id: call.agent.projectId, detail: by.detail, value: by.value };
          return ctx.alerts.raiseOrUpdate(killSwitchAlert(by, call, denial), match, (open) => killSwitchAlert(by, call, denial, open));
        });
      }
    },
  });

  ctx.explainer = new Explainer(ctx.pool, () => steps, (trigger) => haltsToken(ctx.policy.current(), trigger), ctx.sessions, failures, ctx.clock.now);

  ctx.results = new ResultService({
    decisionMeta: (id) => ctx.gate.decisionMeta(id),
    claimResult: (id, record) => ctx.gate.claimResult(id, record),
    releaseResult: (id) => ctx.gate.releaseResult(id),
    rulesFor(agent, meta) {
      const l = limitsFor(ctx.policy.current(), agent.role, meta.server);
      return {
        largeResultBytes: l.largeResultBytes,
        largeResultsAllowed: l.largeResultsAllowed || ctx.grants.has('large_results', agent.id, meta.sessionId),
        haltTokenOn: ctx.policy.current().haltTokenOn,
        maxRows: l.server.maxRowsReturned ?? undefined,
        maxExecutionSeconds: l.server.maxExecutionTimeSeconds ?? undefined,
      };
    },
    largeResultsGrantedAt: (agent, meta) => ctx.grants.coveredAt('large_results', agent.id, meta.sessionId, new Date(meta.at)),
    async halt({ agent, sessionId, trigger, summary }) {
      await ctx.sessions.halt({ tokenId: agent.id, sessionId, trigger, haltToken: haltsToken(ctx.policy.current(), trigger), summary });
      void ctx.alerts.raise({ kind: 'SESSION_HALTED', severity: 'critical', message: `Kill-switch trigger ${trigger} after a call returned`, token_id: agent.id, project_id: agent.projectId, session_id: sessionId, details: { ...summary, trigger } });
      return { id: sessionId, state: 'halted', trigger, last_calls: await ctx.sessions.lastCalls(sessionId, 3).catch(() => []) };
    },
    recordResult({ decisionId, agent, gateway, meta, result, trigger, credentialEnded }) {
      const callResult: CallResult = { status: result.status, duration_ms: result.duration_ms, result_bytes: result.result_bytes };
      if (result.rows !== undefined) callResult.rows = result.rows;
      if (result.error !== undefined) callResult.error = result.error;
      if (result.summary !== undefined) callResult.summary = result.summary;
      ctx.audit.enqueue(
        resultRow(
          { decisionId, agent, gateway, server: meta.server, tool: meta.tool, capability: meta.capability, sessionId: meta.sessionId },
          callResult,
          trigger ? { code: trigger, message: `after-call trigger ${trigger}`, halt: trigger } : undefined,
          credentialEnded,
        ),
      );
      // What GET /v1/sessions/:id shows as the call's outcome (the CallOutcome fields of its schema).
      const outcome: CallOutcome = { status: result.status, duration_ms: result.duration_ms, result_bytes: result.result_bytes };
      if (result.rows !== undefined) outcome.rows = result.rows;
      if (result.error !== undefined) outcome.error = outcomeError(result.error);
      void ctx.gate.recordOutcome(decisionId, outcome).catch(() => false);
    },
  });

  await app.register(decisionRoutes);
  await app.register(toolRoutes);
  await app.register(grantRoutes);
  await app.register(approvalRoutes);
}
