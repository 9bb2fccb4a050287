import { type IncomingMessage, request, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AlertEvent, AlertService } from '../../src/alerts/service.js';
import type { Alert } from '../../src/alerts/store.js';
import { bearer, TestContext } from '../helpers/context.js';
import { dbUrl } from '../helpers/env.js';
import { until } from '../helpers/unleash.js';

/** Resolves with the first event the service's live feed delivers that matches, or rejects after `ms`. */
function nextEvent(alerts: AlertService, match: (e: AlertEvent) => boolean, ms = 3_000): Promise<AlertEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no matching alert event within ${ms} ms`));
    }, ms);
    const off = alerts.subscribe((e) => {
      if (!match(e)) return;
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}

describe('alerts', () => {
  const t = new TestContext();
  let a: FastifyInstance;
  let b: FastifyInstance;
  let db: pg.Pool;
  let owner: string;
  let operator: string;
  let viewer: string;

  beforeAll(async () => {
    await t.setup();
    a = await t.app();
    b = await t.app();
    db = t.pool();
    owner = await t.operatorKey(a, 'owner');
    operator = await t.operatorKey(a, 'operator');
    viewer = await t.operatorKey(a, 'viewer');
  });
  afterAll(() => t.teardown());

  const list = async (key: string, query = '') => {
    const res = await a.inject({ method: 'GET', url: `/v1/alerts${query}`, headers: bearer(key) });
    expect(res.statusCode, res.body).toBe(200);
    return res.json() as { alerts: Array<Record<string, unknown>>; next_before: string | null };
  };

  it('raise stores a row and reaches a listener on another instance once, and the raising instance once', async () => {
    const seenOnA: AlertEvent[] = [];
    const offA = a.ctx.alerts.subscribe((e) => seenOnA.push(e));
    const onB = nextEvent(b.ctx.alerts, (e) => e.type === 'raised' && e.alert.session_id === 's-raise');
    const raised = await a.ctx.alerts.raise({
      kind: 'RATE_LIMIT_WARNING',
      message: '161/200 calls, 81% of the session limit',
      token_id: '0190e3c1-0000-7000-8000-000000000001',
      project_id: 'p1',
      session_id: 's-raise',
      server: 'filesystem',
      numbers: { used: 161, max: 200, percent: 81 },
    });
    const event = await onB;
    expect(event.alert.id).toBe(raised.id);
    expect(event.alert.numbers).toEqual({ used: 161, max: 200, percent: 81 });
    expect(event.alert.created_at).toBeInstanceOf(Date);
    expect(event.alert.created_at.getTime()).toBe(raised.created_at.getTime());
    expect(raised.severity).toBe('warning');

    const { rows } = await db.query('SELECT * FROM alerts WHERE id = $1', [raised.id]);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ kind: 'RATE_LIMIT_WARNING', severity: 'warning', token_id: '0190e3c1-0000-7000-8000-000000000001', project_id: 'p1', session_id: 's-raise', server: 'filesystem', numbers: { used: 161, max: 200, percent: 81 }, acknowledged_at: null });

    // The raising instance gets it directly, and must not get it a second time through Redis.
    await new Promise((r) => setTimeout(r, 200));
    offA();
    expect(seenOnA.filter((e) => e.alert.id === raised.id)).toHaveLength(1);
  });

  it('lists with filters, newest first, and pages by keyset', async () => {
    const svc = a.ctx.alerts;
    const k1 = await svc.raise({ kind: 'SESSION_HALTED', message: 'halted', session_id: 's-f1', server: 'github', token_id: 'tok-f1', details: { trigger: 'SESSION_LIMIT' } });
    const k2 = await svc.raise({ kind: 'CASCADE_WRITE', message: 'cascade', session_id: 's-f2', server: 'filesystem', token_id: 'tok-f1' });
    const k3 = await svc.raise({ kind: 'APPROVAL_REQUESTED', message: 'approval', session_id: 's-f3', server: 'postgres', token_id: 'tok-f2' });

    expect((await list(viewer, '?kind=SESSION_HALTED&token=tok-f1')).alerts.map((x) => x.id)).toEqual([k1.id]);
    expect((await list(viewer, '?kind=SESSION_HALTED&kind=CASCADE_WRITE&token=tok-f1')).alerts.map((x) => x.id)).toEqual([k2.id, k1.id]);
    expect((await list(viewer, '?severity=info&token=tok-f2')).alerts.map((x) => x.id)).toEqual([k3.id]);
    expect((await list(viewer, '?severity=critical&token=tok-f2')).alerts).toEqual([]);
    expect((await list(viewer, '?session=s-f2')).alerts.map((x) => x.id)).toEqual([k2.id]);
    expect((await list(viewer, '?server=postgres')).alerts.map((x) => x.id)).toEqual([k3.id]);
    const one = (await list(viewer, '?session=s-f1')).alerts[0]!;
    expect(one.details).toEqual({ trigger: 'SESSION_LIMIT' });

    const from = encodeURIComponent(k2.created_at.toISOString());
    const window = await list(viewer, `?from=${from}&to=${encodeURIComponent(new Date(k3.created_at.getTime() + 1).toISOString())}`);
    expect(window.alerts.map((x) => x.id)).toEqual(expect.arrayContaining([k3.id, k2.id]));
    expect(window.alerts.map((x) => x.id)).not.toContain(k1.id);

    const page1 = await list(viewer, '?limit=2');
    expect(page1.alerts.map((x) => x.id)).toEqual([k3.id, k2.id]);
    expect(page1.next_before).toBe(k2.id);
    const page2 = await list(viewer, `?limit=2&before=${page1.next_before}`);
    expect(page2.alerts[0]!.id).toBe(k1.id);

    const bad = await a.inject({ method: 'GET', url: '/v1/alerts?kind=NO_SUCH_KIND', headers: bearer(viewer) });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.code).toBe('INVALID_REQUEST');
    const extra = await a.inject({ method: 'GET', url: '/v1/alerts?colour=red', headers: bearer(viewer) });
    expect(extra.statusCode).toBe(400);
  });

  it('an operator acknowledges once (note kept, every replica told); a second ack is 409 CONFLICT', async () => {
    const alert = await a.ctx.alerts.raise({ kind: 'TOOL_CHANGED', message: 'github/create_issue changed', server: 'github' });
    expect((await list(viewer, `?acknowledged=false&server=github`)).alerts.map((x) => x.id)).toContain(alert.id);

    const onB = nextEvent(b.ctx.alerts, (e) => e.type === 'acknowledged' && e.alert.id === alert.id);
    const res = await a.inject({ method: 'POST', url: `/v1/alerts/${alert.id}/ack`, headers: bearer(operator), payload: { note: 'expected upgrade' } });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json();
    expect(body.acknowledged_by).toMatch(/^operator:/);
    expect(body.ack_note).toBe('expected upgrade');
    expect(typeof body.acknowledged_at).toBe('string');
    expect((await onB).alert.acknowledged_by).toBe(body.acknowledged_by);

    const { rows } = await db.query('SELECT acknowledged_by, ack_note, acknowledged_at FROM alerts WHERE id = $1', [alert.id]);
    expect(rows[0].acknowledged_by).toBe(body.acknowledged_by);
    expect(rows[0].acknowledged_at).not.toBeNull();

    expect((await list(viewer, `?acknowledged=false&server=github`)).alerts.map((x) => x.id)).not.toContain(alert.id);
    expect((await list(viewer, `?acknowledged=true&server=github`)).alerts.map((x) => x.id)).toContain(alert.id);

    const again = await b.inject({ method: 'POST', url: `/v1/alerts/${alert.id}/ack`, headers: bearer(owner), payload: {} });
    expect(again.statusCode).toBe(409);
    expect(again.json().error.code).toBe('CONFLICT');
    expect(again.json().error.details.acknowledged_by).toBe(body.acknowledged_by);

    // The audit trail says who acknowledged it and why (once: the 409 adds nothing).
    const audited = async () => (await db.query(`SELECT actor_type, actor_id, details FROM audit_events WHERE action = 'alert.acknowledged' AND target = $1`, [`alert:${alert.id}`])).rows;
    await until(async () => (await audited()).length > 0, 5_000, 'the alert.acknowledged audit row');
    const auditRows = await audited();
    expect(auditRows).toHaveLength(1);
    expect(`${auditRows[0].actor_type}:${auditRows[0].actor_id}`).toBe(body.acknowledged_by);
    expect(auditRows[0].details).toMatchObject({ kind: 'TOOL_CHANGED', note: 'expected upgrade', message: 'github/create_issue changed' });
  });

  it('a credential pasted into an acknowledgement note is masked in the alert as in its audit row', async () => {
    const alert = await a.ctx.alerts.raise({ kind: 'FLAGS_RECOVERED', message: 'flags fetched again' });
    const res = await a.inject({ method: 'POST', url: `/v1/alerts/${alert.id}/ack`, headers: bearer(operator), payload: { note: `rotated ${operator}, PGPASSWORD=hunter2` } });
    expect(res.statusCode, res.body).toBe(200);
    const masked = 'rotated ksop_[REDACTED], PGPASSWORD=[REDACTED]';
    expect(res.json().ack_note).toBe(masked);
    expect((await db.query('SELECT ack_note FROM alerts WHERE id = $1', [alert.id])).rows[0].ack_note).toBe(masked);
    expect((await a.inject({ url: `/v1/alerts/${alert.id}`, headers: bearer(viewer) })).json().ack_note).toBe(masked);
    const audited = async () => (await db.query(`SELECT details FROM audit_events WHERE action = 'alert.acknowledged' AND target = $1`, [`alert:${alert.id}`])).rows;
    await until(async () => (await audited()).length > 0, 5_000, 'the alert.acknowledged audit row');
    expect((await audited())[0].details.note).toBe(masked);
  });

  it('concurrent acknowledgements on two replicas: exactly one wins, the rest are 409', async () => {
    const alert = await a.ctx.alerts.raise({ kind: 'SESSION_HALTED', message: 'race' });
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).inject({ method: 'POST', url: `/v1/alerts/${alert.id}/ack`, headers: bearer(operator), payload: { note: `n${i}` } })),
    );
    const codes = results.map((r) => r.statusCode).sort();
    expect(codes).toEqual([200, 409, 409, 409, 409, 409]);
  });

  it('acknowledging without a body works; an unknown alert is 404', async () => {
    const alert = await a.ctx.alerts.raise({ kind: 'FLAGS_STALE', message: 'no fetch for 31 s', numbers: { seconds: 31 } });
    const res = await a.inject({ method: 'POST', url: `/v1/alerts/${alert.id}/ack`, headers: bearer(operator) });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().ack_note).toBeNull();
    const missing = await a.inject({ method: 'POST', url: '/v1/alerts/0190e3c1-0000-7000-8000-00000000ffff/ack', headers: bearer(operator), payload: {} });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error.code).toBe('NOT_FOUND');
  });

  it('a viewer may read but not acknowledge (403 FORBIDDEN); agent tokens and gateway keys get 403 MCP_TOKEN_FORBIDDEN', async () => {
    const alert = await a.ctx.alerts.raise({ kind: 'KILL_CREATED', message: 'kill everything', details: { kill_id: 'k1' } });
    const get = await a.inject({ method: 'GET', url: `/v1/alerts/${alert.id}`, headers: bearer(viewer) });
    expect(get.statusCode).toBe(200);
    expect(get.json().severity).toBe('critical');

    const byViewer = await a.inject({ method: 'POST', url: `/v1/alerts/${alert.id}/ack`, headers: bearer(viewer), payload: {} });
    expect(byViewer.statusCode).toBe(403);
    expect(byViewer.json().error.code).toBe('FORBIDDEN');

    const agent = await a.inject({
      method: 'POST',
      url: '/v1/keys',
      headers: bearer(owner),
      payload: { type: 'ro', role: 'code_agent', project_id: 'p1', environment: 'development' },
    });
    expect(agent.statusCode, agent.body).toBe(201);
    const agentToken = agent.json().token as string;
    const gateway = await a.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(owner), payload: { name: 'gw' } });
    const gatewayKey = gateway.json().key as string;

    for (const credential of [agentToken, gatewayKey]) {
      for (const req of [
        { method: 'GET' as const, url: '/v1/alerts' },
        { method: 'GET' as const, url: '/v1/alerts/stream' },
        { method: 'POST' as const, url: `/v1/alerts/${alert.id}/ack`, payload: {} },
      ]) {
        const res = await a.inject({ ...req, headers: bearer(credential) });
        expect(res.statusCode, `${req.method} ${req.url}`).toBe(403);
        expect(res.json().error.code).toBe('MCP_TOKEN_FORBIDDEN');
      }
    }
    // An agent token sent beside an operator key is refused too.
    const both = await a.inject({ method: 'GET', url: '/v1/alerts', headers: { ...bearer(operator), 'x-agent-token': agentToken } });
    expect(both.json().error.code).toBe('MCP_TOKEN_FORBIDDEN');
    expect((await a.inject({ method: 'GET', url: '/v1/alerts' })).statusCode).toBe(401);
    const stillOpen = await db.query('SELECT acknowledged_at FROM alerts WHERE id = $1', [alert.id]);
    expect(stillOpen.rows[0].acknowledged_at).toBeNull();
  });

  it('a project-limited operator sees its projects and project-less alerts only', async () => {
    const mine = await a.ctx.alerts.raise({ kind: 'RATE_LIMITED', message: 'mine', project_id: 'team-a', server: 'srv-proj' });
    const theirs = await a.ctx.alerts.raise({ kind: 'RATE_LIMITED', message: 'theirs', project_id: 'team-b', server: 'srv-proj' });
    const global = await a.ctx.alerts.raise({ kind: 'FLAGS_STALE', message: 'global', server: 'srv-proj' });
    const limited = await t.operatorKey(a, 'operator', ['team-a']);

    const seen = (await list(limited, '?server=srv-proj')).alerts.map((x) => x.id);
    expect(seen).toEqual([global.id, mine.id]);
    expect((await list(limited, '?server=srv-proj&project=team-b')).alerts).toEqual([]);
    expect((await list(owner, '?server=srv-proj')).alerts.map((x) => x.id)).toEqual([global.id, theirs.id, mine.id]);

    const get = await a.inject({ method: 'GET', url: `/v1/alerts/${theirs.id}`, headers: bearer(limited) });
    expect(get.statusCode).toBe(404);
    const ack = await a.inject({ method: 'POST', url: `/v1/alerts/${theirs.id}/ack`, headers: bearer(limited), payload: {} });
    expect(ack.statusCode).toBe(404);
    const ackMine = await a.inject({ method: 'POST', url: `/v1/alerts/${mine.id}/ack`, headers: bearer(limited), payload: {} });
    expect(ackMine.statusCode).toBe(200);
  });

  it('a project-limited operator may read an alert of no project but not acknowledge it (403 FORBIDDEN); an unlimited key may', async () => {
    const global = await a.ctx.alerts.raise({ kind: 'DEPENDENCY_UNAVAILABLE', message: 'redis unreachable: decisions fail closed', server: 'srv-noproj' });
    const limited = await t.operatorKey(a, 'operator', ['team-a']);

    const get = await a.inject({ method: 'GET', url: `/v1/alerts/${global.id}`, headers: bearer(limited) });
    expect(get.statusCode).toBe(200);
    expect((await list(limited, '?server=srv-noproj')).alerts.map((x) => x.id)).toEqual([global.id]);

    const refused = await a.inject({ method: 'POST', url: `/v1/alerts/${global.id}/ack`, headers: bearer(limited), payload: { note: 'not mine to clear' } });
    expect(refused.statusCode, refused.body).toBe(403);
    expect(refused.json().error.code).toBe('FORBIDDEN');
    const { rows } = await db.query('SELECT acknowledged_at FROM alerts WHERE id = $1', [global.id]);
    expect(rows[0].acknowledged_at).toBeNull();
    expect((await list(viewer, '?server=srv-noproj&acknowledged=false')).alerts.map((x) => x.id)).toEqual([global.id]);

    const byUnlimited = await a.inject({ method: 'POST', url: `/v1/alerts/${global.id}/ack`, headers: bearer(operator), payload: {} });
    expect(byUnlimited.statusCode, byUnlimited.body).toBe(200);
  });

  describe('POST /v1/alerts/ack (by filter)', () => {
    const bulkAck = (key: string, payload: unknown, app: FastifyInstance = a) => app.inject({ method: 'POST', url: '/v1/alerts/ack', headers: bearer(key), payload: payload as Record<string, unknown> });
    const openIds = async (query: string) => (await list(owner, `${query}&acknowledged=false`)).alerts.map((x) => x.id);

    it('acknowledges every open alert that matches in one go, says how many, tells every replica, one audit row per alert with the masked note', async () => {
      const storm: Alert[] = [];
      for (let i = 0; i < 3; i++) storm.push(await a.ctx.alerts.raise({ kind: 'KILL_SWITCH', message: `denied by mcp.git.write #${i}`, project_id: 'bulk-1' }));
      const other = await a.ctx.alerts.raise({ kind: 'SESSION_HALTED', message: 'halted', project_id: 'bulk-1' });
      const elsewhere = await a.ctx.alerts.raise({ kind: 'KILL_SWITCH', message: 'other project', project_id: 'bulk-9' });
      const seenOnB: string[] = [];
      const off = b.ctx.alerts.subscribe((e) => e.type === 'acknowledged' && seenOnB.push(e.alert.id));

      // A single kind is read as a list of one.
      const res = await bulkAck(operator, { kind: 'KILL_SWITCH', project_id: 'bulk-1', note: `INC-7 storm over, rotated ${operator}` });
      expect(res.statusCode, res.body).toBe(200);
      expect(res.json()).toEqual({ acknowledged: 3, ids: storm.map((s) => s.id), remaining: 0 });
      expect(await openIds('?project=bulk-1')).toEqual([other.id]);
      expect(await openIds('?project=bulk-9')).toEqual([elsewhere.id]);
      const { rows } = await db.query('SELECT acknowledged_by, ack_note FROM alerts WHERE id = ANY($1::uuid[])', [storm.map((s) => s.id)]);
      const masked = 'INC-7 storm over, rotated ksop_[REDACTED]';
      for (const r of rows) expect(r).toMatchObject({ acknowledged_by: expect.stringMatching(/^operator:/), ack_note: masked });
      await until(() => seenOnB.length === 3, 2_000, 'replica b told of the 3 acknowledgements');
      off();
      expect(seenOnB.sort()).toEqual(storm.map((s) => s.id).sort());

      const audited = async () =>
        (await db.query(`SELECT actor_type, actor_id, target, details FROM audit_events WHERE action = 'alert.acknowledged' AND target = ANY($1::text[])`, [storm.map((s) => `alert:${s.id}`)])).rows;
      await until(async () => (await audited()).length === 3, 5_000, 'three alert.acknowledged audit rows');
      for (const r of await audited()) {
        expect(`${r.actor_type}:${r.actor_id}`).toBe(rows[0].acknowledged_by);
        expect(r.details).toMatchObject({ kind: 'KILL_SWITCH', note: masked, bulk: { kind: ['KILL_SWITCH'], project_id: 'bulk-1' } });
      }

      // Nothing left to match: 0, not an error.
      expect((await bulkAck(operator, { kind: ['KILL_SWITCH'], project_id: 'bulk-1', note: 'again' })).json()).toEqual({ acknowledged: 0, ids: [], remaining: 0 });
    });

    it('before= takes only alerts raised before that instant; severity filters', async () => {
      const old = await a.ctx.alerts.raise({ kind: 'RATE_LIMIT_WARNING', message: 'old', project_id: 'bulk-2' });
      const oldInfo = await a.ctx.alerts.raise({ kind: 'KILL_LIFTED', message: 'old info', project_id: 'bulk-2' });
      await new Promise((r) => setTimeout(r, 20));
      const cut = new Date().toISOString();
      await new Promise((r) => setTimeout(r, 20));
      const fresh = await a.ctx.alerts.raise({ kind: 'RATE_LIMIT_WARNING', message: 'new', project_id: 'bulk-2' });
      const res = await bulkAck(operator, { before: cut, severity: 'warning', project_id: 'bulk-2', note: 'read up to here' });
      expect(res.json()).toEqual({ acknowledged: 1, ids: [old.id], remaining: 0 });
      expect((await openIds('?project=bulk-2')).sort()).toEqual([fresh.id, oldInfo.id].sort());
    });

    it('needs a filter or all: true (400), an operator role (403), known kinds (400)', async () => {
      const noFilter = await bulkAck(operator, { note: 'everything?' });
      expect(noFilter.statusCode).toBe(400);
      expect(noFilter.json().error.code).toBe('INVALID_REQUEST');
      expect((await bulkAck(operator, { kind: [], note: 'x' })).statusCode).toBe(400);
      expect((await bulkAck(operator, { kind: 'NO_SUCH_KIND', note: 'x' })).statusCode).toBe(400);
      expect((await bulkAck(operator, { kind: 'KILL_SWITCH' })).statusCode).toBe(400);
      const byViewer = await bulkAck(viewer, { all: true, note: 'x' });
      expect(byViewer.statusCode).toBe(403);
      expect(byViewer.json().error.code).toBe('FORBIDDEN');
    });

    it('a project-limited operator acknowledges only alerts of its projects: all: true leaves other projects and project-less alerts, another project is 403', async () => {
      const mine = await a.ctx.alerts.raise({ kind: 'KILL_SWITCH', message: 'mine', project_id: 'bulk-3' });
      const theirs = await a.ctx.alerts.raise({ kind: 'KILL_SWITCH', message: 'theirs', project_id: 'bulk-4' });
      const global = await a.ctx.alerts.raise({ kind: 'KILL_SWITCH', message: 'global', server: 'srv-bulk-global' });
      const limited = await t.operatorKey(a, 'operator', ['bulk-3']);

      const res = await bulkAck(limited, { all: true, note: 'my project is fine' }, b);
      expect(res.statusCode, res.body).toBe(200);
      expect(res.json().ids).toEqual([mine.id]);
      expect(res.json().remaining).toBeGreaterThanOrEqual(1);
      expect(await openIds('?project=bulk-4')).toEqual([theirs.id]);
      expect(await openIds('?server=srv-bulk-global')).toEqual([global.id]);

      const refused = await bulkAck(limited, { project_id: 'bulk-4', note: 'not mine' });
      expect(refused.statusCode).toBe(403);
      expect(refused.json().error.code).toBe('FORBIDDEN');
      expect(await openIds('?project=bulk-4')).toEqual([theirs.id]);
    });
  });

  it('raiseOnce raises once per key and window across replicas', async () => {
    const input = { kind: 'FLAGS_STALE' as const, message: 'no successful Unleash fetch for 31 s', numbers: { seconds: 31 } };
    const results = await Promise.all([a, b, a, b].map((app) => app.ctx.alerts.raiseOnce('flags-stale', 2, input)));
    const raised = results.filter((r) => r !== null);
    expect(raised).toHaveLength(1);
    const { rows } = await db.query("SELECT count(*)::int AS n FROM alerts WHERE message = 'no successful Unleash fetch for 31 s'");
    expect(rows[0].n).toBe(1);
    await new Promise((r) => setTimeout(r, 2_100));
    expect(await b.ctx.alerts.raiseOnce('flags-stale', 2, input)).not.toBeNull();
  });

  it('raise never rejects: with Postgres unreachable the alert is still broadcast to the live feed', async () => {
    const broken = await t.app({ databaseUrl: dbUrl('ks_t_no_such_database') });
    const onB = nextEvent(b.ctx.alerts, (e) => e.alert.session_id === 's-nodb');
    const alert = await broken.ctx.alerts.raise({ kind: 'DEPENDENCY_UNAVAILABLE', message: 'postgres down', session_id: 's-nodb' });
    expect(alert.kind).toBe('DEPENDENCY_UNAVAILABLE');
    expect((await onB).alert.id).toBe(alert.id);
    expect(t.logs.text).toContain('could not store the alert in Postgres');
    const { rows } = await db.query('SELECT 1 FROM alerts WHERE id = $1', [alert.id]);
    expect(rows).toHaveLength(0);
  });

  describe('SSE stream', () => {
    interface SseEvent {
      id?: string;
      event?: string;
      data: Record<string, unknown>;
    }

    /** Opens the stream on a real port and collects parsed events. */
    async function openStream(app: FastifyInstance, key: string, headers: Record<string, string> = {}, query = '') {
      const address = app.server.address();
      const base = typeof address === 'object' && address ? `http://127.0.0.1:${address.port}` : '';
      const controller = new AbortController();
      const res = await fetch(`${base}/v1/alerts/stream${query}`, { headers: { ...bearer(key), ...headers }, signal: controller.signal });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const events: SseEvent[] = [];
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      const pump = (async () => {
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return;
            buffer += value;
            let i = buffer.indexOf('\n\n');
            while (i >= 0) {
              const frame = buffer.slice(0, i);
              buffer = buffer.slice(i + 2);
              const ev: Partial<SseEvent> = {};
              for (const line of frame.split('\n')) {
                if (line.startsWith('id: ')) ev.id = line.slice(4);
                else if (line.startsWith('event: ')) ev.event = line.slice(7);
                else if (line.startsWith('data: ')) ev.data = JSON.parse(line.slice(6));
              }
              if (ev.data) events.push(ev as SseEvent);
              i = buffer.indexOf('\n\n');
            }
          }
        } catch {
          // aborted
        }
      })();
      const waitFor = async (pred: (e: SseEvent) => boolean, ms = 3_000) => {
        const deadline = Date.now() + ms;
        while (Date.now() < deadline) {
          const found = events.find(pred);
          if (found) return found;
          await new Promise((r) => setTimeout(r, 20));
        }
        throw new Error('no matching SSE event');
      };
      return { events, waitFor, close: () => controller.abort(), done: pump };
    }

    it('streams alerts raised on another instance, filtered by project, and replays after Last-Event-ID', async () => {
      const sse = await t.app();
      await sse.listen({ port: 0, host: '127.0.0.1' });
      const limited = await t.operatorKey(a, 'viewer', ['team-s']);
      const stream = await openStream(sse, limited);

      const hidden = await a.ctx.alerts.raise({ kind: 'RATE_LIMITED', message: 'other project', project_id: 'team-x', server: 'sse' });
      const shown = await a.ctx.alerts.raise({ kind: 'RATE_LIMITED', message: 'my project', project_id: 'team-s', server: 'sse' });
      const got = await stream.waitFor((e) => e.data['id'] === shown.id);
      expect(got.event).toBe('alert');
      expect(got.id).toBe(shown.id);
      expect(stream.events.some((e) => e.data['id'] === hidden.id)).toBe(false);

      await a.inject({ method: 'POST', url: `/v1/alerts/${shown.id}/ack`, headers: bearer(owner), payload: {} });
      const ack = await stream.waitFor((e) => e.event === 'ack' && e.data['id'] === shown.id);
      expect(ack.id).toBeUndefined();
      stream.close();

      // Missed while disconnected: replayed from Postgres on reconnect.
      const missed1 = await a.ctx.alerts.raise({ kind: 'SESSION_HALTED', message: 'missed 1', project_id: 'team-s' });
      const missed2 = await a.ctx.alerts.raise({ kind: 'SESSION_HALTED', message: 'missed 2' });
      const again = await openStream(sse, limited, { 'last-event-id': shown.id }, '?kind=SESSION_HALTED');
      await again.waitFor((e) => e.data['id'] === missed2.id);
      expect(again.events.map((e) => e.data['id'])).toEqual([missed1.id, missed2.id]);

      // Closing the app ends open streams instead of hanging: an open stream would keep close() waiting
      // forever (the test would time out), and the client sees its stream end.
      await sse.close();
      await again.done;
    });

    it('a stream whose operator key is revoked after it connected ends at the next heartbeat', async () => {
      const sse = await t.app();
      sse.ctx.alerts.streamHeartbeatMs = 50;
      await sse.listen({ port: 0, host: '127.0.0.1' });
      const base = `http://127.0.0.1:${(sse.server.address() as AddressInfo).port}`;
      const leaving = await t.operatorKey(sse, 'viewer');
      const stream = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = request(`${base}/v1/alerts/stream`, { headers: bearer(leaving) }, resolve);
        req.on('error', reject);
        req.end();
      });
      expect(stream.statusCode).toBe(200);
      stream.on('error', () => {});
      stream.resume();
      let closed = false;
      stream.on('close', () => {
        closed = true;
      });
      await new Promise((r) => setTimeout(r, 200));
      expect(closed).toBe(false);
      const id = (await sse.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(owner) })).json().keys.find((k: { display_prefix: string }) => leaving.startsWith(k.display_prefix)).id;
      expect((await sse.inject({ method: 'POST', url: `/v1/operator-keys/${id}/revoke`, headers: bearer(owner) })).statusCode).toBe(204);
      const deadline = Date.now() + 3_000;
      while (!closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(closed).toBe(true);
      await sse.close();
    });

    it('a client that stops reading during an alert storm is cut off, and later heartbeats do not crash the process', async () => {
      const uncaught: unknown[] = [];
      const onUncaught = (err: unknown) => uncaught.push(err);
      process.on('uncaughtException', onUncaught);
      try {
        const sse = await t.app();
        sse.ctx.alerts.streamHeartbeatMs = 50;
        await sse.listen({ port: 0, host: '127.0.0.1' });
        const base = `http://127.0.0.1:${(sse.server.address() as AddressInfo).port}`;
        // The server's side of the stream, to know when it gave up on the client.
        let serverSide: ServerResponse | undefined;
        sse.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
          if (req.url?.startsWith('/v1/alerts/stream')) serverSide = res;
        });

        // A raw client that never reads the body (a laptop asleep with the admin UI open).
        const stalled = await new Promise<IncomingMessage>((resolve, reject) => {
          const req = request(`${base}/v1/alerts/stream`, { headers: bearer(viewer) }, resolve);
          req.on('error', reject);
          req.end();
        });
        expect(stalled.statusCode).toBe(200);
        stalled.pause();
        stalled.on('error', () => {});
        const closed = new Promise<void>((resolve) => stalled.on('close', () => resolve()));

        // ~10 kB frames until the kernel's socket buffers and then the 1 MB allowance are full.
        const pad = 'x'.repeat(7_900);
        const message = 'storm '.repeat(300);
        let raised = 0;
        const gaveUp = () => serverSide !== undefined && (serverSide.writableEnded || serverSide.destroyed);
        while (raised < 2_000 && !gaveUp()) {
          await Promise.all(Array.from({ length: 50 }, () => sse.ctx.alerts.raise({ kind: 'KILL_SWITCH', message, server: 'sse-storm', details: { pad } })));
          raised += 50;
        }
        console.log(`slow SSE client cut off after ${raised} alerts (~${Math.round((raised * 10_300) / 1e6)} MB)`);
        expect(gaveUp()).toBe(true);

        // Several heartbeats later the process still serves, and nothing was thrown.
        await new Promise((r) => setTimeout(r, 500));
        expect(uncaught).toEqual([]);
        const res = await fetch(`${base}/v1/alerts?limit=1`, { headers: bearer(viewer) });
        expect(res.status).toBe(200);
        expect(t.logs.text).toContain('alerts stream: the client fell too far behind');

        // The client is disconnected (it would reconnect with Last-Event-ID): once it reads what the
        // kernel still held, its connection closes instead of staying open forever.
        stalled.resume();
        await closed;
      } finally {
        process.off('uncaughtException', onUncaught);
      }
    });
  });
});
