import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger } from 'fastify';
import { Type } from 'typebox';
import { AppError } from '../errors.js';
import { requireOperator } from '../http/auth.js';
import { bodyOptional, ErrorBody, NoQuery, OptionalReasonBody, READ_ERRORS } from '../http/schemas.js';
import {
  BulkRevokeBody,
  BulkRevokeResult,
  CreateAgentTokenBody,
  CreatedAgentToken,
  CreatedGatewayKey,
  CreatedOperatorKey,
  CreateGatewayKeyBody,
  CreateOperatorKeyBody,
  CurrentOperatorKey,
  GatewayKey,
  IdParams,
  ListAgentTokensQuery,
  ListedAgentToken,
  OperatorKey,
  ReasonBody,
  RevokedAgentToken,
  RotateBody,
  RotatedAgentToken,
  ScopeCatalogue,
} from './schemas.js';
import { DEFAULT_SCOPES, SCOPES, WRITE_RISK_WARNING } from './scopes.js';
import { type Unannounced, unannouncedNote, withinProjects } from './service.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };

/** A committed revocation Redis did not carry to the other replicas: still a success, but the operator log says so. */
function logUnannounced(log: FastifyBaseLogger, u: Unannounced | null, what: string): void {
  if (!u) return;
  log.error({ err: u.error, ids: u.ids.slice(0, 100), count: u.ids.length, stale_for_ms: u.staleForMs }, `${what}: revoked and audited. ${unannouncedNote(u, u.ids.length === 1 ? 'it' : 'them')}`);
}

