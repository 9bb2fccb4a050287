import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { stringify } from 'csv-stringify/sync';
import { Type } from 'typebox';
import { v7 as uuidv7 } from 'uuid';
import { AppError, invalid } from '../errors.js';
import { requireOperator } from '../http/auth.js';
import { ErrorBody, mediaTypes, requireWindowInOrder } from '../http/schemas.js';
import { type AuditExport, exportEndedAction, exportStartedAction } from './export-trail.js';
import { AuditReadTally } from './read-tally.js';
import type { AuditRecord } from './record.js';
import { AuditPage, ExportAuditQuery, ListAuditQuery, MonthlyUsageReport, UsageQuery, UsageReport, VerifyReportSchema } from './schemas.js';
import type { TokenUsage } from './service.js';
import type { AuditFilters } from './store.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 503: ErrorBody };
const DAY_MS = 86_400_000;

type FilterQuery = Partial<Record<'token' | 'type' | 'project' | 'session' | 'server' | 'tool' | 'decision' | 'code' | 'kind' | 'decision_id' | 'actor' | 'from' | 'to', string>>;

/**
 * Postgres refuses NUL in text, so a filter holding one would fail as a query error: refused here as a
 * 400 that names the field. Every other string is a valid filter (it matches nothing or something).
 */
function storableFilters(q: Record<string, unknown>): void {
  for (const [field, v] of Object.entries(q)) if (typeof v === 'string' && v.includes('\u0000')) throw invalid(field, 'contains a NUL character (\\u0000)');
}

function filtersOf(q: FilterQuery): AuditFilters {
  storableFilters(q);
  const from = q.from ? new Date(q.from) : undefined;
  const to = q.to ? new Date(q.to) : undefined;
  requireWindowInOrder(from, to);
  return {
    token: q.token,
    type: q.type,
    project: q.project,
    session: q.session,
    server: q.server,
    tool: q.tool,
    decision: q.decision,
    code: q.code,
    kind: q.kind,
    decisionId: q.decision_id,
    actor: q.actor,
    from,
    to,
  };
}

const wire = (r: AuditRecord) => ({ ...r, ts: r.ts.toISOString() });

/** The filters an export was asked with, as sent, `format` aside (for its `audit.exported` row). */
function sentFilters(q: Record<string, unknown>): Record<string, string> {
  const sent: Record<string, string> = {};
  for (const [field, v] of Object.entries(q)) if (field !== 'format' && typeof v === 'string') sent[field] = v;
  return sent;
}

const USAGE_CSV_COLUMNS = ['group', 'token_id', 'token_type', 'project_id', 'server', 'tool', 'capability', 'day', 'calls', 'allowed', 'denied', 'results', 'successes', 'errors', 'success_rate', 'last_used'];

/** Usage as CSV: one `token` line per token, then its `operation` and `day` lines. */
export function usageCsv(tokens: TokenUsage[]): string {
  const rows: unknown[][] = [];
  for (const t of tokens) {
    const base = [t.token_id, t.token_type, t.project_id];
    rows.push(['token', ...base, '', '', '', '', t.calls, t.allowed, t.denied, t.results, t.successes, t.errors, t.success_rate ?? '', t.last_used ?? '']);
    for (const o of t.operations) {
      rows.push(['operation', ...base, o.server ?? '', o.tool ?? '', o.capability ?? '', '', o.calls, o.allowed, o.denied, o.results, o.successes, o.errors, o.results > 0 ? o.successes / o.results : '', '']);
    }
    for (const d of t.per_day) {
      rows.push(['day', ...base, '', '', '', d.day, d.calls, d.allowed, d.denied, d.results, d.successes, d.errors, d.results > 0 ? d.successes / d.results : '', '']);
    }
  }
  return stringify(rows, { header: true, columns: USAGE_CSV_COLUMNS, escape_formulas: true });
}

