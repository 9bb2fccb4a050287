import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { keepSubscribed } from '../redis/client.js';
import { requireOperator } from './auth.js';
import { ErrorBody, NoQuery } from './schemas.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
type LogLevel = (typeof LOG_LEVELS)[number];

const Level = Type.Union(LOG_LEVELS.map((l) => Type.Literal(l)));
const LogLevelBody = Type.Object({ level: Level }, { additionalProperties: false });
const LogLevelView = Type.Object({ level: Type.String(), configured: Type.String({ description: 'LOG_LEVEL: what a restart goes back to' }) });
const LogLevelChanged = Type.Object({
  level: Type.String(),
  previous: Type.String(),
  replicas_told: Type.Integer({ description: 'Other replicas reached through Redis (0 when Redis is down: only this one changed)' }),
});

/**
 * GET/PUT /v1/admin/log-level: the log level of every replica, changed at runtime by an owner (for
 * example debug for a few minutes to see each decision's line). Not persisted: a restart goes back to
 * LOG_LEVEL. Other replicas follow through Redis pub/sub, and one whose subscriber was away catches up
 * when it reconnects (the last change is kept in Redis for a day); the change is an ADMIN audit row.
 */
export const logLevelRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const origin = randomUUID();
  const channel = ctx.redis.channel('log-level');
  const apply = (level: string) => {
    if ((LOG_LEVELS as readonly string[]).includes(level) && ctx.log.level !== level) {
      const previous = ctx.log.level;
      ctx.log.level = level;
      // Fastify logs requests through its own child of ctx.log, whose level was copied at creation.
      app.log.level = level;
      // Not `level`: that is pino's own field (warn, 40), and a parser keeping the last key would file this line under the new level.
      ctx.log.warn({ new_level: level, previous_level: previous }, 'log level changed');
    }
  };
  const onMessage = (ch: string, message: string) => {
    if (ch !== channel) return;
    try {
      const msg = JSON.parse(message) as { origin?: string; level?: string };
      if (msg.origin !== origin && typeof msg.level === 'string') apply(msg.level);
    } catch {
      // Not ours.
    }
  };
  ctx.redis.sub.on('message', onMessage);
  // A change published while this replica's subscriber was away (Redis restarted, a network blip) never
  // arrives: on every reconnect, catch up with the last change made since this replica started.
  const startedAt = Date.now();
  const lastKey = ctx.redis.key('log-level');
  const catchUp = () => {
    ctx.redis.redis.get(lastKey).then(
      (raw) => {
        if (!raw) return;
        const last = JSON.parse(raw) as { level?: string; at?: number };
        if (typeof last.level === 'string' && typeof last.at === 'number' && last.at >= startedAt) apply(last.level);
      },
      () => {},
    );
  };
  ctx.redis.sub.on('ready', catchUp);
  const unsubscribe = await keepSubscribed(ctx.redis, channel, (err) =>
    ctx.log.warn({ err: err.message }, 'log level: cannot subscribe yet; until Redis is back, changes reach only the replica that receives them'),
  );
  ctx.closers.push(async () => {
    ctx.redis.sub.off('ready', catchUp);
    ctx.redis.sub.off('message', onMessage);
    await unsubscribe();
  });

  const tags = ['operations'];
  app.get(
    '/v1/admin/log-level',
    { onRequest: requireOperator(ctx.auth, 'viewer'), schema: { operationId: 'getLogLevel', tags, summary: 'The log level in force on this replica', querystring: NoQuery, response: { 200: LogLevelView, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody } } },
    async () => ({ level: ctx.log.level, configured: ctx.config.logLevel }),
  );

  app.put(
    '/v1/admin/log-level',
    {
      // Every replica's log, every project's lines: a key limited to projects may not change it.
      onRequest: requireOperator(ctx.auth, 'owner', { allProjects: true }),
      schema: {
        operationId: 'setLogLevel',
        tags,
        summary: 'Change the log level of every replica now (owner); a restart goes back to LOG_LEVEL',
        body: LogLevelBody,
        response: { 200: LogLevelChanged, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody },
      },
    },
    async (req) => {
      const level: LogLevel = req.body.level;
      const previous = ctx.log.level;
      apply(level);
      let told = 0;
      try {
        // Kept for replicas that miss the message (catchUp above); a day is longer than any reconnect.
        await ctx.redis.redis.set(lastKey, JSON.stringify({ level, at: Date.now() }), 'PX', 86_400_000);
        told = await ctx.redis.redis.publish(channel, JSON.stringify({ origin, level }));
        told = Math.max(0, told - 1); // our own subscriber is one of them
      } catch (err) {
        req.log.warn({ err: (err as Error).message }, 'log level: could not tell the other replicas (Redis)');
      }
      void ctx.audit.recordAdmin({ actor: req.operator!, action: 'log_level.set', target: 'log_level', details: { level, previous }, ip: req.ip }).catch(() => {});
      return { level, previous, replicas_told: told };
    },
  );
};
