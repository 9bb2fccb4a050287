import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { AppError } from '../errors.js';
import { requireOperator } from '../http/auth.js';
import { ErrorBody, NoQuery } from '../http/schemas.js';
import { formatIssue } from './issues.js';

const Hash = Type.String({ description: 'sha256 (hex) of the policy file in force' });

const ReplicasView = Type.Object({
  this_replica: Type.String({ description: 'The replica that answered (its replica_id below).' }),
  hash: Hash,
  distinct: Type.Integer({ description: 'Different policies among the live replicas; more than 1 means a call is decided by whichever replica it reaches.' }),
  policies: Type.Array(Type.Object({ hash: Hash, replicas: Type.Integer() }), { description: 'Each policy in force with how many live replicas run it, most first.' }),
  replicas: Type.Array(
    Type.Object({
      replica_id: Type.String({ description: 'Chosen by the replica at start (not the audit chain id); with host and pid it names the process.' }),
      host: Type.String(),
      pid: Type.Integer(),
      hash: Hash,
      loaded_at: Type.String({ format: 'date-time', description: 'When that replica loaded its policy (its own clock).' }),
      seen_at: Type.String({ format: 'date-time', description: "Its last heartbeat (Redis's clock)." }),
    }),
    { description: 'Every live replica (heartbeat within live_s), this one included.' },
  ),
  heartbeat_s: Type.Number({ description: 'How often each replica publishes its policy hash.' }),
  live_s: Type.Number({ description: 'A replica without a heartbeat for this long is gone and not listed.' }),
});

const PolicyView = Type.Object({
  path: Type.String({ description: "The policy file this replica reads (POLICY_FILE's absolute path)." }),
  hash: Hash,
  loaded_at: Type.String({ format: 'date-time', description: 'When the policy in force was loaded (at start, or by the reload that took it).' }),
  warnings: Type.Array(Type.String(), { description: 'Warnings about the policy in force, as `killswitch policy check` prints them.' }),
  roles: Type.Array(Type.String(), { description: "The roles the policy in force defines: an agent token's role must be one of them (another is issued with a warning, and its calls are refused)." }),
  file_rejected: Type.Boolean({ description: 'The file on disk now is not in force: it was rejected, and the policy above decides (GET /readyz warns too).' }),
  last_rejected: Type.Union(
    [
      Type.Object({
        hash: Type.Union([Type.String(), Type.Null()], { description: 'sha256 (hex) of the rejected bytes; null when the file could not be read.' }),
        at: Type.String({ format: 'date-time' }),
        errors: Type.Array(Type.String(), { description: 'Why, each with file:line:column, as the log line `policy file rejected` gives them.' }),
        warnings: Type.Array(Type.String()),
      }),
      Type.Null(),
    ],
    { description: 'The last version of the file rejected since the policy in force was loaded (null when none).' },
  ),
});

/** GET /v1/policy: the policy this replica decides with; GET /v1/policy/replicas: which policy each live replica decides with. */
export const policyRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  app.get(
    '/v1/policy',
    {
      onRequest: requireOperator(ctx.auth, 'viewer'),
      schema: {
        operationId: 'getPolicy',
        tags: ['operations'],
        summary: 'The policy this replica decides with: its file, hash and load time, and the last rejected reload',
        description:
          'What this replica holds in memory (no Redis, no database). A reload that is refused (a broken file, or one that drops a top-level section the policy in force has: docs/policy.md, "Reloading") keeps the policy in force; `last_rejected` shows the last such file since that policy was loaded, with its errors. Other replicas: GET /v1/policy/replicas.',
        querystring: NoQuery,
        response: { 200: PolicyView, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody },
      },
    },
    async () => {
      const status = ctx.policy.status();
      const rejected = status.lastRejected;
      return {
        path: status.path,
        hash: status.hash,
        loaded_at: status.loadedAt.toISOString(),
        warnings: ctx.policy.current().warnings.map(formatIssue),
        roles: [...ctx.policy.current().roles.keys()].sort(),
        file_rejected: status.lastError !== null,
        last_rejected: rejected && { hash: rejected.hash, at: rejected.at.toISOString(), errors: rejected.errors, warnings: rejected.warnings },
      };
    },
  );
  app.get(
    '/v1/policy/replicas',
    {
      onRequest: requireOperator(ctx.auth, 'viewer'),
      schema: {
        operationId: 'getPolicyReplicas',
        tags: ['operations'],
        summary: 'The policy each live replica decides with (its hash and load time): whether replicas disagree',
        description:
          'Read from Redis when asked (this replica publishes its own entry first). Each replica reads its own POLICY_FILE, so during a rollout, or with a stale mount, replicas can decide with different policies; `distinct` above 1 says so (also GET /readyz `warnings`, the metric killswitch_policy_replicas_distinct and the POLICY_DIVERGED alert). 503 when Redis cannot be read.',
        querystring: NoQuery,
        response: { 200: ReplicasView, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 503: ErrorBody },
      },
    },
    async (req) => {
      const replicas = ctx.policyReplicas;
      let view: Awaited<ReturnType<typeof replicas.refresh>>;
      try {
        view = await replicas.refresh();
      } catch (err) {
        req.log.warn({ err: (err as Error).message }, 'policy replicas: Redis cannot be read');
        throw new AppError('SERVICE_UNAVAILABLE', 'Redis cannot be read: the policy each replica runs is unknown until it can.');
      }
      return {
        this_replica: replicas.replicaId,
        hash: ctx.policy.current().hash,
        distinct: view.policies.length,
        policies: view.policies,
        replicas: view.replicas.map((r) => ({ ...r, loaded_at: r.loaded_at.toISOString(), seen_at: r.seen_at.toISOString() })),
        heartbeat_s: replicas.heartbeatMs / 1000,
        live_s: replicas.liveMs / 1000,
      };
    },
  );
};
