import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { unauthenticated } from '../errors.js';
import { agentTokenHeader, bearer, requireGateway, requireOperator } from '../http/auth.js';
import { OPERATOR_KEY_WITH_AGENT_TOKEN } from '../http/credential-hints.js';
import { bodyOptional, ErrorBody, OptionalReasonBody, READ_ERRORS } from '../http/schemas.js';
import { parseCredential } from '../tokens/format.js';
import { ClosedSession, IdParams, ListSessionsQuery, OpenedSession, OpenSessionBody, ResumeBody, ResumedSession, ResumedToken, SessionDetail, SessionList } from './schemas.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody };

/** Sessions (gateway: open) and their halts (operators: read, resume). */
export const sessionRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const gateway = requireGateway(ctx.auth);
  const viewer = requireOperator(ctx.auth, 'viewer');
  const operator = requireOperator(ctx.auth, 'operator');
  const tags = ['sessions'];

  app.post(
    '/v1/sessions',
    {
      onRequest: gateway,
      // Every field is optional: no body opens a session as `{}` does, as on /close.
      preValidation: bodyOptional,
      schema: {
        operationId: 'openSession',
        tags: ['gateway'],
        summary: 'Open a session bound to the agent token (X-Agent-Token), with a declared scope',
        description:
          'The body is optional: none (no Content-Type) is `{}`. Each declared server is checked against the token\'s role, as a call to it would be: one the policy does not list, prohibits, or does not allow the role in the token\'s environment is named in `warnings` (why, and what every call to it will get); the session is opened all the same, and those calls are denied and halt as usual. Audited as `session.opened` (the declared scope, the state, the gateway, the warnings); the row is durable before the session is committed, so when the audit trail cannot take it nothing is opened and the answer is 503 SERVICE_UNAVAILABLE (retry).',
        security: [{ bearer: [], agentToken: [] }],
        body: OpenSessionBody,
        response: { 201: OpenedSession, 429: ErrorBody, ...errors },
      },
    },
    async (req, reply) => {
      const principal = req.agent!;
      const opened = await ctx.sessions.open(principal, req.gateway ?? null, req.body, ctx.policy.current());
      const warnings = opened.warnings?.map((w) => ({ field: w.field, problem: w.problem }));
      req.log.info({ session_id: opened.session_id, token_id: principal.id, state: opened.state, ...(warnings ? { warnings } : {}) }, 'session opened');
      return reply.code(201).send(opened);
    },
  );

  app.get(
    '/v1/sessions',
    { onRequest: viewer, schema: { operationId: 'listSessions', tags, summary: 'List sessions (state=halted: what waits for a human)', querystring: ListSessionsQuery, response: { 200: SessionList, ...READ_ERRORS } } },
    async (req) => ctx.sessions.list(req.query, req.operator),
  );

  app.get(
    '/v1/sessions/:id',
    { onRequest: viewer, schema: { operationId: 'getSession', tags, summary: 'One session: state, trigger, halt history and the last 3 calls', params: IdParams, response: { 200: SessionDetail, ...READ_ERRORS, 404: ErrorBody } } },
    async (req) => ctx.sessions.get(req.params.id, req.operator),
  );

  app.post(
    '/v1/sessions/:id/resume',
    { onRequest: operator, schema: { operationId: 'resumeSession', tags, summary: 'Resume a halted session (audited)', params: IdParams, body: ResumeBody, response: { 200: ResumedSession, ...errors } } },
    async (req) => ctx.sessions.resumeSession(req.params.id, req.operator!, req.body.reason),
  );

  // One route for both: the credentials say which. An agent token as Bearer is a gateway's headers swapped,
  // and X-Agent-Token marks a gateway's request: told what is wrong (401) as on every gateway route. An
  // operator key beside X-Agent-Token is refused (no operator action with an agent token along), naming both forms.
  const closer = async (req: Parameters<typeof gateway>[0], reply: Parameters<typeof gateway>[1]) => {
    const raw = bearer(req);
    const kind = raw ? parseCredential(raw)?.kind : undefined;
    const withAgentToken = Boolean(agentTokenHeader(req));
    if (kind === 'operator' && withAgentToken) throw unauthenticated(OPERATOR_KEY_WITH_AGENT_TOKEN);
    return kind === 'gateway' || kind === 'agent' || withAgentToken ? gateway(req, reply) : operator(req, reply);
  };
  app.post(
    '/v1/sessions/:id/close',
    {
      onRequest: closer,
      preValidation: bodyOptional,
      schema: {
        operationId: 'closeSession',
        tags: ['gateway', ...tags],
        summary: 'Close a session (its gateway with the same agent token, or an operator): it answers SESSION_UNKNOWN and no longer counts as open; never a halted one (409)',
        description:
          'What a gateway calls when its agent goes away, so restarts do not use up `max_open_sessions`. A gateway sends its key as Bearer and the session\'s agent token as X-Agent-Token (a session of another token is 404); an operator (role operator) sends an operator key. The session becomes `closed`, as when it idles out. A halted session, or one whose token is halted, is refused with 409 CONFLICT (`details.state`, `details.halted_by`): closing never lifts or hides a halt. Closing a closed session answers 200 with `already_closed: true`. Audited as `session.closed`.',
        security: [{ bearer: [], agentToken: [] }, { bearer: [] }],
        params: IdParams,
        body: OptionalReasonBody,
        response: { 200: ClosedSession, ...errors },
      },
    },
    async (req) => {
      const { reason } = req.body;
      if (req.operator) return ctx.sessions.close(req.params.id, { operator: req.operator }, reason);
      const principal = req.agent!;
      const closed = await ctx.sessions.close(req.params.id, { agent: principal, gateway: req.gateway! }, reason);
      req.log.info({ session_id: req.params.id, token_id: principal.id, already_closed: closed.already_closed }, 'session closed by its gateway');
      return closed;
    },
  );

  app.post(
    '/v1/keys/:id/resume',
    { onRequest: operator, schema: { operationId: 'resumeAgentToken', tags: ['keys', ...tags], summary: 'Resume a halted agent token and all its halted sessions (audited)', params: IdParams, body: ResumeBody, response: { 200: ResumedToken, ...errors } } },
    async (req) => ctx.sessions.resumeToken(req.params.id, req.operator!, req.body.reason),
  );
};
