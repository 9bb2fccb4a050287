import { once } from 'node:events';
import { get, type IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { intentRow } from '../../src/audit/rows.js';
import { replicaWithoutAudit } from '../helpers/audit-down.js';
import { bearer, TestContext } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';
import { agentPrincipal, callContext } from './audit-fixtures.js';

// Who took the audit trail out (ADR 0035): every GET /v1/audit/export writes its `audit.exported` row
// before the first byte, names the key, the filters, the format and the projects it was limited to, and is
// refused when that row cannot be written; `audit.export_ended` says whether the whole file was sent.

const t = new TestContext();
let app: FastifyInstance;
const deny = { decision: 'deny', code: 'PERMISSION_DENIED', message: 'needs storage:write' } as const;

interface Row {
  id: string;
  kind: string;
  actor_type: string;
  actor_id: string;
  project_id: string | null;
  target: string | null;
  details: Record<string, unknown>;
}

let made = 0;
async function operator(role: 'viewer' | 'owner', projects?: string[]): Promise<{ key: string; id: string; name: string }> {
  const name = `export reviewer ${++made}`;
  const created = await app.ctx.credentials.createOperatorKey('test', { name, role, projects });
  return { key: created.key, id: created.operator_key.id, name };
}

async function rowsOf(action: string, actorId: string): Promise<Row[]> {
  await app.ctx.audit.writer.flush();
  const { rows } = await t.pool().query<Row>("SELECT id, kind, actor_type, actor_id, project_id, target, details FROM audit_events WHERE kind = 'ADMIN' AND action = $1 AND actor_id = $2 ORDER BY ts, id", [action, actorId]);
  return rows;
}

/** The `audit.export_ended` row of an export, once it is written (after the response closed). */
async function endOf(actorId: string): Promise<Row> {
  await until(async () => (await rowsOf('audit.export_ended', actorId)).length > 0, 5_000, 'the audit.export_ended row');
  const rows = await rowsOf('audit.export_ended', actorId);
  expect(rows).toHaveLength(1);
  return rows[0]!;
}

beforeAll(async () => {
  await t.setup();
  app = await t.app();
  for (const [project, session] of [
    ['alpha', 's-trail-alpha'],
    ['beta', 's-trail-beta'],
  ] as const) {
    const agent = agentPrincipal({ projectId: project });
    for (let i = 0; i < 3; i++) app.ctx.audit.enqueue(intentRow(callContext({ agent, sessionId: session, arguments: { i, email: 'someone@example.com' } }), deny));
  }
  await app.ctx.audit.writer.flush();
});
afterAll(() => t.teardown());

describe('an export writes who took which rows out', () => {
  it('a viewer key: exactly one audit.exported row naming the key, its role, the filters and the format, then an audit.export_ended row with the rows sent', async () => {
    const viewer = await operator('viewer');
    const res = await app.inject({ method: 'GET', url: '/v1/audit/export?format=jsonl&session=s-trail-alpha&kind=INTENT&decision=deny', headers: bearer(viewer.key) });
    expect(res.statusCode, res.body).toBe(200);
    const lines = res.body.trimEnd().split('\n');
    expect(lines).toHaveLength(3);

    const started = await rowsOf('audit.exported', viewer.id);
    expect(started).toHaveLength(1);
    const row = started[0]!;
    expect(row).toMatchObject({ kind: 'ADMIN', actor_type: 'operator', actor_id: viewer.id, project_id: null, target: 'audit_events' });
    expect(row.details).toMatchObject({ operator_name: viewer.name, operator_role: 'viewer', format: 'jsonl', filters: { session: 's-trail-alpha', kind: 'INTENT', decision: 'deny' }, projects: null });
    expect(typeof row.details['export_id']).toBe('string');

    const end = await endOf(viewer.id);
    expect(end.details).toMatchObject({ export_id: row.details['export_id'], complete: true, rows: 3, operator_name: viewer.name, operator_role: 'viewer' });
    // Only the two: the export's own reads write nothing else.
    await app.ctx.audit.writer.flush();
    const { rows: all } = await t.pool().query("SELECT action FROM audit_events WHERE actor_id = $1 AND kind = 'ADMIN' ORDER BY ts, id", [viewer.id]);
    expect(all.map((r) => r.action)).toEqual(['audit.exported', 'audit.export_ended']);
  });

  it('is listed by GET /v1/audit?kind=ADMIN (what `audit search --kind ADMIN` and the UI read) and the chains still verify', async () => {
    const viewer = await operator('viewer');
    expect((await app.inject({ method: 'GET', url: '/v1/audit/export?format=csv&project=beta', headers: bearer(viewer.key) })).statusCode).toBe(200);
    await endOf(viewer.id);
    const owner = await operator('owner');
    const listed = await app.inject({ method: 'GET', url: `/v1/audit?kind=ADMIN&actor=${viewer.id}`, headers: bearer(owner.key) });
    expect(listed.statusCode).toBe(200);
    const events = listed.json().events as Array<{ action: string; details: Record<string, unknown> }>;
    expect(events.map((e) => e.action).sort()).toEqual(['audit.export_ended', 'audit.exported']);
    expect(events.find((e) => e.action === 'audit.exported')?.details).toMatchObject({ format: 'csv', filters: { project: 'beta' } });
    const report = await app.ctx.audit.verify();
    expect(report.broken).toEqual([]);
    expect(report.ok).toBe(true);
  });

  it('a key limited to one project: the row is under that project and names it; limited to two: under none, naming both', async () => {
    const one = await operator('viewer', ['alpha']);
    const res = await app.inject({ method: 'GET', url: '/v1/audit/export?format=csv', headers: bearer(one.key) });
    expect(res.statusCode).toBe(200);
    const [row] = await rowsOf('audit.exported', one.id);
    expect(row).toMatchObject({ project_id: 'alpha', details: { projects: ['alpha'], format: 'csv', filters: {}, operator_role: 'viewer' } });
    // The owner limited to that project sees who took its rows out.
    const alphaOwner = await operator('owner', ['alpha']);
    const seen = await app.inject({ method: 'GET', url: `/v1/audit?kind=ADMIN&actor=${one.id}`, headers: bearer(alphaOwner.key) });
    expect((seen.json().events as Array<{ action: string }>).map((e) => e.action)).toContain('audit.exported');

    const two = await operator('viewer', ['alpha', 'beta']);
    expect((await app.inject({ method: 'GET', url: '/v1/audit/export?format=jsonl&tool=write_file', headers: bearer(two.key) })).statusCode).toBe(200);
    const [row2] = await rowsOf('audit.exported', two.id);
    expect(row2).toMatchObject({ project_id: null, details: { projects: ['alpha', 'beta'], format: 'jsonl', filters: { tool: 'write_file' } } });
  });

  it('plain GET /v1/audit pages write no row', async () => {
    const viewer = await operator('viewer');
    for (let i = 0; i < 3; i++) expect((await app.inject({ method: 'GET', url: '/v1/audit?limit=2', headers: bearer(viewer.key) })).statusCode).toBe(200);
    // Paired with the export below, so this test fails where exports write nothing either.
    expect((await app.inject({ method: 'GET', url: '/v1/audit/export?session=s-trail-beta', headers: bearer(viewer.key) })).statusCode).toBe(200);
    await endOf(viewer.id);
    const { rows } = await t.pool().query("SELECT action FROM audit_events WHERE actor_id = $1 AND kind = 'ADMIN' ORDER BY ts, id", [viewer.id]);
    expect(rows.map((r) => r.action)).toEqual(['audit.exported', 'audit.export_ended']);
  });
});

describe('pages are told in the log', () => {
  it('one "audit rows read" line per key: its name, role, projects, the rows and requests summed (at the latest when the replica closes)', async () => {
    const viewer = await operator('viewer', ['alpha']);
    const replica = await t.app();
    let rows = 0;
    for (let i = 0; i < 3; i++) {
      const res = await replica.inject({ method: 'GET', url: '/v1/audit?limit=2', headers: bearer(viewer.key) });
      expect(res.statusCode, res.body).toBe(200);
      rows += res.json().events.length;
    }
    expect(rows).toBeGreaterThan(0);
    await replica.close();
    const lines = t.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'audit rows read' && l['operator_id'] === viewer.id);
    expect(lines).toEqual([expect.objectContaining({ operator_name: viewer.name, operator_role: 'viewer', projects: ['alpha'], rows, requests: 3 })]);
  });
});

