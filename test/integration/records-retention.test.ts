import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditService } from '../../src/audit/service.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { applyRecordsRetention } from '../../src/retention/service.js';
import { LogCapture, TestContext } from '../helpers/context.js';

// Retention of alerts, approval requests and sessions (RECORDS_RETENTION_DAYS, src/retention): what is
// older than the cutoff goes, in batches; nothing in force and nothing a halt row names is touched.

const ctx = new TestContext();
const logs = new LogCapture();
const DAY = 86_400_000;
const HOUR = 3_600_000;
const now = Date.now();
const ago = (ms: number) => new Date(now - ms);
let pool: Pool;
let audit: AuditService;
let tokenId: string;
/** A token with a halt in force (at most one per token). */
let otherTokenId: string;

beforeAll(async () => {
  await ctx.setup();
  pool = createPool(ctx.databaseUrl, { max: 4 });
  audit = await AuditService.start(ctx.config({ recordsRetentionDays: 90 }), pool, pino({ level: 'info' }, logs), {
    retentionJob: false,
    dataDir: await mkdtemp(join(tmpdir(), 'ks-records-retention-')),
  });
  tokenId = uuidv7();
  otherTokenId = uuidv7();
  for (const id of [tokenId, otherTokenId]) {
    await pool.query(
      `INSERT INTO agent_tokens (id, type, key_prefix, display_prefix, key_hash, scopes, role, project_id, environment, created_by)
       VALUES ($1, 'rw', 'mcp_rw_', 'mcp_rw_test', $2, '{}', 'developer', 'proj-r', 'development', 'test')`,
      [id, randomBytes(32)],
    );
  }
});
afterAll(async () => {
  await audit.close();
  await pool.end();
  await ctx.teardown();
});

async function alert(createdAgo: number, acknowledged = false): Promise<string> {
  const id = uuidv7({ msecs: now - createdAgo });
  await pool.query(
    `INSERT INTO alerts (id, kind, severity, message, created_at, acknowledged_at, acknowledged_by)
     VALUES ($1, 'SESSION_HALTED', 'warning', 'a session was halted', $2, $3, $4)`,
    [id, ago(createdAgo), acknowledged ? ago(createdAgo - HOUR) : null, acknowledged ? 'operator:test' : null],
  );
  return id;
}

interface ApprovalFixture {
  state: 'pending' | 'approved' | 'rejected' | 'expired' | 'used';
  created: number;
  expires: number;
  decided?: number;
  used?: number;
  kind?: 'call' | 'production_grant';
  sessionId?: string;
}

/** Times are ms ago; a negative `expires` is in the future. */
async function approval(a: ApprovalFixture): Promise<string> {
  const id = uuidv7({ msecs: now - a.created });
  await pool.query(
    `INSERT INTO approvals (id, kind, call_key, token_id, project_id, environment, role, session_id, server, tool, capability, arguments, arguments_hash,
       rule, separate_approver, ttl_seconds, state, requested_decision_id, created_at, expires_at, decided_at, decided_by, used_at)
     VALUES ($1, $2, $3, $4, 'proj-r', 'development', 'developer', $5, 'fs', 'write_file', 'write', '{}', 'h', 'r', false, 900, $6, $7, $8, $9, $10, $11, $12)`,
    [
      id,
      a.kind ?? 'call',
      `ck-${id}`,
      tokenId,
      a.sessionId ?? uuidv7(),
      a.state,
      uuidv7(),
      ago(a.created),
      ago(a.expires),
      a.decided === undefined ? null : ago(a.decided),
      a.decided === undefined ? null : 'operator:test',
      a.used === undefined ? null : ago(a.used),
    ],
  );
  return id;
}

