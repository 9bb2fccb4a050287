import { once } from 'node:events';
import { get, type IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_COLUMN_NAMES, type AuditRecord } from '../../src/audit/record.js';
import { intentRow } from '../../src/audit/rows.js';
import { bearer, TestContext } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';
import { callContext } from './audit-fixtures.js';

// GET /v1/audit/export commits its status and headers only once the first page is read: every error
// before that is an ordinary JSON error answer; an error after that cuts the response.

const ctx = new TestContext();
let app: FastifyInstance;
let owner: string;
const FORMATS = ['csv', 'jsonl'] as const;
const deny = { decision: 'deny', code: 'PERMISSION_DENIED', message: 'needs storage:write' } as const;

beforeAll(async () => {
  await ctx.setup();
  app = await ctx.app();
  owner = await ctx.operatorKey(app, 'owner');
});
afterAll(async () => {
  await ctx.teardown();
});

/** A JSON error answer in the house body, without the export's content type or attachment header. */
function expectErrorAnswer(res: { statusCode: number; headers: Record<string, unknown>; json(): unknown }, status: number, code: string): { code: string; message: string; details?: Array<{ field: string; problem: string }> } {
  expect(res.statusCode).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  expect(res.headers['content-disposition']).toBeUndefined();
  const { error } = res.json() as { error: { code: string; message: string; details?: Array<{ field: string; problem: string }> } };
  expect(error.code).toBe(code);
  return error;
}

describe('errors before the first byte', () => {
  it.each(FORMATS)('%s: a filter holding a NUL character is a 400 naming the field, in JSON', async (format) => {
    for (const field of ['actor', 'session', 'tool']) {
      const res = await app.inject({ method: 'GET', url: `/v1/audit/export?format=${format}&${field}=a%00`, headers: bearer(owner) });
      const error = expectErrorAnswer(res, 400, 'INVALID_REQUEST');
      expect(error.details).toEqual([{ field, problem: 'contains a NUL character (\\u0000)' }]);
    }
  });

  it('the list and the usage reports name the field too', async () => {
    for (const url of ['/v1/audit?actor=a%00', '/v1/usage?server=a%00', '/v1/usage/monthly?project=a%00']) {
      const error = expectErrorAnswer(await app.inject({ method: 'GET', url, headers: bearer(owner) }), 400, 'INVALID_REQUEST');
      expect(error.details?.[0]?.field).toBe(new URL(url, 'http://x').searchParams.keys().next().value);
    }
  });

  it.each(FORMATS)('%s: Postgres down is a 503 SERVICE_UNAVAILABLE in JSON', async (format) => {
    const other = await ctx.app();
    // Authenticated once while Postgres answers: the key is then in the replica's cache.
    expect((await other.inject({ method: 'GET', url: '/v1/audit?limit=1', headers: bearer(owner) })).statusCode).toBe(200);
    await other.ctx.pool.end();
    expectErrorAnswer(await other.inject({ method: 'GET', url: `/v1/audit/export?format=${format}`, headers: bearer(owner) }), 503, 'SERVICE_UNAVAILABLE');
  });
});

describe('more than one page', () => {
  // 1000 rows a page (src/audit/service.ts): 1,003 rows are two pages. Each row carries 24 KB of
  // arguments, so the first page is larger than what the sockets between server and client can hold.
  const ROWS = 1_003;
  const session = 's-pages';

  beforeAll(async () => {
    const content = 'x'.repeat(24_000);
    // 100 rows (2.4 MB) an INSERT: a full batch of 500 (12 MB) can outlast the writer's 2 s statement
    // timeout on a loaded machine, and its rows would then wait in the spool instead of Postgres.
    for (let i = 0; i < ROWS; i++) {
      app.ctx.audit.enqueue(intentRow(callContext({ sessionId: session, arguments: { i, content } }), deny));
      if (i % 100 === 99) await app.ctx.audit.writer.flush();
    }
    await app.ctx.audit.writer.flush();
    expect(app.ctx.audit.writer.spoolSize).toBe(0);
  });

  it.each(FORMATS)('%s: every row once, oldest first, across the page boundary', async (format) => {
    const res = await app.inject({ method: 'GET', url: `/v1/audit/export?format=${format}&session=${session}`, headers: bearer(owner) });
    expect(res.statusCode).toBe(200);
    const lines = res.body.trimEnd().split('\n');
    if (format === 'csv') {
      expect(lines[0]).toBe(AUDIT_COLUMN_NAMES.join(','));
      expect(lines).toHaveLength(ROWS + 1);
    } else {
      const rows = lines.map((l) => JSON.parse(l) as AuditRecord);
      expect(rows.map((r) => (r.arguments as { i: number }).i)).toEqual(Array.from({ length: ROWS }, (_, i) => i));
    }
  });

  it.each(FORMATS)('%s: Postgres failing after the first page cuts the response (no clean end) and logs it', async (format) => {
    const other = await ctx.app();
    expect((await other.inject({ method: 'GET', url: '/v1/audit?limit=1', headers: bearer(owner) })).statusCode).toBe(200);
    const base = await other.listen({ port: 0, host: '127.0.0.1' });
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      get(`${base}/v1/audit/export?format=${format}&session=${session}`, { headers: bearer(owner) }, resolve).on('error', reject);
    });
    expect(res.statusCode).toBe(200);
    const received: Buffer[] = [(await once(res, 'data'))[0] as Buffer];
    res.pause();
    // The server is now held by backpressure inside the first page (24 MB); the second page is read from
    // a pool that has ended.
    await new Promise((r) => setTimeout(r, 300));
    await other.ctx.pool.end();
    res.on('data', (c: Buffer) => received.push(c));
    const outcome = await new Promise<string>((resolve) => {
      res.on('end', () => resolve('end'));
      res.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      res.resume();
    });
    expect(outcome).toBe('ECONNRESET'); // Node's client: 'aborted'; curl: exit 18, transfer closed with outstanding read data
    expect(res.complete).toBe(false);
    const body = Buffer.concat(received).toString('utf8');
    expect(body.split('\n').length).toBeLessThan(ROWS);
    expect(ctx.logs.lines.some((l) => l.includes('audit export failed after it started') && l.includes('Cannot use a pool after calling end') && l.includes(`"format":"${format}"`))).toBe(true);
    // The trail says so too (ADR 0035): the export's end row is not a complete one. The writer has its own pool.
    const ended = async () => {
      await other.ctx.audit.writer.flush();
      const { rows } = await ctx.pool().query("SELECT details FROM audit_events WHERE action = 'audit.export_ended' AND details->>'format' = $1 AND details->>'ended_by' = 'error'", [format]);
      return rows as Array<{ details: Record<string, unknown> }>;
    };
    await until(async () => (await ended()).length > 0, 5_000, 'the audit.export_ended row');
    const [end] = await ended();
    expect(end?.details).toMatchObject({ complete: false, ended_by: 'error' });
    expect(end?.details['rows']).toBeUndefined();
  });
});
