import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_COLUMN_NAMES, makeRecord } from '../../src/audit/record.js';
import { intentRow } from '../../src/audit/rows.js';
import { auditStore } from '../../src/audit/store.js';
import { bearer, TestContext } from '../helpers/context.js';
import { agentPrincipal, callContext } from './audit-fixtures.js';

// GET /v1/audit?after=: the rows committed since an earlier answer, each once, whatever their ts and
// whatever order their transactions commit in (docs/adr/0034-audit-follow-cursor.md). Rows are inserted
// here as the writer inserts them (auditStore.insertBatch), some in a transaction held open, to make the
// interleavings a sequence-numbered cursor gets wrong.

const ctx = new TestContext();
let app: FastifyInstance;
let owner: string;
let db: pg.Pool;
const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;

beforeAll(async () => {
  await ctx.setup();
  app = await ctx.app();
  owner = await ctx.operatorKey(app, 'owner');
  db = ctx.pool();
});
afterAll(async () => {
  await ctx.teardown();
});

type Page = { events: Array<Record<string, unknown> & { id: string; ts: string }>; next: string | null; follow: string };

async function get(query: string): Promise<Page> {
  const res = await app.inject({ method: 'GET', url: `/v1/audit?${query}`, headers: bearer(owner) });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as Page;
}

let seq = 0;
/** One INTENT row of the token, with the given ts, as the writer stores it (its own chain position). */
function row(token: string, ts: Date) {
  const r = makeRecord(intentRow(callContext({ agent: agentPrincipal({ id: token }) }), allow), uuidv7(), ts, 'follow-test', ++seq, 'x');
  r.hash = `h${seq}`;
  return r;
}

const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000);