/** Admin API for the three kinds of credentials and the scope catalogue. */
export const credentialRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { auth, credentials } = app.ctx;
  const viewer = requireOperator(auth, 'viewer');
  const operator = requireOperator(auth, 'operator');
  const owner = requireOperator(auth, 'owner');
  const tags = ['keys'];

  app.post('/v1/keys', { onRequest: operator, schema: { operationId: 'createAgentToken', tags, summary: 'Create an agent token (shown once)', body: CreateAgentTokenBody, response: { 201: CreatedAgentToken, ...errors } } }, async (req, reply) => {
    const created = await credentials.createAgentToken(req.operator!, req.body, app.ctx.policy.current().roles);
    return reply.code(201).send(created);
  });

  app.get('/v1/keys', { onRequest: viewer, schema: { operationId: 'listAgentTokens', tags, summary: 'List agent tokens', querystring: ListAgentTokensQuery, response: { 200: Type.Object({ keys: Type.Array(ListedAgentToken) }), ...errors } } }, async (req) => {
    return { keys: await credentials.listAgentTokens(req.operator!, req.query) };
  });

  app.get('/v1/keys/:id', { onRequest: viewer, schema: { operationId: 'getAgentToken', tags, summary: 'Show one agent token', params: IdParams, response: { 200: ListedAgentToken, ...errors } } }, async (req) => {
    return credentials.showAgentToken(req.operator!, req.params.id);
  });

  app.post('/v1/keys/:id/revoke', { onRequest: operator, schema: { operationId: 'revokeAgentToken', tags, summary: 'Revoke an agent token on every replica', params: IdParams, body: ReasonBody, response: { 200: RevokedAgentToken, ...errors } } }, async (req) => {
    const { key, unannounced } = await credentials.revokeAgentToken(req.operator!, req.params.id, req.body.reason);
    logUnannounced(req.log, unannounced, 'agent token');
    // The operator is told, not only the log: "revoked" must not read as "refused everywhere" when it is not yet.
    return unannounced ? { ...key, announced: false, warning: `Revoked and audited. ${unannouncedNote(unannounced, 'it')}` } : { ...key, announced: true };
  });

  app.post(
    '/v1/keys/bulk-revoke',
    {
      onRequest: operator,
      schema: { operationId: 'bulkRevokeAgentTokens', tags, summary: 'Revoke agent tokens by project, type, creator, age or idleness: dry run (count) first, then the same filter with expected_count', body: BulkRevokeBody, response: { 200: BulkRevokeResult, 409: ErrorBody, ...errors } },
    },
    async (req) => {
      const { unannounced, ...result } = await credentials.bulkRevoke(req.operator!, req.body);
      logUnannounced(req.log, unannounced, `${result.count} agent token(s)`);
      return result;
    },
  );

  app.post(
    '/v1/keys/:id/rotate',
    {
      onRequest: operator,
      schema: { operationId: 'rotateAgentToken', tags, summary: 'Rotate an agent token: a new token with the same settings (shown once); the old one works for grace_seconds more', params: IdParams, body: RotateBody, response: { 201: RotatedAgentToken, 409: ErrorBody, ...errors } },
    },
    async (req, reply) => {
      const { unannounced, ...rotated } = await credentials.rotateAgentToken(req.operator!, req.params.id, req.body.grace_seconds, req.body.reason);
      if (unannounced) req.log.error({ err: unannounced.error, ids: unannounced.ids, stale_for_ms: unannounced.staleForMs }, `agent token rotated and audited. ${rotated.message}`);
      return reply.code(201).send(rotated);
    },
  );

  app.get('/v1/scopes', { onRequest: viewer, schema: { operationId: 'listScopes', tags, summary: 'Scope catalogue: which token types may hold which scope', response: { 200: ScopeCatalogue, ...READ_ERRORS } } }, async () => ({
    scopes: SCOPES.map((s) => ({ scope: s.scope, capability: s.capability, allowed_types: [...s.allowedTypes], doc: s.doc })),
    defaults: { ro: [...DEFAULT_SCOPES.ro], rw: [...DEFAULT_SCOPES.rw], admin: [...DEFAULT_SCOPES.admin] },
    write_risk_warning: WRITE_RISK_WARNING,
  }));

  const gwTags = ['gateway-keys'];
  // A gateway serves every project's agents: issuing or revoking one needs a key without a project limit.
  const gatewayAdmin = requireOperator(auth, 'operator', { allProjects: true });
  app.post('/v1/gateway-keys', { onRequest: gatewayAdmin, schema: { operationId: 'createGatewayKey', tags: gwTags, summary: 'Issue a gateway key (shown once)', body: CreateGatewayKeyBody, response: { 201: CreatedGatewayKey, ...errors } } }, async (req, reply) => {
    return reply.code(201).send(await credentials.createGatewayKey(req.operator!, req.body.name, req.body.expires_in));
  });
  app.get('/v1/gateway-keys', { onRequest: viewer, schema: { operationId: 'listGatewayKeys', tags: gwTags, summary: 'List gateway keys', response: { 200: Type.Object({ keys: Type.Array(GatewayKey) }), ...READ_ERRORS } } }, async () => {
    return { keys: await credentials.listKeys('gateway_keys') };
  });
  app.post('/v1/gateway-keys/:id/revoke', { onRequest: gatewayAdmin, preValidation: bodyOptional, schema: { operationId: 'revokeGatewayKey', tags: gwTags, summary: 'Revoke a gateway key', params: IdParams, body: OptionalReasonBody, response: { 204: Type.Null(), ...errors } } }, async (req, reply) => {
    logUnannounced(req.log, (await credentials.revokeKey('gateway_keys', req.params.id, req.operator!, req.body.reason)).unannounced, 'gateway key');
    return reply.code(204).send(null);
  });

  const opTags = ['operator-keys'];
  app.post('/v1/operator-keys', { onRequest: owner, schema: { operationId: 'createOperatorKey', tags: opTags, summary: 'Create an operator key (owners only; shown once)', body: CreateOperatorKeyBody, response: { 201: CreatedOperatorKey, ...errors } } }, async (req, reply) => {
    const op = req.operator!;
    if (!withinProjects(op, req.body.projects)) {
      // An owner limited to projects cannot mint a key that reaches further than its own.
      throw new AppError('FORBIDDEN', `projects: this key is limited to projects [${op.projects!.join(', ')}]; a key it creates must be limited to some of them`, [{ field: 'projects', problem: `must be a subset of [${op.projects!.join(', ')}]` }]);
    }
    return reply.code(201).send(await credentials.createOperatorKey(op, req.body));
  });
  app.get('/v1/operator-keys', { onRequest: owner, schema: { operationId: 'listOperatorKeys', tags: opTags, summary: 'List operator keys (a project-limited owner sees only keys limited to its projects)', response: { 200: Type.Object({ keys: Type.Array(OperatorKey) }), ...READ_ERRORS } } }, async (req) => {
    return { keys: await credentials.listOperatorKeys(req.operator!) };
  });
  // Any operator key reads itself (the admin UI's header, a script checking which key it holds): from the
  // authenticated key, no query. Listed in project-isolation.test.ts as holding no project's data.
  app.get('/v1/operator-keys/me', { onRequest: viewer, schema: { operationId: 'getCurrentOperatorKey', tags: opTags, summary: 'The operator key that makes this request: name, role, projects, expiry', querystring: NoQuery, response: { 200: CurrentOperatorKey, ...READ_ERRORS } } }, async (req) => {
    const op = req.operator!;
    return { id: op.id, name: op.name, role: op.role, projects: op.projects === null ? null : [...op.projects], expires_at: op.expiresAt === null ? null : new Date(op.expiresAt).toISOString() };
  });
  app.post('/v1/operator-keys/:id/revoke', { onRequest: owner, preValidation: bodyOptional, schema: { operationId: 'revokeOperatorKey', tags: opTags, summary: 'Revoke an operator key (never the last owner key without a project limit, nor the one of them that lasts longest: 409)', params: IdParams, body: OptionalReasonBody, response: { 204: Type.Null(), ...errors, 409: ErrorBody } } }, async (req, reply) => {
    logUnannounced(req.log, (await credentials.revokeKey('operator_keys', req.params.id, req.operator!, req.body.reason)).unannounced, 'operator key');
    return reply.code(204).send(null);
  });
};
