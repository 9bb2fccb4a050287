import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { AppError, unauthenticated } from '../errors.js';
import { agentTokenHeader, requireGateway, requireOperator } from '../http/auth.js';
import { ErrorBody } from '../http/schemas.js';
import { CredentialStoreUnavailable } from '../tokens/authenticator.js';
import { IdParams, ListSessionsQuery, OpenedSession, OpenSessionBody, ResumeBody, ResumedSession, ResumedToken, SessionDetail, SessionList } from './schemas.js';

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
      preHandler: gateway,
      schema: {
        tags: ['gateway'],
        summary: 'Open a session bound to the agent token (X-Agent-Token), with a declared scope',
        security: [{ bearer: [], agentToken: [] }],
        body: OpenSessionBody,
        response: { 201: OpenedSession, 429: ErrorBody, ...errors },
      },
    },
    async (req, reply) => {
      let principal: Awaited<ReturnType<typeof ctx.auth.authenticate>>;
      try {
        principal = await ctx.auth.authenticate(agentTokenHeader(req));
      } catch (err) {
        if (err instanceof CredentialStoreUnavailable) throw new AppError('SERVICE_UNAVAILABLE', 'Credential store unavailable; try again.');
        throw err;
      }
      if (principal.kind !== 'agent') throw unauthenticated();
      const opened = await ctx.sessions.open(principal, req.gateway ?? null, req.body);
      req.log.info({ session: opened.session_id, token: principal.id, state: opened.state }, 'session opened');
      return reply.code(201).send(opened);
    },
  );

  app.get(
    '/v1/sessions',
    { preHandler: viewer, schema: { tags, summary: 'List sessions (state=halted: what waits for a human)', querystring: ListSessionsQuery, response: { 200: SessionList, ...errors } } },
    async (req) => ctx.sessions.list(req.query, req.operator),
  );

  app.get(
    '/v1/sessions/:id',
    { preHandler: viewer, schema: { tags, summary: 'One session: state, trigger, halt history and the last 3 calls', params: IdParams, response: { 200: SessionDetail, ...errors } } },
    async (req) => ctx.sessions.get(req.params.id, req.operator),
  );

  app.post(
    '/v1/sessions/:id/resume',
    { preHandler: operator, schema: { tags, summary: 'Resume a halted session (audited)', params: IdParams, body: ResumeBody, response: { 200: ResumedSession, ...errors } } },
    async (req) => ctx.sessions.resumeSession(req.params.id, req.operator!, req.body.reason),
  );

  app.post(
    '/v1/keys/:id/resume',
    { preHandler: operator, schema: { tags: ['keys', ...tags], summary: 'Resume a halted agent token and all its halted sessions (audited)', params: IdParams, body: ResumeBody, response: { 200: ResumedToken, ...errors } } },
    async (req) => ctx.sessions.resumeToken(req.params.id, req.operator!, req.body.reason),
  );
};