/** Read side of the audit trail for operators; project-limited keys see their projects' rows only. */
export const auditRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { auth, audit } = app.ctx;
  const viewer = requireOperator(auth, 'viewer');
  const owner = requireOperator(auth, 'owner', { allProjects: true });
  const tags = ['audit'];
  // Pages are told in the log, one line per key a minute (read-tally.ts); exports are audit rows.
  const reads = new AuditReadTally(app.log);
  app.addHook('onClose', async () => reads.flush());

  app.get(
    '/v1/audit',
    {
      onRequest: viewer,
      schema: {
        operationId: 'listAuditRows',
        tags,
        summary: 'Audit rows, newest first, filtered; keyset pagination with `cursor`; with `after`, the rows committed since an earlier answer, oldest commit first',
        querystring: ListAuditQuery,
        response: { 200: AuditPage, ...errors },
      },
    },
    async (req) => {
      const { limit = 100, cursor, after } = req.query;
      if (after !== undefined && cursor !== undefined) throw invalid('after', 'cannot be sent with cursor: `after` pages by commit, `cursor` by ts');
      const filters = filtersOf(req.query);
      const page = after === undefined ? await audit.list(req.operator!, filters, limit, cursor) : await audit.listCommittedAfter(req.operator!, filters, limit, after);
      reads.add(req.operator!, page.events.length);
      return { events: page.events.map(wire), next: page.next, follow: page.follow };
    },
  );

  app.get(
    '/v1/audit/export',
    {
      onRequest: viewer,
      schema: {
        operationId: 'exportAuditRows',
        tags,
        summary:
          'Streamed export of matching rows, oldest first, as CSV (header row) or JSON Lines. Writes an ADMIN row `audit.exported` (the key, the filters, the format, its projects) before the first byte, and refuses with 503 when it cannot; `audit.export_ended` when the response closed',
        querystring: ExportAuditQuery,
        response: {
          200: mediaTypes('The matching rows: CSV (`format=csv`, the default, with a header row) or JSON Lines (`format=jsonl`), as an attachment', {
            'text/csv': Type.String({ description: 'format=csv' }),
            'application/x-ndjson': Type.String({ description: 'format=jsonl: one audit row per line' }),
          }),
          ...errors,
        },
      },
    },
    async (req, reply) => {
      const format = req.query.format ?? 'csv';
      const exported: AuditExport = { id: uuidv7(), operator: req.operator!, format, filters: sentFilters(req.query), ip: req.ip };
      let rows = 0;
      // Opened before the headers: an error until the first page is read is an ordinary error answer.
      const stream = await audit.openExport(req.operator!, filtersOf(req.query), format, () => {
        rows++;
      });
      const started = Date.now();
      let failure: Error | undefined;
      let finished = false;
      // Listened to from here: a CSV stream reads ahead while the row below is written, and an error
      // nobody listens to would end the process. Once the status is sent, Fastify cuts the response (no
      // final chunk) and says nothing itself, because request logging is off: the operator holding a short
      // file needs this line.
      stream.once('error', (err) => {
        failure = err;
        req.log.error({ err: err.message, format }, 'audit export failed after it started; the response was cut and the client has an incomplete file');
      });
      // Who takes the rows out is on the trail before the first byte leaves (ADR 0035): when neither
      // Postgres nor the spool takes the row, nothing is sent.
      const recorded = audit.recordAdmin(exportStartedAction(exported));
      // 'finish': the last byte, final chunk included, was handed to the socket. A close without it is a
      // client that went away or a response cut: never recorded as complete. Written after the first row
      // (none when that one failed); not awaited, the answer is gone; recordAdmin logs a row it cannot write.
      reply.raw.once('finish', () => {
        finished = true;
      });
      reply.raw.once('close', () => {
        const complete = finished && failure === undefined;
        const end = { complete, rows, endedBy: complete ? undefined : failure ? ('error' as const) : ('client' as const), durationMs: Date.now() - started };
        void recorded.then(() => audit.recordAdmin(exportEndedAction(exported, end))).catch(() => {});
      });
      await recorded.catch((err: unknown) => {
        stream.destroy();
        throw err instanceof AppError && err.code === 'SERVICE_UNAVAILABLE'
          ? new AppError('SERVICE_UNAVAILABLE', 'The audit trail is unavailable: nothing was exported (the audit.exported row, which records who takes the rows out, could be written neither to Postgres nor to the audit spool); try again once the audit trail is back.')
          : err;
      });
      // Failed while its row was written (a later page read ahead): nothing sent yet, an ordinary error answer.
      if (failure) throw failure;
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      return reply
        .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson; charset=utf-8')
        .header('content-disposition', `attachment; filename="audit-${stamp}.${format}"`)
        // A stream: the schema above documents the bytes, fastify pipes them as they come.
        .send(stream as unknown as string);
    },
  );

  app.get(
    '/v1/audit/verify',
    { onRequest: owner, schema: { operationId: 'verifyAuditChains', tags, summary: 'Walk every hash chain to its end and report every break (owners without a project limit; reads the whole table)', response: { 200: VerifyReportSchema, ...errors } } },
    async () => audit.verify(),
  );

  app.get(
    '/v1/usage',
    {
      onRequest: viewer,
      schema: {
        operationId: 'getUsage',
        tags,
        summary: 'Usage per agent token: calls, allow/deny, per operation and per day, success and error rate (JSON or CSV)',
        querystring: UsageQuery,
        response: {
          200: mediaTypes('The usage report: JSON, or CSV with `format=csv` (an attachment, one `token` row per token, then its `operation` and `day` rows)', {
            'application/json': UsageReport,
            'text/csv': Type.String({ description: 'format=csv' }),
          }),
          ...errors,
        },
      },
    },
    async (req, reply) => {
      storableFilters(req.query);
      const to = req.query.to ? new Date(req.query.to) : new Date(app.ctx.clock.now());
      const from = req.query.from ? new Date(req.query.from) : new Date(to.getTime() - 30 * DAY_MS);
      requireWindowInOrder(from, to);
      const tokens = await audit.usage(req.operator!, { token: req.query.token, type: req.query.type, project: req.query.project, server: req.query.server, from, to });
      if (req.query.format === 'csv') {
        return reply.type('text/csv; charset=utf-8').header('content-disposition', 'attachment; filename="usage.csv"').send(usageCsv(tokens));
      }
      return { from: from.toISOString(), to: to.toISOString(), tokens };
    },
  );

  app.get(
    '/v1/usage/monthly',
    {
      onRequest: viewer,
      schema: {
        operationId: 'getMonthlyUsage',
        tags,
        summary: 'Monthly usage per token and operation, including months whose raw rows retention already removed',
        querystring: UsageQuery,
        response: {
          200: mediaTypes('Monthly usage: JSON, or CSV with `format=csv` (an attachment, one row per month, token and operation)', {
            'application/json': MonthlyUsageReport,
            'text/csv': Type.String({ description: 'format=csv' }),
          }),
          ...errors,
        },
      },
    },
    async (req, reply) => {
      storableFilters(req.query);
      const from = req.query.from ? new Date(req.query.from) : undefined;
      const to = req.query.to ? new Date(req.query.to) : undefined;
      requireWindowInOrder(from, to);
      const months = await audit.monthlyUsage(req.operator!, { token: req.query.token, type: req.query.type, project: req.query.project, server: req.query.server, from, to });
      if (req.query.format === 'csv') {
        const csv = stringify(
          months.map((m) => ({ ...m, last_at: m.last_at ? m.last_at.toISOString() : '' })),
          { header: true, columns: ['month', 'token_id', 'token_type', 'project_id', 'server', 'tool', 'capability', 'calls', 'allowed', 'denied', 'results', 'successes', 'errors', 'last_at'], escape_formulas: true },
        );
        return reply.type('text/csv; charset=utf-8').header('content-disposition', 'attachment; filename="usage-monthly.csv"').send(csv);
      }
      return { months: months.map((m) => ({ ...m, calls: Number(m.calls), allowed: Number(m.allowed), denied: Number(m.denied), results: Number(m.results), successes: Number(m.successes), errors: Number(m.errors) })) };
    },
  );
};
