import { v7 as uuidv7 } from 'uuid';
import { describe, expect, it } from 'vitest';
import { GENESIS, rowHash, verifyChain } from '../../src/audit/chain.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { auditStore } from '../../src/audit/store.js';
import { writeChain, writerTestFile } from './audit-fixtures.js';

// `audit verify` against a chain whose rows were rewritten by someone who can insert rows (the table's
// triggers stop UPDATE and DELETE; a superuser can still insert a whole chain as it likes): each rewrite
// below leaves the seq run, the ts order and the CHAIN_END in place, so only the link or the hash tells.

const file = writerTestFile();
const { db } = file;

/** The rows of a chain a real writer wrote: CHAIN_START, `events` INTENT rows, CHAIN_END. */
async function writtenChain(events: number): Promise<AuditRecord[]> {
  const replicaId = await writeChain(file, events);
  return (await db.query<AuditRecord>('SELECT * FROM audit_events WHERE replica_id = $1 ORDER BY seq', [replicaId])).rows;
}

/** A copy of `rows` as a chain of its own (new replica_id and ids), sealed link by link as the writer does. */
function resealed(rows: readonly AuditRecord[]): AuditRecord[] {
  const replicaId = uuidv7();
  let prev = GENESIS;
  return rows.map((r) => {
    const copy: AuditRecord = { ...r, id: uuidv7(), replica_id: replicaId, prev_hash: prev, hash: '' };
    copy.hash = rowHash(prev, copy);
    prev = copy.hash;
    return copy;
  });
}

describe('verify: a rewritten row in the middle of a chain', () => {
  it('rewritten with its own hash recomputed: the next row no longer links to it, and the break names that row', async () => {
    const chain = resealed(await writtenChain(6));
    // seq 4 says something else; its hash is right for what it now says, seq 5 still names the old one.
    const i = chain.findIndex((r) => r.seq === 4);
    const rewritten: AuditRecord = { ...chain[i]!, message: 'denied (rewritten)', decision: 'deny', hash: '' };
    rewritten.hash = rowHash(rewritten.prev_hash, rewritten);
    chain[i] = rewritten;
    expect(await auditStore.insertBatch(db, chain)).toBe(chain.length);

    const report = await verifyChain(db, { retentionDays: 90 });
    expect(report.ok).toBe(false);
    expect(report.broken).toEqual([{ replica_id: rewritten.replica_id, seq: 5, id: chain[i + 1]!.id, reason: "prev_hash does not match the previous row's hash" }]);
  });

  it('rewritten without recomputing its hash: the row itself is the break', async () => {
    const chain = resealed(await writtenChain(6));
    const i = chain.findIndex((r) => r.seq === 3);
    chain[i] = { ...chain[i]!, message: 'denied (rewritten)' };
    expect(await auditStore.insertBatch(db, chain)).toBe(chain.length);

    const report = await verifyChain(db, { retentionDays: 90 });
    expect(report.broken.filter((b) => b.replica_id === chain[i]!.replica_id)).toEqual([
      { replica_id: chain[i]!.replica_id, seq: 3, id: chain[i]!.id, reason: "hash does not match the row's content: the row was modified" },
    ]);
  });
});

describe('verify: rows removed while the chain is being verified', () => {
  it('the last rows of a chain removed after verify counted them: the walk ends early, and the count says so', async () => {
    const chain = await writtenChain(6);
    const replicaId = chain[0]!.replica_id;
    const last = chain[chain.length - 1]!.seq;
    // The pool verify reads through: before its first page of rows, a superuser (triggers off) removes the
    // chain's last two rows. What is left links and hashes correctly; only the count taken before tells.
    let removed = false;
    const pool = {
      query: async (sql: string, values?: unknown[]) => {
        if (!removed && sql.includes('ts_key')) {
          removed = true;
          const client = await db.connect();
          try {
            await client.query('SET session_replication_role = replica');
            await client.query('DELETE FROM audit_events WHERE replica_id = $1 AND seq > $2', [replicaId, last - 2]);
            await client.query('SET session_replication_role = origin');
          } finally {
            client.release();
          }
        }
        return db.query(sql, values);
      },
    } as unknown as typeof db;

    const report = await verifyChain(pool, { retentionDays: 90 });
    expect(removed).toBe(true);
    expect(report.ok).toBe(false);
    expect(report.broken.filter((b) => b.replica_id === replicaId)).toEqual([
      {
        replica_id: replicaId,
        seq: last - 2,
        id: null,
        reason: `the chain has ${chain.length} rows up to seq ${last} but ${chain.length - 2} were verified: rows were skipped, or added or removed while verifying`,
      },
    ]);
  });
});
