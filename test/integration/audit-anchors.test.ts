import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/chain.js';
import { auditVerify } from '../../src/audit/commands.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { intentRow } from '../../src/audit/rows.js';
import { AuditService } from '../../src/audit/service.js';
import { auditStore } from '../../src/audit/store.js';
import { createPool, type Pool, type PoolClient } from '../../src/db/pool.js';
import { TestContext } from '../helpers/context.js';
import { agentPrincipal, callContext } from './audit-fixtures.js';

// Security review: the owner removed the start of a live chain with `SET LOCAL killswitch.audit_retention`
// and an anchor of its own, and `audit verify` said OK; a chain planted through the writer role verified
// too. Anchors retention cannot have made are SUSPICIOUS, the flag alone no longer lets DELETE through, and
// `--witnesses` (the shipped head log) reports chains it never saw.

const ctx = new TestContext();
const DAY = 86_400_000;
const now = Date.now();
let clock = now;
let pool: Pool;
let audit: AuditService;
let dir: string;
const logged: string[] = [];
const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;

const verify = (opts: Parameters<typeof auditVerify>[1] = {}) => auditVerify(ctx.config({ auditRetentionDays: 90 }), opts);
const chainRows = async (replicaId: string) => (await pool.query<AuditRecord>('SELECT * FROM audit_events WHERE replica_id = $1 ORDER BY seq', [replicaId])).rows;

/** What a database superuser (or the owner with its triggers disabled) can do: the triggers do not fire. */
async function triggersOff(f: (c: PoolClient) => Promise<unknown>): Promise<void> {
  const c = await pool.connect();
  try {
    await c.query('SET session_replication_role = replica');
    await f(c);
  } finally {
    await c.query('SET session_replication_role = origin');
    c.release();
  }
}

beforeAll(async () => {
  await ctx.setup();
  pool = createPool(ctx.databaseUrl, { max: 3 });
  dir = await mkdtemp(join(tmpdir(), 'ks-anchors-'));
  const log = pino({ level: 'info' }, { write: (line: string) => void logged.push(line) });
  audit = await AuditService.start(ctx.config({ auditRetentionDays: 90 }), pool, log, { clock: () => clock, retentionJob: false, headLog: false, dataDir: dir });
  // A chain with rows older than the retention, then a genuine retention run.
  const token = agentPrincipal({ projectId: 'proj-a' });
  clock = now - 200 * DAY;
  for (let i = 0; i < 4; i++) await audit.recordIntent(intentRow(callContext({ agent: token }), allow));
  clock = now - 10 * DAY;
  for (let i = 0; i < 3; i++) await audit.recordIntent(intentRow(callContext({ agent: token }), allow));
  clock = now;
  for (let i = 0; i < 70; i++) await audit.recordIntent(intentRow(callContext({ agent: token }), allow));
  await audit.writer.flush();
});
afterAll(async () => {
  await audit.close();
  await pool.end();
  await ctx.teardown();
});

