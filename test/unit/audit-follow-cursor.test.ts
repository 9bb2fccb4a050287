import { describe, expect, it } from 'vitest';
import { advanceFollowCursor, decodeFollowCursor, encodeFollowCursor, type FollowCursor } from '../../src/audit/follow-cursor.js';

// The follow cursor (src/audit/follow-cursor.ts): "not given yet" is `xip ∪ [xmax, ∞)` plus the rest of a
// partial transaction; advancing it after an answer keeps exactly the transactions whose rows were not given.

const ID = '0190f8a2-0000-7000-8000-000000000001';

describe('follow cursor', () => {
  it('encodes in-progress transactions as distances below xmax and reads back the same cursor', () => {
    const c: FollowCursor = { xmax: 1000n, xip: [990n, 997n], partial: { xid: 980n, id: ID } };
    expect(encodeFollowCursor(c)).toBe(`1000.10.3~980.${ID}`);
    expect(decodeFollowCursor(encodeFollowCursor(c))).toEqual(c);
    expect(decodeFollowCursor('1000')).toEqual({ xmax: 1000n, xip: [] });
  });

  it('refuses what this API cannot have made, naming after', () => {
    for (const bad of ['', 'x', '1000.0', '1000.3.10', '1000.3.3', '1000.998', `1000~1000.${ID}`, `1000.10~990.${ID}`, '1000~990.nope', '99999999999999999999']) {
      expect(() => decodeFollowCursor(bad), bad).toThrow(/^after: /);
    }
  });

  it('after a whole answer: the transactions still in progress that were not given, and those from the new xmax on', () => {
    const c: FollowCursor = { xmax: 100n, xip: [90n, 95n] };
    // 90 committed (given), 95 still running, 103 (after the old xmax) still running; 80 runs but was given (impossible, ignored).
    expect(advanceFollowCursor(c, { xmax: 110n, xip: [80n, 95n, 103n] })).toEqual({ xmax: 110n, xip: [95n, 103n] });
  });

  it('an answer cut inside a transaction: that one continues after the last id, those below it that ran stay', () => {
    const c: FollowCursor = { xmax: 100n, xip: [90n] };
    expect(advanceFollowCursor(c, { xmax: 120n, xip: [90n, 101n, 115n] }, { xid: 105n, id: ID, partial: false })).toEqual({
      xmax: 106n,
      xip: [90n, 101n],
      partial: { xid: 105n, id: ID },
    });
    // Cut inside the partial transaction's rest: nothing else changes.
    const p: FollowCursor = { xmax: 106n, xip: [90n], partial: { xid: 105n, id: ID } };
    const next = '0190f8a2-0000-7000-8000-000000000009';
    expect(advanceFollowCursor(p, { xmax: 130n, xip: [] }, { xid: 105n, id: next, partial: true })).toEqual({ ...p, partial: { xid: 105n, id: next } });
    // Cut among in-progress ids below xmax: those above the cut stay, the cut one is partial.
    expect(advanceFollowCursor({ xmax: 100n, xip: [80n, 90n, 95n] }, { xmax: 130n, xip: [80n] }, { xid: 90n, id: ID, partial: false })).toEqual({
      xmax: 100n,
      xip: [80n, 95n],
      partial: { xid: 90n, id: ID },
    });
  });
});
