import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { requireOperator } from '../http/auth.js';
import { ErrorBody } from '../http/schemas.js';
import { IdParams, Timestamp } from '../tokens/schemas.js';
import { operatorActor } from '../tokens/service.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };
const Kind = Type.Union([Type.Literal('production'), Type.Literal('large_results')]);

const Grant = Type.Object({
  id: Type.String(),
  kind: Kind,
  token_id: Type.String(),
  session_id: Type.Union([Type.String(), Type.Null()]),
  environment: Type.String(),
  reason: Type.String(),
  created_by: Type.String(),
  created_at: Timestamp,
  expires_at: Timestamp,
  revoked_at: Type.Union([Timestamp, Type.Null()]),
  revoked_by: Type.Union([Type.String(), Type.Null()]),
});

const CreateGrant = Type.Object(
  {
    kind: Type.Optional(Kind),
    token_id: Type.String({ format: 'uuid' }),
    session_id: Type.Optional(Type.String({ minLength: 1, maxLength: 100, description: "Limit the grant to one session: a session of token_id's token that is not closed (400 otherwise; a halted one is accepted)." })),
    environment: Type.Optional(Type.Literal('production')),
    reason: Type.String({ minLength: 3, maxLength: 1000 }),
    expires_in: Type.Integer({ minimum: 60, description: 'Seconds; at most GRANT_MAX_SECONDS.' }),
  },
  { additionalProperties: false },
);

/** Human grants: production access and large results, bounded in time, audited. */
export const grantRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const tags = ['grants'];
  app.post('/v1/grants', { preHandler: requireOperator(ctx.auth, 'operator'), schema: { tags, summary: 'Grant a token production access (or large results) for a bounded time', body: CreateGrant, response: { 201: Grant, ...errors } } }, async (req, reply) => {
    const grant = await ctx.grants.create(req.operator!, req.body);
    const projectId = await ctx.grants.projectOf(grant);
    ctx.audit?.recordAdmin({
      actor: req.operator!,
      action: 'grant.create',
      target: `agent_token:${grant.token_id}`,
      projectId,
      details: { id: grant.id, kind: grant.kind, reason: grant.reason, expires_at: grant.expires_at.toISOString(), session_id: grant.session_id },
    });
    // Production access (or large results) granted by hand is something every operator should see.
    void ctx.alerts.raise({
      kind: 'GRANT_ISSUED',
      message: `${req.operator!.name} granted ${grant.kind === 'production' ? 'production access' : grant.kind} to token ${grant.token_id}${grant.session_id ? `, session ${grant.session_id}` : ''} until ${grant.expires_at.toISOString()} (grant ${grant.id}): ${grant.reason}`,
      token_id: grant.token_id,
      project_id: projectId ?? null,
      ...(grant.session_id ? { session_id: grant.session_id } : {}),
      details: { grant_id: grant.id, kind: grant.kind, granted_by: operatorActor(req.operator!), expires_at: grant.expires_at.toISOString() },
    });
    return reply.code(201).send(grant);
  });
  app.get(
    '/v1/grants',
    {
      preHandler: requireOperator(ctx.auth, 'viewer'),
      schema: { tags, summary: 'List grants', querystring: Type.Object({ token: Type.Optional(Type.String({ format: 'uuid' })), active: Type.Optional(Type.Boolean()) }, { additionalProperties: false }), response: { 200: Type.Object({ grants: Type.Array(Grant) }), ...errors } },
    },
    async (req) => ({ grants: await ctx.grants.list(req.operator!, req.query) }),
  );
  app.delete('/v1/grants/:id', { preHandler: requireOperator(ctx.auth, 'operator'), schema: { tags, summary: 'Revoke a grant at once', params: IdParams, response: { 200: Grant, ...errors } } }, async (req) => {
    const grant = await ctx.grants.revoke(req.operator!, req.params.id);
    const projectId = await ctx.grants.projectOf(grant);
    ctx.audit?.recordAdmin({ actor: req.operator!, action: 'grant.revoke', target: `agent_token:${grant.token_id}`, projectId, details: { id: grant.id } });
    return grant;
  });
};
