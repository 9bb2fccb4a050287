import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { auditedReason } from '../audit/redact.js';
import { AppError } from '../errors.js';
import { requireOperator } from '../http/auth.js';
import { bodyOptional, ErrorBody, OptionalReasonBody } from '../http/schemas.js';
import { REASON_PATTERN, REASON_TEXT } from '../tokens/names.js';
import { IdParams, IssuedId, Timestamp } from '../tokens/schemas.js';
import { operatorActor } from '../tokens/service.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };
const Kind = Type.Union([Type.Literal('production'), Type.Literal('large_results')]);

const Grant = Type.Object({
  id: Type.String(),
  kind: Kind,
  token_id: Type.String(),
  session_id: Type.Union([Type.String(), Type.Null()]),
  environment: Type.Union([Type.String(), Type.Null()], { description: 'The environment a production grant opens; null for a large_results grant (it applies in any environment of the token).' }),
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
    session_id: Type.Optional(IssuedId("Limit the grant to one session: a session of token_id's token that is not closed (400 otherwise; a halted one is accepted).")),
    environment: Type.Optional(Type.Literal('production')),
    reason: Type.String({ minLength: 3, maxLength: 1000, pattern: REASON_PATTERN, description: `Why (in the GRANT_ISSUED alert and the audit trail). ${REASON_TEXT}` }),
    expires_in: Type.Integer({ minimum: 60, description: 'Seconds; at most GRANT_MAX_SECONDS.' }),
  },
  { additionalProperties: false },
);

/** Human grants: production access and large results, bounded in time, audited. */
export const grantRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const tags = ['grants'];
  app.post(
    '/v1/grants',
    {
      onRequest: requireOperator(ctx.auth, 'operator'),
      schema: {
        operationId: 'createGrant',
        tags,
        summary: 'Grant a token production access (or large results) for a bounded time',
        body: CreateGrant,
        response: { 201: Grant, ...errors, 503: ErrorBody },
      },
    },
    async (req, reply) => {
      const op = req.operator!;
      // The row is written before the grant is committed (GrantService.create): when neither Postgres nor
      // the audit spool takes it, no grant exists and the answer is 503.
      const { grant, projectId } = await ctx.grants.create(op, req.body, (g, project) =>
        ctx.audit
          .recordAdmin({
            actor: op,
            action: 'grant.create',
            target: `agent_token:${g.token_id}`,
            projectId: project,
            sessionId: g.session_id,
            details: { id: g.id, kind: g.kind, reason: g.reason, expires_at: g.expires_at.toISOString(), session_id: g.session_id },
          })
          .catch((err: unknown) => {
            throw unrecorded(err, `no grant was created (its grant.create audit row could be written neither to Postgres nor to the audit spool); try again once the audit trail is back`);
          }),
      );
      // Production access (or large results) granted by hand is something every operator should see.
      void ctx.alerts.raise({
        kind: 'GRANT_ISSUED',
        message: `${op.name} granted ${grant.kind === 'production' ? 'production access' : grant.kind} to token ${grant.token_id}${grant.session_id ? `, session ${grant.session_id}` : ''} until ${grant.expires_at.toISOString()} (grant ${grant.id}): ${grant.reason}`,
        token_id: grant.token_id,
        project_id: projectId,
        ...(grant.session_id ? { session_id: grant.session_id } : {}),
        details: { grant_id: grant.id, kind: grant.kind, granted_by: operatorActor(op), expires_at: grant.expires_at.toISOString() },
      });
      return reply.code(201).send(grant);
    },
  );
  app.get(
    '/v1/grants',
    {
      onRequest: requireOperator(ctx.auth, 'viewer'),
      schema: { operationId: 'listGrants', tags, summary: 'List grants', querystring: Type.Object({ token: Type.Optional(Type.String({ format: 'uuid' })), active: Type.Optional(Type.Boolean()) }, { additionalProperties: false }), response: { 200: Type.Object({ grants: Type.Array(Grant) }), ...errors } },
    },
    async (req) => ({ grants: await ctx.grants.list(req.operator!, req.query) }),
  );
  app.delete(
    '/v1/grants/:id',
    {
      onRequest: requireOperator(ctx.auth, 'operator'),
      preValidation: bodyOptional,
      schema: {
        operationId: 'revokeGrant',
        tags,
        summary: 'Revoke a grant: at once on this replica; the others reload the grants when it is announced through Redis, or within 5 s if they miss the announcement (15 s while they cannot read Postgres, after which they trust no grant)',
        params: IdParams,
        body: OptionalReasonBody,
        response: { 200: Grant, ...errors, 503: ErrorBody },
      },
    },
    async (req) => {
      const op = req.operator!;
      // Revoked first: an audit trail that is down must never keep access in force. The row after, awaited,
      // so the operator learns when it is missing.
      const reason = auditedReason(req.body.reason);
      const grant = await ctx.grants.revoke(op, req.params.id);
      const projectId = await ctx.grants.projectOf(grant);
      await ctx.audit.recordAdmin({ actor: op, action: 'grant.revoke', target: `agent_token:${grant.token_id}`, projectId, sessionId: grant.session_id, details: { id: grant.id, ...reason } }).catch((err: unknown) => {
        throw unrecorded(
          err,
          `grant ${grant.id} was revoked at ${grant.revoked_at!.toISOString()}, but its grant.revoke audit row could be written neither to Postgres nor to the audit spool; revoke it again once the audit trail is back: that answers 200, keeps this revocation and writes the row`,
        );
      });
      return grant;
    },
  );
};

/** The audit trail took no row (503 from recordAdmin): the same code, saying what happened to the grant. */
function unrecorded(err: unknown, what: string): unknown {
  return err instanceof AppError && err.code === 'SERVICE_UNAVAILABLE' ? new AppError('SERVICE_UNAVAILABLE', `The audit trail is unavailable: ${what}.`) : err;
}
