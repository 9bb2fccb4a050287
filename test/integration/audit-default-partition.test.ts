import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { intentRow } from '../../src/audit/rows.js';
import { AuditService } from '../../src/audit/service.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { bearer, TestContext } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';
import { callContext } from './audit-fixtures.js';

// Rows for a month without a partition land in audit_events_default, silently until now (data-growth
// review); while they are there that month cannot get its partition. The start and the hourly job count
// them: a warn line, an AUDIT_PARTITION_MISSING alert and a gauge.

const t = new TestContext();
const DAY = 86_400_000;
let app: FastifyInstance;
let pool: Pool;

beforeAll(async () => {
  await t.setup();
  app = await t.app();
  pool = createPool(t.databaseUrl, { max: 2 });
});
afterAll(async () => {
  await pool.end();
  await t.teardown();
});

it('a row written by a clock a year ahead sits in the default partition: counted, logged, alerted once, and the gauge says how many', async () => {
  expect(await app.ctx.audit.checkDefaultPartition()).toBe(0);
  const ahead = await AuditService.start(t.config(), pool, pino({ level: 'silent' }), {
    clock: () => Date.now() + 400 * DAY,
    retentionJob: false,
    headLog: false,
    dataDir: await mkdtemp(join(tmpdir(), 'ks-default-part-')),
  });
  await ahead.recordIntent(intentRow(callContext(), { decision: 'allow', code: 'OK', message: 'allowed' }));
  await ahead.close();
  // CHAIN_START, the row and CHAIN_END: all three in the default partition.
  expect((await t.pool().query('SELECT count(*)::int AS n FROM audit_events_default')).rows[0].n).toBe(3);

  expect(await app.ctx.audit.checkDefaultPartition()).toBe(3);
  expect(t.logs.text).toContain('audit rows are in the default partition (audit_events_default)');
  const alertRows = () => t.pool().query(`SELECT message, numbers FROM alerts WHERE kind = 'AUDIT_PARTITION_MISSING'`).then((r) => r.rows);
  await until(async () => (await alertRows()).length > 0, 5_000, 'the AUDIT_PARTITION_MISSING alert');
  const [alert] = await alertRows();
  expect(alert.numbers).toEqual({ rows: 3 });
  expect(alert.message).toMatch(/^3 audit rows are in the default partition \(written for \d{4}-\d\d-\d\dT.* to .*\): their month had no partition/);
  // The next check (an hour later on a replica) raises no second alert that day.
  await app.ctx.audit.checkDefaultPartition();
  await new Promise((r) => setTimeout(r, 200));
  expect(await alertRows()).toHaveLength(1);

  const owner = await t.operatorKey(app, 'viewer');
  const metrics = (await app.inject({ url: '/metrics', headers: bearer(owner) })).body;
  expect(metrics).toMatch(/^killswitch_audit_default_partition_rows 3$/m);
});
