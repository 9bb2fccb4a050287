import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';
import type { RedisHandle } from '../redis/client.js';
import { credentialStore } from '../tokens/store.js';
import { killRoutes } from './routes.js';
import { KillService } from './service.js';

declare module '../context.js' {
  interface AppContext {
    /** Break-glass kills: create, list, lift; `keysFor(call)` gives the gate step its kill keys. */
    kills: KillService;
  }
}

/** Builds ctx.kills (loading every kill in force into Redis) and registers /v1/kills. Before the pipeline is built. */
/** The kill service of an installation, through `redis` (tests hand it one that does not answer). */
export function killServiceFor(ctx: AppContext, redis: RedisHandle = ctx.redis): KillService {
  return new KillService({
    pool: ctx.pool,
    redis,
    log: ctx.log,
    audit: ctx.audit,
    alerts: ctx.alerts,
    policy: ctx.policy,
    findToken: (op, id) => ctx.credentials.getAgentToken(op, id),
    findSession: (op, id) => ctx.sessions.get(id, op),
    projectTokens: (projectId) => credentialStore.countProjectTokens(ctx.pool, projectId),
  });
}

export async function killsPlugin(app: FastifyInstance): Promise<void> {
  const { ctx } = app;
  ctx.kills = killServiceFor(ctx);
  await ctx.kills.start();
  ctx.closers.push(() => ctx.kills.stop());
  await app.register(killRoutes);
}
