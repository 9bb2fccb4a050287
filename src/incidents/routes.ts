import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { requireOperator } from '../http/auth.js';
import { ErrorBody, mediaTypes } from '../http/schemas.js';
import { sessionStore } from '../sessions/store.js';
import { TimelineQuerySchema, TimelineSchema } from './schemas.js';
import { TimelineService, timelineCsv, timelineJsonl } from './service.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };

/** GET /v1/incidents/timeline: the assess and review steps of the incident runbook. */
export const incidentRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const timeline = new TimelineService({
    pool: ctx.pool,
    findToken: (op, id) => ctx.credentials.getAgentToken(op, id),
    findSession: (id) => sessionStore.getSession(ctx.pool, id),
    now: ctx.clock.now,
  });

  app.get(
    '/v1/incidents/timeline',
    {
      onRequest: requireOperator(ctx.auth, 'viewer'),
      schema: {
        operationId: 'getIncidentTimeline',
        tags: ['incidents'],
        summary: 'One ordered view of decisions, denials, alerts, kills, flag changes, revocations, rotations and resumes in a window (JSON, JSON Lines or CSV)',
        querystring: TimelineQuerySchema,
        response: {
          200: mediaTypes(
            'The timeline: JSON (`format=json`, the default), or an export as an attachment: JSON Lines (`format=jsonl`) or CSV (`format=csv`); a truncated export ends with a line or row of type `truncated` (the JSON Lines line has the cursor of the rest as `next`)',
            {
              'application/json': TimelineSchema,
              'application/x-ndjson': Type.String({ description: 'format=jsonl: one event per line' }),
              'text/csv': Type.String({ description: 'format=csv: a header row, then one row per event' }),
            },
            {
              'X-Truncated': Type.Unsafe<'true' | 'false'>({
                type: 'string',
                enum: ['true', 'false'],
                description: '`true` when the window holds more than `limit` events (the answer holds the first `limit`), else `false`. Sent in every format.',
              }),
              'X-Next-Cursor': Type.String({ description: 'Only when truncated: the cursor of the rest (send it as `cursor`).' }),
            },
          ),
          ...errors,
        },
      },
    },
    async (req, reply) => {
      const t = await timeline.timeline(req.operator!, req.query);
      const format = req.query.format ?? 'json';
      const continued = req.query.cursor !== undefined;
      // Also for exports saved with `curl -o`: the headers are what a script checks without parsing the file.
      reply.header('x-truncated', String(t.truncated));
      if (t.next) reply.header('x-next-cursor', t.next);
      if (format === 'json') return t;
      // A continued export is named after where it starts, so the files of one window do not share a name.
      const stamp = (continued ? (t.events[0]?.at ?? t.from) : t.from).replace(/[:.]/g, '-');
      return reply
        .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson; charset=utf-8')
        .header('content-disposition', `attachment; filename="incident-timeline-${stamp}.${format}"`)
        .send(format === 'csv' ? timelineCsv(t, continued) : timelineJsonl(t, continued));
    },
  );
};
