import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';

const Ready = Type.Object({ ready: Type.Boolean(), checks: Type.Record(Type.String(), Type.String()) });

/** /healthz: the process is up. /readyz: Postgres, Redis and every registered dependency are ready. */
export const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  ctx.readiness.set('postgres', async () => {
    await ctx.pool.query('SELECT 1');
    return true;
  });
  ctx.readiness.set('redis', async () => ((await ctx.redis.redis.ping()) === 'PONG' ? true : 'no PONG'));

  app.get('/healthz', { schema: { tags: ['health'], response: { 200: Type.Object({ ok: Type.Boolean() }) } } }, async () => ({ ok: true }));

  app.get('/readyz', { schema: { tags: ['health'], response: { 200: Ready, 503: Ready } } }, async (_req, reply) => {
    const checks: Record<string, string> = {};
    let ready = true;
    await Promise.all(
      [...ctx.readiness].map(async ([name, check]) => {
        const result = await Promise.race([
          check().catch((err: Error) => err.message || String(err)),
          new Promise<string>((r) => setTimeout(() => r('timed out after 2 s'), 2_000).unref()),
        ]);
        checks[name] = result === true ? 'ok' : result;
        if (result !== true) ready = false;
      }),
    );
    return reply.code(ready ? 200 : 503).send({ ready, checks });
  });
};
