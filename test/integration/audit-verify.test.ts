import { v7 as uuidv7 } from 'uuid';
import { describe, expect, it } from 'vitest';
import { rowHash, verifyChain } from '../../src/audit/chain.js';
import { formatVerifyReport } from '../../src/audit/commands.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { intentRow } from '../../src/audit/rows.js';
import { auditStore } from '../../src/audit/store.js';
import { callContext, writeChain as writeChainOf, writerTestFile } from './audit-fixtures.js';

// `audit verify` against rows inserted into a chain. The append-only triggers stop UPDATE and DELETE, not
// INSERT: a database superuser (this file's pool) can add a second row at a seq a chain already has.

const file = writerTestFile();
const { writers, db } = file;
const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;
// The verifier reads each chain 5,000 rows at a time (chain.ts): seq 5000 ends its first page.
const PAGE_EDGE = 5_000;

/** A chain written by a real writer (audit-fixtures.ts): its replica_id. */
const writeChain = (events: number) => writeChainOf(file, events);

/** As the superuser: a copy of the chain's row at `seq` with its own id, its ts moved by `shiftMs` and a made-up hash. */
async function insertSecondRowAt(replicaId: string, seq: number, shiftMs: number): Promise<AuditRecord> {
  const { rows } = await db.query<AuditRecord>('SELECT * FROM audit_events WHERE replica_id = $1 AND seq = $2', [replicaId, seq]);
  const forged: AuditRecord = { ...rows[0]!, id: uuidv7(), ts: new Date(rows[0]!.ts.getTime() + shiftMs), message: 'nothing to see', hash: 'f'.repeat(64) };
  expect(await auditStore.insertBatch(db, [forged])).toBe(1);
  return forged;
}

describe('verify: a second row at a seq the chain already has', () => {
  it('on a page edge (seq 5000, a later ts, a made-up hash) it breaks the chain, naming the replica and the seq', async () => {
    const replicaId = await writeChain(PAGE_EDGE + 100);
    const clean = await verifyChain(db, { retentionDays: 90 });
    expect(clean).toMatchObject({ ok: true, rows: PAGE_EDGE + 102 }); // CHAIN_START, the rows, CHAIN_END

    const forged = await insertSecondRowAt(replicaId, PAGE_EDGE, 1_000);
    const report = await verifyChain(db, { retentionDays: 90 });
    expect(report.ok).toBe(false);
    expect(report.broken).toHaveLength(1);
    expect(report.broken[0]).toMatchObject({ replica_id: replicaId, seq: PAGE_EDGE, id: forged.id });
    expect(report.broken[0]!.reason).toMatch(new RegExp(`seq ${PAGE_EDGE} appears twice`));
    expect(formatVerifyReport(report)).toContain(`replica_id=${replicaId} seq=${PAGE_EDGE}: seq ${PAGE_EDGE} appears twice`);
  });

  it('sorted before the original (an earlier ts) it is reported as the duplicate, not only as a bad hash', async () => {
    const replicaId = await writeChain(20);
    const forged = await insertSecondRowAt(replicaId, 10, -1_000);
    const report = await verifyChain(db, { retentionDays: 90 });
    const broken = report.broken.find((b) => b.replica_id === replicaId);
    expect(broken).toMatchObject({ seq: 10, id: forged.id });
    expect(broken!.reason).toMatch(/seq 10 appears twice/);
  });
});

/**
 * As the writer role can: a row appended after the chain's last one, linked to it and hashed as the writer
 * would (the security review's forgery), its ts moved by `shiftMs` from the last row's.
 */
async function appendForged(replicaId: string, shiftMs: number): Promise<AuditRecord> {
  const { rows } = await db.query<AuditRecord>('SELECT * FROM audit_events WHERE replica_id = $1 ORDER BY seq DESC LIMIT 1', [replicaId]);
  const last = rows[0]!;
  const template = (await db.query<AuditRecord>(`SELECT * FROM audit_events WHERE replica_id = $1 AND kind = 'INTENT' LIMIT 1`, [replicaId])).rows[0]!;
  const forged: AuditRecord = { ...template, id: uuidv7(), seq: last.seq + 1, ts: new Date(last.ts.getTime() + shiftMs), prev_hash: last.hash, message: 'allowed (forged)', hash: '' };
  forged.hash = rowHash(forged.prev_hash, forged);
  expect(await auditStore.insertBatch(db, [forged])).toBe(1);
  return forged;
}

