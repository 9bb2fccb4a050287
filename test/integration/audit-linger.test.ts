import { describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/chain.js';
import { intentRow } from '../../src/audit/rows.js';
import type { AuditWriter } from '../../src/audit/writer.js';
import { callContext, writerTestFile } from './audit-fixtures.js';

// Rows nobody awaits (denials, RESULT rows) may linger to share an INSERT; a row some caller awaits is
// written at once and takes them along. The linger here is far longer than the test, so a row that was
// written can only have been written by the rule under test, never by the timer.

const { writers, db } = writerTestFile();
const deny = { decision: 'deny', code: 'PERMISSION_DENIED', message: 'denied' } as const;
const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;

const openWriter = (lingerMs: number): Promise<AuditWriter> => writers.open({ lingerMs });

const rowsOf = async (replicaId: string | null) => Number((await db.query('SELECT count(*) AS n FROM audit_events WHERE replica_id = $1', [replicaId])).rows[0].n);

describe('audit writer linger', () => {
  it('rows nobody awaits wait; an awaited row is written at once and takes them along in the same INSERT', async () => {
    const writer = await openWriter(60_000);
    for (let i = 0; i < 3; i++) writer.enqueue(intentRow(callContext(), deny));
    await new Promise((r) => setTimeout(r, 200));
    expect(writer.batches).toBe(0);
    expect(writer.queueDepth).toBe(3);
    await writer.recordIntent(intentRow(callContext(), allow));
    expect(writer.batches).toBe(1);
    // CHAIN_START + 3 denials + the allow, in one batch.
    expect(writer.written).toBe(5);
    expect(await rowsOf(writer.replicaId)).toBe(5);
    await writer.close();
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);
  });

  it('flush() and close() do not wait for the linger', async () => {
    const writer = await openWriter(60_000);
    writer.enqueue(intentRow(callContext(), deny));
    await writer.flush();
    expect(writer.written).toBe(2);
    writer.enqueue(intentRow(callContext(), deny));
    await writer.close();
    // CHAIN_START, the two denials and the CHAIN_END that closes the chain.
    expect(writer.written).toBe(4);
    expect(await rowsOf(writer.replicaId)).toBe(4);
  });

  it('with lingerMs 0 every row is written at once', async () => {
    const writer = await openWriter(0);
    writer.enqueue(intentRow(callContext(), deny));
    const deadline = Date.now() + 10_000;
    while (writer.written < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(writer.written).toBe(2);
    await writer.close();
  });
});