describe('retention anchors', () => {
  it('a genuine retention run still verifies through the CLI path, and a witnessed position it removed is RETENTION', async () => {
    const [, second] = await chainRows(audit.writer.replicaId!);
    const result = await audit.applyRetention(new Date(now));
    expect(result.chains_anchored).toBe(1);
    await audit.writer.flush();
    const report = await verify({ expect: [{ replica_id: second!.replica_id, seq: Number(second!.seq), hash: second!.hash }] });
    expect(report.output).toMatch(/chains: OK\n/);
    expect(report.output).toContain(`witnessed ${second!.replica_id}:${second!.seq}: RETENTION`);
    expect(report.code).toBe(0);
  });

  it('an anchor whose cut is exactly AUDIT_RETENTION_DAYS old is one retention can have made; a millisecond younger is SUSPICIOUS', async () => {
    const [genuine] = (await pool.query<{ cut_before: Date }>('SELECT cut_before FROM audit_anchors')).rows;
    const cut = genuine!.cut_before.getTime();
    // A run at exactly cut + 90 days had the cut `cut` (a month start): the retention in force allows it.
    const atCut = await verifyChain(pool, { retentionDays: 90, now: new Date(cut + 90 * DAY) });
    expect(atCut.suspicious).toEqual([]);
    const before = await verifyChain(pool, { retentionDays: 90, now: new Date(cut + 90 * DAY - 1) });
    expect(before.suspicious).toEqual([expect.objectContaining({ cut_before: genuine!.cut_before.toISOString(), reason: expect.stringMatching(/is younger than the retention in force/) })]);
  });

  it("the reviewer's SQL is refused: the flag set by hand lets no DELETE, no rollup UPDATE and no anchor DELETE through", async () => {
    const chain = audit.writer.replicaId!;
    const sixty = (await chainRows(chain)).find((r) => Number(r.seq) === 60)!;
    const count = async (table: string) => (await pool.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n as number;
    const before = [await count('audit_events'), await count('audit_anchors'), await count('audit_usage_monthly')];
    const attempts: [string, unknown[]][] = [
      ['DELETE FROM audit_events WHERE replica_id = $1 AND seq <= 60', [chain]],
      ['UPDATE audit_usage_monthly SET calls = calls + 1', []],
      ['DELETE FROM audit_anchors', []],
    ];
    for (const [sql, args] of attempts) {
      const c = await pool.connect();
      try {
        await c.query('BEGIN');
        await c.query("SET LOCAL killswitch.audit_retention = 'on'");
        await expect(c.query(sql, args), sql).rejects.toThrow(/append-only/);
        await c.query('ROLLBACK');
      } finally {
        c.release();
      }
    }
    // The full statement of the review, anchor and all, in one transaction.
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      await c.query("SET LOCAL killswitch.audit_retention = 'on'");
      await expect(c.query('DELETE FROM audit_events WHERE replica_id = $1 AND seq <= 60', [chain])).rejects.toThrow(/append-only/);
      await c.query('ROLLBACK');
    } finally {
      c.release();
    }
    expect([await count('audit_events'), await count('audit_anchors'), await count('audit_usage_monthly')]).toEqual(before);
    expect(sixty).toBeDefined();
  });

  it('the same removal with the triggers off is SUSPICIOUS, naming the chain and the anchor; --expect of a position under it is not RETENTION', async () => {
    const chain = audit.writer.replicaId!;
    const rows = await chainRows(chain);
    const removed = rows.filter((r) => Number(r.seq) <= 60);
    const sixty = removed.at(-1)!;
    const thirty = rows.find((r) => Number(r.seq) === 30)!;
    expect(Number(sixty.seq)).toBe(60);
    await triggersOff(async (c) => {
      await c.query('DELETE FROM audit_events WHERE replica_id = $1 AND seq <= 60', [chain]);
      await c.query('INSERT INTO audit_anchors VALUES ($1, 60, $2, $3, now())', [chain, sixty.hash, sixty.ts]);
    });
    try {
      const report = await verify({ expect: [{ replica_id: chain, seq: 30, hash: thirty.hash }] });
      expect(report.code).toBe(1);
      expect(report.output).toContain(`SUSPICIOUS (1 retention anchors)`);
      expect(report.output).toContain(`SUSPICIOUS retention anchor replica_id=${chain} seq=60`);
      expect(report.output).toMatch(/younger than the retention in force \(AUDIT_RETENTION_DAYS=90/);
      expect(report.output).toContain(`witnessed ${chain}:30: SUSPICIOUS: gone under the retention anchor at seq 60`);
      expect(report.output).not.toContain('RETENTION: removed by retention');
      const json = JSON.parse((await verify({ json: true })).output);
      expect(json).toMatchObject({ verified: false, ok: false, suspicious: [{ replica_id: chain, seq: 60 }] });
    } finally {
      await triggersOff(async (c) => {
        await c.query('DELETE FROM audit_anchors WHERE replica_id = $1 AND seq = 60', [chain]);
        await c.query('INSERT INTO audit_events SELECT * FROM json_populate_recordset(NULL::audit_events, $1)', [JSON.stringify(removed)]);
      });
    }
    expect((await verify()).code).toBe(0);
  });

  it('an anchor dated back past the retention that no audit.retention run recorded, or one more than a run anchored, is SUSPICIOUS', async () => {
    // Seq 6..8 are 10 days old: removing 6..7 keeps rows older than such an anchor's run in the trail.
    const chain = audit.writer.replicaId!;
    const removed = (await chainRows(chain)).filter((r) => Number(r.seq) <= 7);
    const last = removed.at(-1)!;
    expect(Number(last.seq)).toBe(7);
    const [genuine] = (await pool.query<{ cut_before: Date }>('SELECT cut_before FROM audit_anchors')).rows;
    for (const [cut, rowAge, reason] of [
      [new Date(now - 91 * DAY), DAY, /no audit\.retention row records a run with its cut/],
      [genuine!.cut_before, DAY, /2 anchors have the cut .* but the audit\.retention run with that cut anchored 1 chains/],
      // Retention removes rows before its cut: a row at the cut itself is never one it removed.
      [new Date(now - 91 * DAY), 0, /the row it anchors \(ts .*\) is not older than its cut/],
    ] as const) {
      await triggersOff(async (c) => {
        await c.query('DELETE FROM audit_events WHERE replica_id = $1 AND seq <= 7', [chain]);
        await c.query('INSERT INTO audit_anchors VALUES ($1, 7, $2, $3, $4)', [chain, last.hash, new Date(cut.getTime() - rowAge), cut]);
      });
      try {
        const report = await verify();
        expect(report.code).toBe(1);
        expect(report.output).toContain(`SUSPICIOUS retention anchor replica_id=${chain} seq=7`);
        expect(report.output).toMatch(reason);
      } finally {
        await triggersOff(async (c) => {
          await c.query('DELETE FROM audit_anchors WHERE replica_id = $1 AND seq = 7', [chain]);
          await c.query('INSERT INTO audit_events SELECT * FROM json_populate_recordset(NULL::audit_events, $1)', [JSON.stringify(removed)]);
        });
      }
    }
    expect((await verify()).code).toBe(0);
  });

  it('rows removed with their anchor gone too are a gap', async () => {
    const chain = audit.writer.replicaId!;
    const removed = (await chainRows(chain)).filter((r) => Number(r.seq) <= 60);
    const anchors = (await pool.query('SELECT * FROM audit_anchors WHERE replica_id = $1', [chain])).rows;
    await triggersOff(async (c) => {
      await c.query('DELETE FROM audit_events WHERE replica_id = $1 AND seq <= 60', [chain]);
      await c.query('DELETE FROM audit_anchors WHERE replica_id = $1', [chain]);
    });
    try {
      const report = await verify();
      expect(report.code).toBe(1);
      expect(report.output).toContain(`replica_id=${chain} seq=61: chain starts at seq 61 but no retention anchor covers`);
    } finally {
      await triggersOff(async (c) => {
        await c.query('INSERT INTO audit_anchors SELECT * FROM json_populate_recordset(NULL::audit_anchors, $1)', [JSON.stringify(anchors)]);
        await c.query('INSERT INTO audit_events SELECT * FROM json_populate_recordset(NULL::audit_events, $1)', [JSON.stringify(removed)]);
      });
    }
    expect((await verify()).code).toBe(0);
  });
});

describe('--witnesses: the shipped head log', () => {
  it('a chain planted through the writer role is UNWITNESSED (exit 1); the witnessed chains verify; --expect still works', async () => {
    audit.logHead();
    const heads = logged.filter((l) => l.includes('"audit chain head"'));
    expect(heads.length).toBeGreaterThan(0);
    const file = join(dir, 'heads.log');
    // As shipped: other log lines around them, some behind a shipper's prefix.
    await writeFile(file, ['{"level":30,"msg":"listening"}', ...heads.map((h, i) => (i % 2 ? `2026-01-01T00:00:00Z cp-1 ${h}` : h)), 'not json'].join('\n'));
    expect((await verify({ witnesses: file })).code).toBe(0);

    // A chain written with past timestamps by another writer (the writer role): CHAIN_START, a lifted kill, a call.
    const planted = await AuditService.start(ctx.config(), pool, pino({ level: 'silent' }), { clock: () => now - 3 * DAY, retentionJob: false, headLog: false, dataDir: await mkdtemp(join(tmpdir(), 'ks-planted-')) });
    await planted.recordAdmin({ actor: { kind: 'operator', id: 'op-1', name: 'alice', role: 'owner', projects: null, expiresAt: null }, action: 'kill.lifted', target: 'global' });
    await planted.recordIntent(intentRow(callContext(), allow));
    const plantedChain = planted.writer.replicaId!;
    await planted.close();
    expect(await auditStore.hashAt(pool, plantedChain, 3)).toBeDefined();

    expect((await verify()).code).toBe(0); // what verify alone cannot know
    const report = await verify({ witnesses: file });
    expect(report.code).toBe(1);
    expect(report.output).toContain('UNWITNESSED (1 chains)');
    expect(report.output).toContain(`UNWITNESSED chain replica_id=${plantedChain} seq 1..4 (4 rows`);
    expect(report.output).not.toContain(`UNWITNESSED chain replica_id=${audit.writer.replicaId!}`);
    const json = JSON.parse((await verify({ witnesses: file, json: true })).output);
    expect(json).toMatchObject({ verified: false, unwitnessed: [{ replica_id: plantedChain, rows: 4 }] });

    // --expect beside --witnesses: a wrong hash is still a MISMATCH.
    const [, replica, seq] = /"audit_head":"([^:]+):(\d+):/.exec(heads.at(-1)!)!;
    const both = await verify({ witnesses: file, expect: [{ replica_id: replica!, seq: Number(seq), hash: 'e'.repeat(64) }] });
    expect(both.output).toContain(`witnessed ${replica}:${seq}: MISMATCH`);

    // Naming the planted chain (a bare replica_id:seq:hash line) makes it witnessed.
    const plantedHead = (await chainRows(plantedChain)).at(-1)!;
    await writeFile(file, [...heads, `${plantedChain}:${plantedHead.seq}:${plantedHead.hash}`].join('\n'));
    expect((await verify({ witnesses: file })).code).toBe(0);

    // A file without a single chain position is a usage error, not a verdict.
    await writeFile(file, '{"msg":"listening"}\n');
    expect((await verify({ witnesses: file })).code).toBe(2);
  });
});