describe('GET /v1/audit?after=', () => {
  it('gives a row whose transaction commits after a later one was seen, once, though its ts is an hour old (the interleaving a sequence number or a ts window misses)', async () => {
    const token = uuidv7();
    const q = `token=${token}`;
    const start = await get(q);
    expect(start.events).toEqual([]);

    // T1 takes its transaction id first and stays open (a slow batch, a replay of a spool).
    const t1 = await db.connect();
    try {
      await t1.query('BEGIN');
      const late = row(token, minutesAgo(60));
      await auditStore.insertBatch(t1, [late]);
      // T2 begins after T1, commits at once (another hour: see the next test).
      const early = row(token, minutesAgo(0));
      await auditStore.insertBatch(db, [early]);

      const p1 = await get(`${q}&after=${start.follow}`);
      expect(p1.events.map((e) => e.id)).toEqual([early.id]);
      expect(p1.next).toBeNull();
      // Nothing new: the same rows are not given again.
      const p2 = await get(`${q}&after=${p1.follow}`);
      expect(p2.events).toEqual([]);

      await t1.query('COMMIT');
      const p3 = await get(`${q}&after=${p2.follow}`);
      expect(p3.events.map((e) => e.id)).toEqual([late.id]);
      expect(p3.events[0]!.ts).toBe(late.ts.toISOString());
      const p4 = await get(`${q}&after=${p3.follow}`);
      expect(p4.events).toEqual([]);
      // A plain search finds both, newest first, as before.
      expect((await get(q)).events.map((e) => e.id)).toEqual([early.id, late.id]);
    } finally {
      t1.release();
    }
  });

  it('a transaction that rolls back gives nothing, and does not hold back the rows after it', async () => {
    const token = uuidv7();
    const q = `token=${token}`;
    const start = await get(q);
    const t1 = await db.connect();
    try {
      await t1.query('BEGIN');
      // Another hour than the row below: rows of one token and hour share a usage rollup row (migration
      // 0017), whose lock would make the second INSERT wait for this transaction.
      await auditStore.insertBatch(t1, [row(token, minutesAgo(120))]);
      const kept = row(token, minutesAgo(0));
      await auditStore.insertBatch(db, [kept]);
      const p1 = await get(`${q}&after=${start.follow}`);
      expect(p1.events.map((e) => e.id)).toEqual([kept.id]);
      await t1.query('ROLLBACK');
      const p2 = await get(`${q}&after=${p1.follow}`);
      expect(p2.events).toEqual([]);
    } finally {
      t1.release();
    }
  });

  it('pages cut at `limit`, also inside one transaction, continue from `follow`: every row once, oldest commit first', async () => {
    const token = uuidv7();
    const q = `token=${token}`;
    const start = await get(q);
    const first = Array.from({ length: 5 }, (_, i) => row(token, minutesAgo(30 - i)));
    const second = Array.from({ length: 3 }, (_, i) => row(token, minutesAgo(90 - i)));
    await auditStore.insertBatch(db, first);
    await auditStore.insertBatch(db, second);
    const seen: string[] = [];
    let after = start.follow;
    for (let i = 0; i < 10; i++) {
      const p = await get(`${q}&limit=3&after=${after}`);
      expect(p.events.length).toBeLessThanOrEqual(3);
      seen.push(...p.events.map((e) => e.id));
      after = p.follow;
      if (p.events.length === 0) break;
    }
    // The first batch's rows (committed first) before the second's, whose ts are older.
    expect(seen).toEqual([...first.map((r) => r.id).sort(), ...second.map((r) => r.id).sort()]);
  });

  it('rows carry no transaction id: not in the rows of the list, nor in the export', async () => {
    const token = uuidv7();
    const start = await get(`token=${token}`);
    await auditStore.insertBatch(db, [row(token, minutesAgo(0))]);
    const p = await get(`token=${token}&after=${start.follow}`);
    expect(p.events).toHaveLength(1);
    expect(Object.keys(p.events[0]!).sort()).toEqual([...AUDIT_COLUMN_NAMES].sort());
    const csv = await app.inject({ method: 'GET', url: `/v1/audit/export?format=csv&token=${token}`, headers: bearer(owner) });
    expect(csv.body.split('\n')[0]).toBe(AUDIT_COLUMN_NAMES.join(','));
    const jsonl = await app.inject({ method: 'GET', url: `/v1/audit/export?format=jsonl&token=${token}`, headers: bearer(owner) });
    expect(Object.keys(JSON.parse(jsonl.body.trim()) as object).sort()).toEqual([...AUDIT_COLUMN_NAMES].sort());
    // It is stored, for the follow: set on the row by its INSERT.
    const stored = await db.query<{ x: string | null }>('SELECT ingest_xid::text AS x FROM audit_events WHERE token_id = $1', [token]);
    expect(stored.rows[0]!.x).toMatch(/^\d+$/);
  });

  it('four writers committing out of order while a follower pages through with a small limit: every row once', async () => {
    const project = `proj-${uuidv7()}`;
    const q = `project=${project}`;
    const start = await get(q);
    const written: string[] = [];
    let writing = true;
    const writer = async (k: number) => {
      // A token per writer: rows of one token and hour share a usage rollup row, whose lock would order the commits.
      const token = uuidv7();
      const client = await db.connect();
      try {
        for (let b = 0; b < 12; b++) {
          const rows = Array.from({ length: 1 + ((b * 7 + k) % 5) }, () => {
            const r = row(token, minutesAgo((b * 13 + k * 17) % 240));
            r.project_id = project;
            return r;
          });
          // Open for a while after taking its transaction id, so later transactions commit first.
          await client.query('BEGIN');
          await auditStore.insertBatch(client, rows);
          await new Promise((r) => setTimeout(r, ((b + k) % 4) * 15));
          await client.query('COMMIT');
          written.push(...rows.map((r) => r.id));
        }
      } finally {
        client.release();
      }
    };
    const given: string[] = [];
    let after = start.follow;
    const follower = (async () => {
      for (;;) {
        const done = !writing;
        const p = await get(`${q}&limit=4&after=${after}`);
        given.push(...p.events.map((e) => e.id));
        after = p.follow;
        // A last full read once the writers are done.
        if (done && p.events.length === 0) return;
      }
    })();
    await Promise.all([0, 1, 2, 3].map(writer));
    writing = false;
    await follower;
    expect(written.length).toBeGreaterThan(100);
    expect(new Set(given).size).toBe(given.length);
    expect([...given].sort()).toEqual([...written].sort());
  }, 60_000);

  it("a project-limited key is given only its projects' rows, as by a search", async () => {
    const limited = await ctx.operatorKey(app, 'viewer', ['proj-mine']);
    const token = uuidv7();
    const start = await get(`token=${token}`);
    const mine = row(token, minutesAgo(0));
    mine.project_id = 'proj-mine';
    await auditStore.insertBatch(db, [mine, row(token, minutesAgo(0))]);
    const res = await app.inject({ method: 'GET', url: `/v1/audit?token=${token}&after=${start.follow}`, headers: bearer(limited) });
    expect(res.statusCode).toBe(200);
    expect((res.json() as Page).events.map((e) => e.id)).toEqual([mine.id]);
    expect((await get(`token=${token}&after=${start.follow}`)).events).toHaveLength(2);
  });

  it('a value that is not a cursor of this API, or one ahead of this database, is a 400 naming after; so is after with cursor', async () => {
    const { follow } = await get('limit=1');
    const xmax = BigInt(follow.split(/[.~]/)[0]!);
    for (const bad of ['abc', '12x', '-5', `${xmax}.${xmax}`, `${xmax}.1.1`, `${xmax}.2.1~`, `${xmax}~${xmax}.${uuidv7()}`, `${xmax}~1.not-a-uuid-not-a-uuid-not-a-uuid-123`, `${xmax + 1_000_000n}`, '99999999999999999999', '']) {
      const res = await app.inject({ method: 'GET', url: `/v1/audit?after=${encodeURIComponent(bad)}`, headers: bearer(owner) });
      expect(res.statusCode, bad).toBe(400);
      const { error } = res.json() as { error: { code: string; details?: Array<{ field: string }> } };
      expect(error.code).toBe('INVALID_REQUEST');
      expect(JSON.stringify(error), bad).toContain('after');
    }
    const both = await app.inject({ method: 'GET', url: `/v1/audit?after=${follow}&cursor=x`, headers: bearer(owner) });
    expect(both.statusCode).toBe(400);
    expect((both.json() as { error: { details: Array<{ field: string }> } }).error.details[0]!.field).toBe('after');
  });
});
