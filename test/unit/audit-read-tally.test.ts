import { describe, expect, it } from 'vitest';
import { AuditReadTally } from '../../src/audit/read-tally.js';
import type { OperatorPrincipal } from '../../src/tokens/authenticator.js';

const op = (id: string, projects: string[] | null = null): OperatorPrincipal => ({ kind: 'operator', id, name: `key ${id}`, role: 'viewer', projects, expiresAt: null });

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, log: { info: (fields: Record<string, unknown>, msg: string) => lines.push({ ...fields, msg }) } };
}

describe('AuditReadTally', () => {
  it('sums the pages of each key into one line per interval, told by its timer; nothing when nothing was read', async () => {
    const { lines, log } = capture();
    const tally = new AuditReadTally(log as never, 30);
    tally.add(op('a'), 100);
    tally.add(op('b', ['alpha']), 7);
    tally.add(op('a'), 50);
    expect(lines).toEqual([]);
    await new Promise((r) => setTimeout(r, 80));
    expect(lines).toEqual([
      expect.objectContaining({ msg: 'audit rows read', operator_id: 'a', operator_name: 'key a', operator_role: 'viewer', projects: null, rows: 150, requests: 2 }),
      expect.objectContaining({ msg: 'audit rows read', operator_id: 'b', projects: ['alpha'], rows: 7, requests: 1 }),
    ]);
    await new Promise((r) => setTimeout(r, 80));
    expect(lines).toHaveLength(2);
    tally.add(op('a'), 1);
    tally.flush();
    expect(lines.at(-1)).toMatchObject({ operator_id: 'a', rows: 1, requests: 1 });
    tally.flush();
    expect(lines).toHaveLength(3);
  });
});