describe('verify: rows added to a chain with a valid link and hash (security review)', () => {
  it('a writer closing its chain writes CHAIN_END; a row appended after it is a break, although its link and hash are right', async () => {
    const replicaId = await writeChain(5);
    const kinds = (await db.query<{ kind: string }>('SELECT kind FROM audit_events WHERE replica_id = $1 ORDER BY seq', [replicaId])).rows.map((r) => r.kind);
    expect(kinds).toEqual(['CHAIN_START', 'INTENT', 'INTENT', 'INTENT', 'INTENT', 'INTENT', 'CHAIN_END']);
    let report = await verifyChain(db, { retentionDays: 90 });
    expect(report.broken.filter((b) => b.replica_id === replicaId)).toEqual([]);
    expect(report.open.map((o) => o.replica_id)).not.toContain(replicaId);

    const forged = await appendForged(replicaId, 1_000);
    report = await verifyChain(db, { retentionDays: 90 });
    expect(report.ok).toBe(false);
    expect(report.broken.filter((b) => b.replica_id === replicaId)).toEqual([
      { replica_id: replicaId, seq: 8, id: forged.id, reason: expect.stringMatching(/^it comes after the chain's CHAIN_END \(seq 7, .*\): its writer had closed the chain, so the row was added to it later$/) },
    ]);
  });

  it('a chain still open (no CHAIN_END) is listed as open, not broken; a back-dated row appended to it is a break', async () => {
    const writer = await writers.open({ batchMax: 1_000 });
    const first = callContext();
    await writer.recordIntent(intentRow(first, allow));
    await writer.recordIntent(intentRow(callContext(), allow));
    const replicaId = writer.replicaId!;
    let report = await verifyChain(db, { retentionDays: 90 });
    expect(report.broken.filter((b) => b.replica_id === replicaId)).toEqual([]);
    expect(report.open).toContainEqual({ replica_id: replicaId, last_seq: 3, last_ts: expect.any(String) });
    expect(formatVerifyReport(report)).toContain(`open chain replica_id=${replicaId} ends at seq 3`);

    const forged = await appendForged(replicaId, -60_000);
    report = await verifyChain(db, { retentionDays: 90 });
    expect(report.broken.filter((b) => b.replica_id === replicaId)).toEqual([
      { replica_id: replicaId, seq: 4, id: forged.id, reason: expect.stringMatching(/^its ts \(.*\) is earlier than the previous row's \(.*\); a chain's writer never goes back in time, so the row was added to the chain later$/) },
    ]);
  });

  it('every break of a chain is reported, not only the first, and how many rows do not verify', async () => {
    const replicaId = await writeChain(40);
    const a = await insertSecondRowAt(replicaId, 10, 1);
    const b = await insertSecondRowAt(replicaId, 30, 1);
    const report = await verifyChain(db, { retentionDays: 90 });
    const breaks = report.broken.filter((x) => x.replica_id === replicaId);
    expect(breaks.map((x) => [x.seq, x.id])).toEqual([
      [10, a.id],
      [30, b.id],
    ]);
    expect(report.broken_rows).toBeGreaterThanOrEqual(2);
    expect(formatVerifyReport(report)).toMatch(/BROKEN \(\d+ chains, \d+ rows\)/);
  });
});

describe('verify: a writer whose clock steps back', () => {
  it("keeps its chain's ts non-decreasing (a row is never dated before the one it follows), so the chain still verifies", async () => {
    let now = Date.parse('2026-12-06T12:00:00.000Z');
    const writer = await writers.open({ batchMax: 1_000, clock: () => now });
    const first = callContext();
    await writer.recordIntent(intentRow(first, allow));
    // NTP steps the clock back a minute.
    now -= 60_000;
    const second = callContext();
    await writer.recordIntent(intentRow(second, allow));
    const replicaId = writer.replicaId!;
    await writer.close();
    const ts = async (decisionId: string) => (await db.query<{ ts: Date }>('SELECT ts FROM audit_events WHERE decision_id = $1', [decisionId])).rows[0]!.ts.getTime();
    expect(await ts(second.decisionId)).toBe(await ts(first.decisionId));
    const report = await verifyChain(db, { retentionDays: 90 });
    expect(report.broken.filter((b) => b.replica_id === replicaId)).toEqual([]);
  });
});
