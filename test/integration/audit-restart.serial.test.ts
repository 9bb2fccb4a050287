import { execFile } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { intentRow } from '../../src/audit/rows.js';
import { AuditService } from '../../src/audit/service.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { TestContext } from '../helpers/context.js';
import { callContext } from './audit-fixtures.js';

// Restarts the shared Postgres: serial. Decisions keep flowing through the writer while Postgres goes
// away and comes back; every INTENT whose recordIntent resolved must be in the table exactly once.

const run = promisify(execFile);
const ctx = new TestContext();
let pool: Pool;
let audit: AuditService;

async function restartPostgres(): Promise<void> {
  const { stdout } = await run('ls', ['/etc/postgresql']);
  const version = stdout.trim().split('\n').sort().at(-1)!;
  await run('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'restart'], { timeout: 60_000 });
}

async function retry<T>(fn: () => Promise<T>, attempts = 40): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

beforeAll(async () => {
  await ctx.setup();
  pool = createPool(ctx.databaseUrl, { max: 3 });
  audit = await AuditService.start(ctx.config(), pool, pino({ level: 'silent' }), {
    retentionJob: false,
    replayIntervalMs: 200,
    dataDir: await mkdtemp(join(tmpdir(), 'ks-restart-')),
  });
});
afterAll(async () => {
  await audit.close();
  await pool.end();
  await ctx.teardown();
});

it('no loss across a Postgres restart: every resolved recordIntent has exactly one row and the chain verifies', { timeout: 120_000 }, async () => {
  const resolved: string[] = [];
  let rejected = 0;
  let denials = 0;
  let stop = false;

  // 8 callers, each recording one decision after the other as the pipeline would, plus queued denials.
  const callers = Array.from({ length: 8 }, async (_, n) => {
    while (!stop) {
      const c = callContext();
      if (n === 0) {
        audit.enqueue(intentRow(c, { decision: 'deny', code: 'RATE_LIMITED', message: 'slow down' }));
        denials++;
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      try {
        await audit.recordIntent(intentRow(c, { decision: 'allow', code: 'OK', message: 'allowed' }));
        resolved.push(c.decisionId);
      } catch {
        rejected++;
      }
    }
  });

  await new Promise((r) => setTimeout(r, 1_000));
  const beforeRestart = resolved.length;
  const restartStarted = Date.now();
  await restartPostgres();
  const restartMs = Date.now() - restartStarted;
  const duringRestart = resolved.length - beforeRestart;
  const spooledPeak = audit.writer.spooled;
  await new Promise((r) => setTimeout(r, 1_000));
  stop = true;
  await Promise.all(callers);
  await audit.writer.flush();

  const deadline = Date.now() + 30_000;
  while (audit.spoolSize > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  expect(audit.spoolSize).toBe(0);

  const counts = await retry(() =>
    pool.query<{ decision_id: string; n: number }>("SELECT decision_id, count(*)::int AS n FROM audit_events WHERE kind = 'INTENT' AND decision = 'allow' GROUP BY decision_id"),
  );
  const byId = new Map(counts.rows.map((r) => [r.decision_id, r.n]));
  const missing = resolved.filter((id) => !byId.has(id));
  const duplicated = counts.rows.filter((r) => r.n !== 1);
  const report = await retry(() => audit.verify());

  console.log(
    `audit no-loss: ${resolved.length} allows resolved (${duringRestart} while Postgres restarted in ${restartMs} ms), ${rejected} rejected, ` +
      `${denials} denials queued, ${audit.writer.spooled} rows went through the spool (${spooledPeak} by the end of the restart), ` +
      `${counts.rows.length} allow INTENT rows, ${missing.length} missing, ${duplicated.length} duplicated, ` +
      `chain: ${report.rows} rows in ${report.chains} chains, ${report.ok ? 'verifies' : 'BROKEN'}`,
  );
  expect(audit.writer.spooled).toBeGreaterThan(0);
  expect(missing).toEqual([]);
  expect(duplicated).toEqual([]);
  expect(rejected).toBe(0);
  expect(report.ok).toBe(true);
  expect(byId.size).toBe(resolved.length);
});