async function session(state: 'active' | 'halted' | 'closed', created: number, closed?: number): Promise<string> {
  const id = uuidv7({ msecs: now - created });
  await pool.query(
    `INSERT INTO sessions (id, token_id, state, trigger, halted_at, created_at, closed_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [id, tokenId, state, state === 'halted' ? 'LOOP_DETECTED' : null, state === 'halted' ? ago(created - HOUR) : null, ago(created), closed === undefined ? null : ago(closed)],
  );
  return id;
}

const ids = async (table: 'alerts' | 'approvals' | 'sessions'): Promise<string[]> => (await pool.query<{ id: string }>(`SELECT id FROM ${table} ORDER BY id`)).rows.map((r) => r.id).sort();
const sorted = (xs: string[]) => [...xs].sort();

async function retentionRows(): Promise<Array<{ actor_type: string; actor_id: string; target: string; details: Record<string, unknown> }>> {
  await audit.writer.flush();
  const { rows } = await pool.query("SELECT actor_type, actor_id, target, details FROM audit_events WHERE kind = 'ADMIN' AND action = 'records.retention' ORDER BY seq");
  return rows;
}

describe('records retention', () => {
  it('removes alerts, settled approvals and closed sessions older than the cutoff, in batches, and keeps everything in force or younger', async () => {
    const alertsGone = [await alert(200 * DAY, true), await alert(95 * DAY), await alert(91 * DAY, true)];
    const alertsKept = [await alert(89 * DAY), await alert(10 * DAY, true), await alert(HOUR)];

    const approvalsGone = [
      await approval({ state: 'used', created: 100 * DAY, decided: 100 * DAY - HOUR, used: 100 * DAY - 2 * HOUR, expires: 100 * DAY - 3 * HOUR }),
      await approval({ state: 'expired', created: 120 * DAY, expires: 120 * DAY - HOUR }),
      await approval({ state: 'rejected', created: 150 * DAY, decided: 150 * DAY - HOUR, expires: 150 * DAY - 2 * HOUR }),
    ];
    const openSession = await session('active', 2 * HOUR);
    const approvalsKept = [
      // Requested before the cutoff, but its grant (its last change) ended after it.
      await approval({ kind: 'production_grant', state: 'expired', created: 93 * DAY, decided: 93 * DAY, expires: 87 * DAY }),
      // Past their deadline, but the sweeper has not recorded (and audited) the expiry yet.
      await approval({ state: 'pending', created: 100 * DAY, expires: 100 * DAY - HOUR }),
      await approval({ state: 'approved', created: 100 * DAY, decided: 100 * DAY - HOUR, expires: 100 * DAY - 2 * HOUR }),
      await approval({ state: 'used', created: 10 * DAY, decided: 10 * DAY, used: 10 * DAY, expires: 10 * DAY - HOUR }),
      await approval({ state: 'pending', created: HOUR, expires: -HOUR, sessionId: openSession }),
    ];

    const sessionsGone = [await session('closed', 100 * DAY, 99 * DAY), await session('closed', 120 * DAY, 119 * DAY), await session('closed', 400 * DAY, 399 * DAY)];
    const withSessionHalt = await session('closed', 100 * DAY, 98 * DAY);
    await pool.query(
      `INSERT INTO session_halts (id, session_id, token_id, trigger, halted_at, resumed_at, resumed_by) VALUES ($1, $2, $3, 'LOOP_DETECTED', $4, $5, 'operator:test')`,
      [uuidv7(), withSessionHalt, tokenId, ago(99 * DAY), ago(99 * DAY - HOUR)],
    );
    const namedByTokenHalt = await session('closed', 100 * DAY, 98 * DAY);
    await pool.query(
      `INSERT INTO token_halts (id, token_id, trigger, session_id, halted_at, resumed_at, resumed_by) VALUES ($1, $2, 'BUDGET_EXCEEDED', $3, $4, $5, 'operator:test')`,
      [uuidv7(), tokenId, namedByTokenHalt, ago(99 * DAY), ago(99 * DAY - HOUR)],
    );
    const killed = await session('closed', 100 * DAY, 98 * DAY);
    await pool.query(`INSERT INTO kills (id, target, target_key, session_id, project_id, reason, created_by) VALUES ($1, 'session', $2, $3, 'proj-r', 'incident', 'operator:test')`, [
      uuidv7(),
      `session:${killed}`,
      killed,
    ]);
    const granted = await session('closed', 100 * DAY, 98 * DAY);
    await pool.query(
      `INSERT INTO grants (id, kind, token_id, session_id, environment, reason, created_by, expires_at) VALUES ($1, 'production', $2, $3, 'production', 'change window', 'operator:test', $4)`,
      [uuidv7(), tokenId, granted, ago(-HOUR)],
    );
    // Halts resumed after the cutoff, or in force, keep their rows and the sessions they name; so does a
    // token halt resumed long ago that a kept session halt names.
    const resumedLately = await session('closed', 100 * DAY, 98 * DAY);
    const oldTokenHalt = uuidv7();
    await pool.query(
      `INSERT INTO token_halts (id, token_id, trigger, halted_at, resumed_at, resumed_by) VALUES ($1, $2, 'BUDGET_EXCEEDED', $3, $4, 'operator:test')`,
      [oldTokenHalt, tokenId, ago(99 * DAY), ago(99 * DAY - HOUR)],
    );
    await pool.query(
      `INSERT INTO session_halts (id, session_id, token_id, trigger, token_halt_id, halted_at, resumed_at, resumed_by) VALUES ($1, $2, $3, 'LOOP_DETECTED', $4, $5, $6, 'operator:test')`,
      [uuidv7(), resumedLately, tokenId, oldTokenHalt, ago(99 * DAY), ago(10 * DAY)],
    );
    const namedByHaltInForce = await session('closed', 100 * DAY, 98 * DAY);
    await pool.query(`INSERT INTO token_halts (id, token_id, trigger, session_id, halted_at) VALUES ($1, $2, 'BUDGET_EXCEEDED', $3, $4)`, [
      uuidv7(),
      otherTokenId,
      namedByHaltInForce,
      ago(200 * DAY),
    ]);
    // An active session resumed long ago: its halt goes, and the copy of the halt's summary on its row.
    const resumedActive = await session('active', 100 * DAY);
    await pool.query(`UPDATE sessions SET halt_summary = '{"last_calls":[{"args":"{\\"q\\":\\"jane@example.com\\"}"}]}' WHERE id = $1`, [resumedActive]);
    await pool.query(
      `INSERT INTO session_halts (id, session_id, token_id, trigger, halted_at, resumed_at, resumed_by) VALUES ($1, $2, $3, 'LOOP_DETECTED', $4, $5, 'operator:test')`,
      [uuidv7(), resumedActive, tokenId, ago(99 * DAY), ago(99 * DAY - HOUR)],
    );
    const approvedCall = await session('closed', 100 * DAY, 98 * DAY);
    approvalsKept.push(await approval({ state: 'approved', created: 2 * HOUR, decided: HOUR, expires: -HOUR, sessionId: approvedCall }));
    const sessionsKept = [
      openSession,
      resumedLately,
      namedByHaltInForce,
      killed,
      granted,
      approvedCall,
      await session('halted', 200 * DAY),
      await session('active', 100 * DAY),
      await session('closed', 100 * DAY, 10 * DAY),
      resumedActive,
    ];

    const result = await applyRecordsRetention(
      { pool, log: pino({ level: 'info' }, logs), recordAdmin: (a) => audit.recordAdmin(a), retentionDays: 90, batchSize: 2 },
      new Date(now),
    );

    expect(result).toEqual({ cutoff: ago(90 * DAY).toISOString(), retention_days: 90, alerts_removed: 3, approvals_removed: 3, halts_removed: 3, sessions_removed: 5 });
    expect(await ids('alerts')).toEqual(sorted(alertsKept));
    expect(await ids('approvals')).toEqual(sorted(approvalsKept));
    expect(await ids('sessions')).toEqual(sorted(sessionsKept));
    for (const id of [...alertsGone, ...approvalsGone, ...sessionsGone, withSessionHalt, namedByTokenHalt]) expect([...alertsKept, ...approvalsKept, ...sessionsKept]).not.toContain(id);
    // The halts resumed before the cutoff are gone; the one resumed after it, the one in force and the
    // token halt a kept session halt names stay.
    expect((await pool.query('SELECT session_id FROM session_halts')).rows).toEqual([{ session_id: resumedLately }]);
    expect((await pool.query('SELECT halt_summary FROM sessions WHERE id = $1', [resumedActive])).rows).toEqual([{ halt_summary: null }]);
    expect((await pool.query('SELECT id, session_id FROM token_halts ORDER BY halted_at')).rows).toEqual([
      { id: expect.any(String), session_id: namedByHaltInForce },
      { id: oldTokenHalt, session_id: null },
    ]);

    // The run is on the audit trail, and in the log.
    expect(await retentionRows()).toEqual([
      {
        actor_type: 'system',
        actor_id: 'retention',
        target: 'alerts,approvals,halts,sessions',
        details: { cutoff: ago(90 * DAY).toISOString(), retention_days: 90, alerts_removed: 3, approvals_removed: 3, halts_removed: 3, sessions_removed: 5 },
      },
    ]);
    const line = logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'records retention removed old alerts, approvals, halts and sessions');
    expect(line).toMatchObject({ level: 30, alerts_removed: 3, approvals_removed: 3, halts_removed: 3, sessions_removed: 5 });
  });

  it('a second run removes nothing and writes no audit row; RECORDS_RETENTION_DAYS=0 keeps everything', async () => {
    const again = await audit.applyRecordsRetention(new Date(now));
    expect(again).toMatchObject({ alerts_removed: 0, approvals_removed: 0, halts_removed: 0, sessions_removed: 0 });
    expect(await retentionRows()).toHaveLength(1);

    const old = await alert(100 * DAY);
    const off = await applyRecordsRetention({ pool, log: pino({ level: 'silent' }), recordAdmin: (a) => audit.recordAdmin(a), retentionDays: 0 }, new Date(now));
    expect(off).toBeUndefined();
    expect(await ids('alerts')).toContain(old);

    // ctx.audit's run (what the hourly job calls) uses RECORDS_RETENTION_DAYS from the config.
    expect(await audit.applyRecordsRetention(new Date(now))).toMatchObject({ retention_days: 90, alerts_removed: 1 });
    expect(await ids('alerts')).not.toContain(old);
    expect(await retentionRows()).toHaveLength(2);
  });

  it('runs on one replica at a time: while another holds the lock, a run does nothing', async () => {
    const old = await alert(100 * DAY);
    const other = await pool.connect();
    try {
      expect((await other.query('SELECT pg_try_advisory_lock(7009, 1) AS locked')).rows[0].locked).toBe(true);
      expect(await audit.applyRecordsRetention(new Date(now))).toBeUndefined();
      expect(await ids('alerts')).toContain(old);
    } finally {
      await other.query('SELECT pg_advisory_unlock(7009, 1)');
      other.release();
    }
    expect(await audit.applyRecordsRetention(new Date(now))).toMatchObject({ alerts_removed: 1 });
  });

  it('a failure part-way is reported to the caller, audits what was removed before it, and leaves the rest for the next run', async () => {
    const oldAlert = await alert(100 * DAY);
    const oldSession = await session('closed', 100 * DAY, 99 * DAY);
    await pool.query(`CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'deletes refused for this test'; END $$`);
    await pool.query('CREATE TRIGGER refuse_session_delete BEFORE DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION refuse_delete()');
    try {
      await expect(audit.applyRecordsRetention(new Date(now))).rejects.toThrow(/deletes refused/);
    } finally {
      await pool.query('DROP TRIGGER refuse_session_delete ON sessions');
    }
    expect(await ids('alerts')).not.toContain(oldAlert);
    expect(await ids('sessions')).toContain(oldSession);
    const rows = await retentionRows();
    expect(rows.at(-1)!.details).toMatchObject({ alerts_removed: 1, sessions_removed: 0, error: expect.stringMatching(/deletes refused/) });

    // The lock went with the failed connection: the next run takes it and finishes the job.
    expect(await audit.applyRecordsRetention(new Date(now))).toMatchObject({ sessions_removed: 1 });
    expect(await ids('sessions')).not.toContain(oldSession);
  });
  it('a run told to stop (shutdown) ends after the batch in progress, leaves the rest for the next run, and audits what it removed', async () => {
    const old = [await alert(100 * DAY), await alert(101 * DAY), await alert(102 * DAY)];
    // Asked before every batch: the first goes ahead, then the service is stopping.
    let asked = 0;
    const result = await applyRecordsRetention(
      { pool, log: pino({ level: 'silent' }), recordAdmin: (a) => audit.recordAdmin(a), retentionDays: 90, batchSize: 1, stopping: () => asked++ > 0 },
      new Date(now),
    );
    expect(result).toMatchObject({ alerts_removed: 1, approvals_removed: 0, halts_removed: 0, sessions_removed: 0 });
    expect((await ids('alerts')).filter((id) => old.includes(id))).toHaveLength(2);
    expect((await retentionRows()).at(-1)!.details).toMatchObject({ alerts_removed: 1 });
    expect(await audit.applyRecordsRetention(new Date(now))).toMatchObject({ alerts_removed: 2 });
  });
});