describe('the trail cannot take the row', () => {
  it.each(['csv', 'jsonl'] as const)('%s: the export is refused with 503 SERVICE_UNAVAILABLE in JSON and nothing is streamed; once the trail is back it exports', async (format) => {
    const viewer = await operator('viewer');
    const { app: broken, restore } = await replicaWithoutAudit(t, 'audit.export%');
    try {
      const res = await broken.inject({ method: 'GET', url: `/v1/audit/export?format=${format}&session=s-trail-alpha`, headers: bearer(viewer.key) });
      expect(res.statusCode, res.body).toBe(503);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      expect(res.headers['content-disposition']).toBeUndefined();
      const { error } = res.json() as { error: { code: string; message: string } };
      expect(error.code).toBe('SERVICE_UNAVAILABLE');
      expect(error.message).toContain('nothing was exported');
      expect(res.body).not.toContain('someone@example.com');
      expect(res.body).not.toContain('s-trail-alpha');
    } finally {
      await restore();
    }
    expect(await rowsOf('audit.exported', viewer.id)).toHaveLength(0);
    const again = await app.inject({ method: 'GET', url: `/v1/audit/export?format=${format}&session=s-trail-alpha`, headers: bearer(viewer.key) });
    expect(again.statusCode).toBe(200);
    expect(again.body).toContain('someone@example.com');
    expect(await rowsOf('audit.exported', viewer.id)).toHaveLength(1);
  });
});

describe('an export that does not end', () => {
  const ROWS = 900;
  const session = 's-trail-large';
  let base: string;

  beforeAll(async () => {
    base = await app.listen({ port: 0, host: '127.0.0.1' });
    // 900 rows of 24 KB (about 22 MB, one page): more than the sockets between server and client hold, so the
    // server is still writing when the client goes away.
    const content = 'x'.repeat(24_000);
    for (let i = 0; i < ROWS; i++) {
      app.ctx.audit.enqueue(intentRow(callContext({ sessionId: session, arguments: { i, content } }), deny));
      if (i % 100 === 99) await app.ctx.audit.writer.flush();
    }
    await app.ctx.audit.writer.flush();
  });

  it.each(['csv', 'jsonl'] as const)('%s: a client that goes away mid-file leaves an audit.export_ended row with complete false, never the full count', async (format) => {
    const viewer = await operator('viewer');
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      get(`${base}/v1/audit/export?format=${format}&session=${session}`, { headers: bearer(viewer.key) }, resolve).on('error', reject);
    });
    expect(res.statusCode).toBe(200);
    await once(res, 'data');
    res.destroy();

    const [started] = await rowsOf('audit.exported', viewer.id);
    expect(started?.details).toMatchObject({ format, filters: { session } });
    const end = await endOf(viewer.id);
    expect(end.details).toMatchObject({ export_id: started?.details['export_id'], complete: false, ended_by: 'client' });
    expect(end.details['rows']).toBeUndefined();
    expect(end.details['rows_at_most']).toBeLessThan(ROWS);
  });
});
