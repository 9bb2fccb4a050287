import { describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/chain.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { intentRow, resultRow } from '../../src/audit/rows.js';
import { callContext, writerTestFile } from './audit-fixtures.js';

// The writer sends each batch as one JSON document (json_populate_recordset) built from the rows'
// hash-chain content. Values that are awkward in JSON or in Postgres must arrive exactly as the row
// held them, and the chain must verify from what Postgres stored.

const { writers, db } = writerTestFile();

describe('audit INSERT as JSON', () => {
  it('awkward values round-trip exactly and the chain verifies from the stored rows', async () => {
    const writer = await writers.open();
    const awkward = {
      quotes: 'say "hi" \\ back\\slash',
      controls: 'tab\there\nnew line \u0001 \u001f',
      unicode: 'emoji 🚀, accents éàü, CJK 漢字, separators \u2028\u2029',
      nul: 'a\u0000b',
      lone: 'x\uD800y',
      numbers: [0, -1, 1.5, 1e21, Number.MAX_SAFE_INTEGER, -0],
      nested: { deep: [[{ a: null }], [], {}], empty: '' },
      'key "quoted"': true,
    };
    const call = callContext({ arguments: awkward, tool: 'write_file' });
    const intent = intentRow(call, { decision: 'allow', code: 'OK', message: 'allowed "quoted" \u2028' });
    await writer.recordIntent(intent);
    const resultEvent = resultRow({ decisionId: call.decisionId, agent: call.agent, gateway: call.gateway, server: 'filesystem', tool: 'write_file', capability: 'write', sessionId: call.input.session_id }, { status: 'error', duration_ms: 12.75, result_bytes: Number.MAX_SAFE_INTEGER, rows: 0, error: 'boom: "x"\n' });
    writer.enqueue(resultEvent);
    await writer.close();

    const rows = (await db.query<AuditRecord>('SELECT * FROM audit_events WHERE decision_id = $1 ORDER BY seq', [call.decisionId])).rows;
    expect(rows.map((r) => r.kind)).toEqual(['INTENT', 'RESULT']);
    const [stored, result] = rows as [AuditRecord, AuditRecord];
    // What the writer handed Postgres is what comes back, as JSON has it (-0 is 0 in JSON); NUL and the
    // lone surrogate were made storable when the row was built.
    const asJson = (v: unknown) => JSON.parse(JSON.stringify(v)) as unknown;
    expect(stored.arguments).toEqual(asJson(intent.arguments));
    expect(stored.arguments).toMatchObject({ nul: 'a\uFFFDb', lone: 'x\uFFFDy', quotes: awkward.quotes, unicode: awkward.unicode });
    expect(stored.message).toBe(intent.message);
    expect(stored.flags).toEqual(asJson(intent.flags));
    expect(stored.details).toEqual(asJson(intent.details));
    expect(result.details).toEqual(asJson(resultEvent.details));
    expect(result.summary).toBe(resultEvent.summary);
    expect(result.result_status).toBe('error');
    expect(Number(result.result_bytes)).toBe(Number.MAX_SAFE_INTEGER);
    expect(result.duration_ms).toBe(12.75);
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);
  });
});
