import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { requireOperator } from '../http/auth.js';
import { ErrorBody, READ_ERRORS } from '../http/schemas.js';
import { CreatedKill, CreateKillBody, Kill, KillIdParams, KillList, LiftedKill, LiftKillBody, ListKillsQuery } from './schemas.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody };

/** Break-glass kills: create (operator), list and show (viewer), lift (operator). */
export const killRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const viewer = requireOperator(ctx.auth, 'viewer');
  const operator = requireOperator(ctx.auth, 'operator');
  const tags = ['kills'];

  app.post(
    '/v1/kills',
    {
      onRequest: operator,
      schema: {
        operationId: 'createKill',
        tags,
        summary: 'Kill everything, a server, a capability, a token, a project, a role, an environment or a session on every replica at once (no Unleash needed)',
        body: CreateKillBody,
        response: { 201: CreatedKill, ...errors },
      },
    },
    async (req, reply) => {
      const created = await ctx.kills.create(req.operator!, req.body);
      req.log.warn({ kill: created.kill.id, target_key: created.kill.target_key, enforced: created.enforced }, 'kill created');
      return reply.code(201).send(created);
    },
  );

  app.get('/v1/kills', { onRequest: viewer, schema: { operationId: 'listKills', tags, summary: 'Kills, newest first (default: those in force)', querystring: ListKillsQuery, response: { 200: KillList, ...READ_ERRORS } } }, async (req) =>
    ctx.kills.list(req.operator!, req.query),
  );

  app.get('/v1/kills/:id', { onRequest: viewer, schema: { operationId: 'getKill', tags, summary: 'One kill', params: KillIdParams, response: { 200: Kill, ...READ_ERRORS, 404: ErrorBody } } }, async (req) => ctx.kills.get(req.operator!, req.params.id));

  app.delete(
    '/v1/kills/:id',
    { onRequest: operator, schema: { operationId: 'liftKill', tags, summary: 'Lift a kill (with a reason; audited and alerted)', params: KillIdParams, body: LiftKillBody, response: { 200: LiftedKill, ...errors } } },
    async (req) => {
      const lifted = await ctx.kills.lift(req.operator!, req.params.id, req.body.reason);
      req.log.warn({ kill: lifted.kill.id, target_key: lifted.kill.target_key }, 'kill lifted');
      return lifted;
    },
  );
};
