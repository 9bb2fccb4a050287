import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { redactText } from '../audit/redact.js';
import { agentTokenHeader, requireGateway, requireOperator } from '../http/auth.js';
import { requireShallow } from '../http/json-depth.js';
import { ErrorBody } from '../http/schemas.js';
import { parseCredential } from '../tokens/format.js';
import { withoutUnsafeCharacters } from '../tokens/names.js';
import { DenialLogBudget } from './denial-log.js';
import { DecisionAnswer, DecisionBody, DecisionIdParams, ExplainAnswer, ExplainBody, ResultAnswer, ResultBody } from './schemas.js';
import { newCallContext } from './service.js';
import type { DecisionInput } from './types.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 413: ErrorBody };

function toInput(body: DecisionBody): DecisionInput {
  const input: DecisionInput = { server: body.server, tool: body.tool, arguments: body.arguments, session_id: body.session_id };
  if (body.environment) input.environment = body.environment;
  if (body.tool_hash) input.tool_hash = body.tool_hash;
  if (body.resources) input.resources = body.resources;
  if (body.annotations) input.annotations = body.annotations;
  if (body.client) input.client = body.client;
  return input;
}

/**
 * An upstream's error and the result summary keep their line feeds and tabs, not escape sequences or
 * bidirectional overrides (they reach audit rows, alerts and terminals). Made spaces, not refused: a 400
 * would lose the result report. A retry is cleaned the same way, so it still repeats the first report.
 */
function withSafeText(body: ResultBody): ResultBody {
  const out = { ...body };
  if (out.error !== undefined) out.error = withoutUnsafeCharacters(out.error, { keepLines: true });
  if (out.summary !== undefined) out.summary = withoutUnsafeCharacters(out.summary, { keepLines: true });
  return out;
}

/** The gateway routes of DESIGN.md §3 that answer decisions, and the operator's explain. */
export const decisionRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  // An agent token that cannot be checked is answered by the handler: a denial, audited (it needs the body).
  const decisionGateway = requireGateway(ctx.auth, { unavailable: 'handler' });
  // A token revoked or expired while its call ran: the call ran, so its RESULT (and the after-call
  // triggers) still count. Found by its hash; the decision must be this token's (ResultService).
  const resultGateway = requireGateway(ctx.auth, {
    acceptEnded: true,
    unavailable: { message: 'The credential store is unavailable, so the result was not recorded; withhold the result and retry shortly.' },
  });
  // Every denial is audited; the log gets at most DENIAL_LOG_PER_SECOND lines a second per code (denial-log.ts).
  const denialLog = new DenialLogBudget();

  app.post(
    '/v1/decisions',
    {
      onRequest: decisionGateway,
      schema: {
        operationId: 'decide',
        tags: ['gateway'],
        summary: 'May this tool call go ahead? Every decision, allow or deny, is a 200; any other status carries no decision and the gateway treats the call as denied',
        description:
          'A denial is not an HTTP error: it is a 200 with `decision: "deny"` and a stable code, audited. Only a 200 with `decision: "allow"` lets the call run: a gateway treats every other answer (any non-200 status, a timeout, a broken connection) as a denial. A non-200 status carries no decision: 400 (the body, naming the field), 401 (the gateway key or agent token), 413 and 415 (the body), 503 SERVICE_UNAVAILABLE when the gateway key cannot be checked (the credential store is unavailable: the caller is not known, so nothing is decided or audited; `Retry-After` says when to try again). An agent token that cannot be checked is a 200 denial, DEPENDENCY_UNAVAILABLE, audited under the gateway.',
        security: [{ bearer: [], agentToken: [] }],
        body: DecisionBody,
        response: { 200: DecisionAnswer, ...errors },
      },
    },
    async (req) => {
      requireShallow(req.body.arguments, 'arguments');
      requireShallow(req.body.annotations, 'annotations');
      if (req.agentUnchecked) {
        const presented = parseCredential(agentTokenHeader(req) ?? '');
        const answer = ctx.decisions.unavailable(
          { gateway: req.gateway!, input: toInput(req.body), ip: req.ip, tokenType: presented?.tokenType },
          'the agent token could not be checked: the credential store is unavailable; denied to fail closed. Retry shortly.',
        );
        const line = { decision_id: answer.decision_id, decision: 'deny', code: answer.code, token_id: null, gateway: req.gateway!.id, server: redactText(req.body.server), tool: redactText(req.body.tool), session_id: req.body.session_id };
        // The same budget as every denial: in an outage every uncached token lands here, one info line each.
        const budget = denialLog.take(answer.code);
        if (budget.log) req.log.info(budget.notLogged > 0 ? { ...line, not_logged: budget.notLogged } : line, 'decision denied');
        else req.log.debug(line, 'decision denied');
        return answer;
      }
      const agent = req.agent!;
      const call = newCallContext({ gateway: req.gateway!, agent, input: toInput(req.body), ip: req.ip });
      const started = performance.now();
      const answer = await ctx.decisions.decide(call);
      // One line per decision, joined to its audit row by decision_id: denials at info, allows at debug.
      const line = {
        decision_id: answer.decision_id,
        decision: answer.decision,
        code: answer.code,
        token_id: agent.id,
        gateway: req.gateway!.id,
        server: redactText(req.body.server),
        tool: redactText(req.body.tool),
        session_id: req.body.session_id,
        duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
      };
      if (answer.decision === 'deny') {
        const budget = denialLog.take(answer.code);
        if (budget.log) req.log.info(budget.notLogged > 0 ? { ...line, not_logged: budget.notLogged } : line, 'decision denied');
        else req.log.debug(line, 'decision denied');
      } else req.log.debug(line, 'decision allowed');
      return answer;
    },
  );

  app.post(
    '/v1/decisions/:id/result',
    {
      onRequest: resultGateway,
      schema: {
        operationId: 'reportResult',
        tags: ['gateway'],
        summary: 'Record the one RESULT of an allowed call and apply the after-call triggers (large result, max rows, max execution time). The same report again gets the first answer (repeated: true); a different one, 409',
        security: [{ bearer: [], agentToken: [] }],
        params: DecisionIdParams,
        body: ResultBody,
        response: { 200: ResultAnswer, ...errors, 409: ErrorBody, 503: ErrorBody },
      },
    },
    async (req) => ctx.results.record(req.gateway!, req.agent!, req.params.id, withSafeText(req.body), req.agentEnded),
  );

  app.post(
    '/v1/decisions/explain',
    {
      onRequest: requireOperator(ctx.auth, 'viewer'),
      schema: {
        operationId: 'explainDecision',
        tags: ['decisions'],
        summary: 'Why would this call be denied? Runs the pipeline without side effects and returns each step verdict',
        body: ExplainBody,
        response: { 200: ExplainAnswer, ...errors },
      },
    },
    async (req) => {
      requireShallow(req.body.arguments, 'arguments');
      requireShallow(req.body.annotations, 'annotations');
      return ctx.explainer.explain(req.operator!, req.body);
    },
  );
};
