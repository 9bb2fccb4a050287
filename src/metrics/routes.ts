import type { AddressInfo } from 'node:net';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { AppError } from '../errors.js';
import { requireOperator } from '../http/auth.js';
import { ErrorBody, mediaTypes, NoQuery } from '../http/schemas.js';
import { listenMetricsOnly } from './listener.js';
import type { Metrics } from './metrics.js';

/** Counts and times every HTTP request. Install before the routes so every route inherits the hook. */
export function installHttpMetrics(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => {
    metrics.observeHttp(req.method, req.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
  });
}

/**
 * GET /metrics on the API port: an operator key (viewer) that is not limited to projects, because the
 * numbers are installation-wide. METRICS_PORT serves the same text without a key (listenMetrics).
 */
export const metricsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const viewer = requireOperator(ctx.auth, 'viewer');
  app.get(
    '/metrics',
    {
      onRequest: async (req, reply) => {
        await viewer(req, reply);
        if (req.operator!.projects !== null) throw new AppError('FORBIDDEN', 'Metrics cover every project: use an operator key that is not limited to projects.');
      },
      schema: {
        operationId: 'getMetrics',
        tags: ['operations'],
        summary: 'Prometheus metrics (text exposition format); also served without a key on METRICS_PORT when set',
        querystring: NoQuery,
        response: {
          200: mediaTypes('The Prometheus text exposition format, version 0.0.4', { 'text/plain; version=0.0.4': Type.String() }),
          400: ErrorBody,
          401: ErrorBody,
          403: ErrorBody,
        },
      },
    },
    async (_req, reply) => {
      const text = await ctx.metrics.render();
      return reply.type(ctx.metrics.contentType).send(text);
    },
  );
};

/**
 * Serves GET /metrics without a key on METRICS_HOST:METRICS_PORT when METRICS_PORT is set, for a
 * Prometheus that reaches a network the API port is not exposed on. Closed with the app.
 */
export async function listenMetrics(app: FastifyInstance): Promise<AddressInfo | undefined> {
  const { config, metrics, log } = app.ctx;
  if (config.metricsPort === undefined) return undefined;
  const listener = await listenMetricsOnly(metrics, config.metricsHost || config.host, config.metricsPort, log);
  app.ctx.closers.push(listener.close);
  const { address, port } = listener.address;
  log.info({ host: address, port }, 'metrics: GET /metrics served without a key on METRICS_PORT');
  return listener.address;
}
