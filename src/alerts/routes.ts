import type { ServerResponse } from 'node:http';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { bearer, requireOperator } from '../http/auth.js';
import { bodyOptional, ErrorBody, mediaTypes, requireWindowInOrder } from '../http/schemas.js';
import { isUuid } from '../ids.js';
import { CredentialStoreUnavailable, type OperatorPrincipal } from '../tokens/authenticator.js';
import { AckBody, AckMatchingBody, AckMatchingResultSchema, AlertIdParams, AlertPageSchema, AlertSchema, ListAlertsQuery, StreamQuery } from './schemas.js';
import { type AlertEvent, canSeeAlert } from './service.js';
import type { Alert } from './store.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };
const REPLAY_MAX = 500;
// A client this far behind is cut off; it reconnects with Last-Event-ID and replays from Postgres.
const MAX_BUFFERED_BYTES = 1 << 20;

function sseFrame(event: AlertEvent): string {
  // Only raised alerts carry an SSE id: Last-Event-ID then means "the newest alert I have".
  const head = event.type === 'raised' ? `id: ${event.alert.id}\nevent: alert\n` : 'event: ack\n';
  return `${head}data: ${JSON.stringify(event.alert)}\n\n`;
}

/** Admin API for alerts: list, acknowledge, and a Server-Sent Events live feed for the UI. */
export const alertRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { auth, alerts } = app.ctx;
  const viewer = requireOperator(auth, 'viewer');
  const operator = requireOperator(auth, 'operator');
  const tags = ['alerts'];
  const streams = new Set<ServerResponse>();
  // Acknowledgements the system makes (a FLAG_ENABLED answering FLAG_DISABLED) are audited like those below.
  alerts.setAdminRecorder((a) => app.ctx.audit?.recordAdmin(a));

  const auditAck = (op: OperatorPrincipal, acked: Alert, extra: Record<string, unknown> = {}) =>
    void app.ctx.audit?.recordAdmin({
      actor: op,
      action: 'alert.acknowledged',
      target: `alert:${acked.id}`,
      projectId: acked.project_id ?? undefined,
      details: { kind: acked.kind, severity: acked.severity, message: acked.message.slice(0, 500), note: acked.ack_note, token_id: acked.token_id, session_id: acked.session_id, ...extra },
    });

  app.get(
    '/v1/alerts',
    { onRequest: viewer, schema: { operationId: 'listAlerts', tags, summary: 'List alerts, newest first (keyset pagination with `before`)', querystring: ListAlertsQuery, response: { 200: AlertPageSchema, ...errors } } },
    async (req) => {
      requireWindowInOrder(req.query.from ? new Date(req.query.from) : undefined, req.query.to ? new Date(req.query.to) : undefined);
      return alerts.list(req.query, req.operator!);
    },
  );

  app.get(
    '/v1/alerts/stream',
    {
      onRequest: viewer,
      schema: {
        operationId: 'streamAlerts',
        tags,
        summary: 'Live alerts as Server-Sent Events (`alert` and `ack` events); send Last-Event-ID to replay what was missed',
        querystring: StreamQuery,
        headers: Type.Object({
          'Last-Event-ID': Type.Optional(
            Type.String({ description: 'The id of the newest alert the client has (an EventSource sends it when it reconnects): the alerts raised after it are sent first (at most 500). Anything but an alert id is ignored.' }),
          ),
        }),
        response: {
          200: mediaTypes('Server-Sent Events until the client disconnects: `alert` (with the alert id as the event id) and `ack` events, each with the alert as JSON data', {
            'text/event-stream': Type.String(),
          }),
          ...errors,
        },
      },
    },
    async (req, reply) => {
      const op = req.operator!;
      const kinds = req.query.kind ? new Set<string>(req.query.kind) : null;
      const severities = req.query.severity ? new Set<string>(req.query.severity) : null;
      const wanted = (a: Alert) => canSeeAlert(op, a) && (!kinds || kinds.has(a.kind)) && (!severities || severities.has(a.severity));

      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      res.write('retry: 3000\n: connected\n\n');
      streams.add(res);

      let replaying = true;
      const held: AlertEvent[] = [];
      // Every write goes through here. A write to an ended or destroyed response emits 'error' later,
      // and the heartbeat keeps firing until 'close': without this guard one slow client could crash the
      // process. A client that fell behind is destroyed, not ended: end() would wait for it to read the
      // megabyte it is behind, keeping the socket (and this stream) alive.
      const write = (chunk: string) => {
        if (res.writableEnded || res.destroyed) return;
        if (res.writableLength > MAX_BUFFERED_BYTES) {
          req.log.warn({ buffered_bytes: res.writableLength }, 'alerts stream: the client fell too far behind; disconnected (it replays with Last-Event-ID)');
          res.destroy();
          return;
        }
        res.write(chunk);
      };
      const send = (event: AlertEvent) => {
        if (wanted(event.alert)) write(sseFrame(event));
      };
      const unsubscribe = alerts.subscribe((event) => (replaying ? held.push(event) : send(event)));
      // The key is checked again on every heartbeat: a stream of a key revoked (or expired) since it
      // connected ends. A credential store that cannot answer keeps the stream (alerts matter most then).
      const key = bearer(req);
      const heartbeat = setInterval(() => {
        write(': ping\n\n');
        auth.authenticate(key).then(
          (p) => {
            if (p.kind !== 'operator') res.destroy();
          },
          (err: unknown) => {
            if (err instanceof CredentialStoreUnavailable) return;
            req.log.info('alerts stream: its operator key was revoked or expired; disconnected');
            res.destroy();
          },
        );
      }, alerts.streamHeartbeatMs);
      heartbeat.unref();
      const cleanup = () => {
        clearInterval(heartbeat);
        unsubscribe();
        streams.delete(res);
        held.length = 0;
      };
      res.on('close', cleanup);
      // A socket error (reset, EPIPE) must not become an uncaught 'error' event; 'close' follows anyway.
      res.on('error', cleanup);
      // The client may already be gone (its 'close' fired before the listener was added).
      if (res.destroyed) cleanup();

      const lastId = req.headers['last-event-id'];
      const replayed = new Set<string>();
      if (typeof lastId === 'string' && isUuid(lastId)) {
        try {
          for (const alert of await alerts.listAfter(lastId, REPLAY_MAX, op)) {
            replayed.add(alert.id);
            send({ type: 'raised', alert });
          }
        } catch (err) {
          req.log.warn({ err: (err as Error).message }, 'alerts stream: replay after Last-Event-ID failed');
        }
      }
      replaying = false;
      for (const event of held.splice(0)) if (event.type !== 'raised' || !replayed.has(event.alert.id)) send(event);
    },
  );

  app.get(
    '/v1/alerts/:id',
    { onRequest: viewer, schema: { operationId: 'getAlert', tags, summary: 'Show one alert', params: AlertIdParams, response: { 200: AlertSchema, ...errors } } },
    async (req) => alerts.get(req.params.id, req.operator!),
  );

  app.post(
    '/v1/alerts/:id/ack',
    {
      onRequest: operator,
      // The note is optional, so is the body: `curl -X POST .../ack` with no body is a plain acknowledgement.
      preValidation: bodyOptional,
      schema: { operationId: 'acknowledgeAlert', tags, summary: 'Acknowledge an alert (once; a second acknowledgement is 409)', params: AlertIdParams, body: AckBody, response: { 200: AlertSchema, ...errors, 409: ErrorBody } },
    },
    async (req) => {
      const acked = await alerts.ack(req.params.id, req.operator!, req.body.note);
      // Who took an alert out of everyone's inbox, and why, belongs in the audit trail: the alert row itself
      // goes after RECORDS_RETENTION_DAYS. The acknowledgement stands if the row cannot be written (logged).
      auditAck(req.operator!, acked);
      return acked;
    },
  );

  app.post(
    '/v1/alerts/ack',
    {
      onRequest: operator,
      // A single kind or severity is read as a list of one: {"kind": "KILL_SWITCH"}.
      preValidation: async (req) => {
        const body = req.body as Record<string, unknown> | null | undefined;
        if (body && typeof body === 'object') for (const k of ['kind', 'severity']) if (typeof body[k] === 'string') body[k] = [body[k]];
      },
      schema: {
        operationId: 'acknowledgeMatchingAlerts',
        tags,
        summary: 'Acknowledge every open alert that matches (kind, severity, before, project_id, or all: true), with one note',
        body: AckMatchingBody,
        response: { 200: AckMatchingResultSchema, ...errors },
      },
    },
    async (req) => {
      const { note, ...filter } = req.body;
      const { acknowledged, remaining } = await alerts.ackMatching(filter, req.operator!, note);
      // One row per alert, as for a single acknowledgement: the trail of an alert (target alert:<id>) says
      // who took it out of the inbox; `bulk` names the filter that did.
      for (const acked of acknowledged) auditAck(req.operator!, acked, { bulk: filter });
      return { acknowledged: acknowledged.length, ids: acknowledged.map((a) => a.id), remaining };
    },
  );

  // Open streams would keep app.close() waiting forever; end them first.
  app.addHook('preClose', async () => {
    for (const res of streams) res.end();
    streams.clear();
  });
};
