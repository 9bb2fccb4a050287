import { describe, expect, it } from 'vitest';
import { parseWitnessFile } from '../../src/audit/chain.js';

// The witness file of `audit verify --witnesses`: the `audit chain head` lines a log shipper kept. A chain
// is checked at its furthest witnessed position only: a tail removed after an earlier head was logged is
// found there and nowhere else, so keeping an earlier position instead would let it pass.

const A = '0193a2b4-0000-7000-8000-00000000000a';
const B = '0193a2b4-0000-7000-8000-00000000000b';
const h = (c: string) => c.repeat(64);
const logLine = (replica: string, seq: number, hash: string, ts: string) =>
  `2026-12-06T10:00:00Z app-1 ${JSON.stringify({ level: 30, msg: 'audit chain head', audit_head: `${replica}:${seq}:${hash}`, replica_id: replica, seq, ts })}`;

describe('parseWitnessFile', () => {
  it('keeps the furthest position of each chain, whatever order the lines come in', () => {
    const text = [
      logLine(A, 3, h('1'), '2026-12-06T10:00:00.000Z'),
      logLine(A, 9, h('2'), '2026-12-06T10:05:00.000Z'),
      logLine(B, 4, h('4'), '2026-12-06T10:01:00.000Z'),
      logLine(A, 5, h('3'), '2026-12-06T10:02:00.000Z'),
      `${B}:2:${h('5')}`,
      'an unrelated line',
    ].join('\n');
    expect(parseWitnessFile(text)).toEqual([
      { replica_id: A, seq: 9, hash: h('2'), ts: '2026-12-06T10:05:00.000Z' },
      { replica_id: B, seq: 4, hash: h('4'), ts: '2026-12-06T10:01:00.000Z' },
    ]);
  });

  it('two different hashes witnessed at one position are both kept (each is checked); the same one twice once', () => {
    const text = [`${A}:7:${h('a')}`, `${A}:7:${h('b')}`, `${A}:7:${h('a')}`, `${A}:6:${h('c')}`].join('\n');
    expect(parseWitnessFile(text)).toEqual([
      { replica_id: A, seq: 7, hash: h('a') },
      { replica_id: A, seq: 7, hash: h('b') },
    ]);
  });
});
