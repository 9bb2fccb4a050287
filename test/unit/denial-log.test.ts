import { describe, expect, it } from 'vitest';
import { DenialLogBudget } from '../../src/decisions/denial-log.js';

describe('which denials get an info line', () => {
  it('every one at a trickle; in a flood at most N a second per code, and the next line says how many were left out', () => {
    let now = 1_000_000;
    const budget = new DenialLogBudget(3, () => now);
    const taken = () => Array.from({ length: 5 }, () => budget.take('KILL_SWITCH'));
    expect(taken()).toEqual([{ log: true, notLogged: 0 }, { log: true, notLogged: 0 }, { log: true, notLogged: 0 }, { log: false }, { log: false }]);
    // Another code has its own budget.
    expect(budget.take('PERMISSION_DENIED')).toEqual({ log: true, notLogged: 0 });
    now += 1_000;
    expect(budget.take('KILL_SWITCH')).toEqual({ log: true, notLogged: 2 });
    expect(budget.take('KILL_SWITCH')).toEqual({ log: true, notLogged: 0 });
    // A trickle: one a second, all logged.
    for (let i = 0; i < 5; i++) {
      now += 1_000;
      expect(budget.take('SESSION_HALTED')).toEqual({ log: true, notLogged: 0 });
    }
  });
});
