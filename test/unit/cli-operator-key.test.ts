import { describe, expect, it } from 'vitest';
import { CliFailure, operatorKey } from '../../src/cli/kill.js';

// Every operator command reads KILLSWITCH_OPERATOR_KEY through operatorKey(). `status`, `kills` and `audit search` only read,
// and a viewer key is enough for them (docs/cli.md): the message for a missing key must not send an on-call
// holding a viewer key to look for an operator's.
describe('operatorKey: KILLSWITCH_OPERATOR_KEY missing', () => {
  for (const raw of [undefined, '']) {
    it(`${JSON.stringify(raw)}: exit 2, saying a viewer key reads and kills need operator or owner`, () => {
      let failure: unknown;
      try {
        operatorKey(raw);
      } catch (err) {
        failure = err;
      }
      expect(failure).toBeInstanceOf(CliFailure);
      expect((failure as CliFailure).exitCode).toBe(2);
      expect((failure as CliFailure).message).toMatch(/^set KILLSWITCH_OPERATOR_KEY to an operator key/);
      expect((failure as CliFailure).message).toContain('a viewer key for status, kills and audit search');
      expect((failure as CliFailure).message).toContain('role operator or owner for kill, unkill, revoke and resume');
    });
  }
});
