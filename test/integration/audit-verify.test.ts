import { v7 as uuidv7 } from 'uuid';
import { describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/chain.js';
import { formatVerifyReport } from '../../src/audit/commands.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { intentRow } from '../../src/audit/rows.js';
import { auditStore } from '../../src/audit/store.js';
import { callContext, writerTestFile } from './audit-fixtures.js';

// `audit verify` against rows inserted into a chain. The append-only triggers stop UPDATE and DELETE, not
// INSERT: a database superuser (this file's pool) can add a second row at a seq a chain already has.

const { writers, db } = writerTestFile();
const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;
// The verifier reads each chain 5,000 rows at a time (chain.ts): seq 5000 ends its first page.
const PAGE_EDGE = 5_000;

/** A chain written by a real writer: its CHAIN_START row and `events` INTENT rows. */
async function writeChain(events: number): Promise<string> {
  const writer = await writers.open({ batchMax: 1_000 });
  const first = callContext();
  writer.enqueue(intentRow(first, allow));
  for (let i = 1; i < events; i++) writer.enqueue(intentRow(callContext(), allow));
  await writer.close();
  const { rows } = await db.query<{ replica_id: string }>('SELECT replica_id FROM audit_events WHERE decision_id = $1', [first.decisionId]);
  return rows[0]!.replica_id;
}

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
    expect(clean).toMatchObject({ ok: true, rows: PAGE_EDGE + 101 });

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
