import { describe, expect, it } from 'vitest';
import { redactText } from '../../src/audit/redact.js';
import { afterCallTrigger } from '../../src/decisions/results.js';
import type { CallContext } from '../../src/decisions/types.js';
import { denialText } from '../../src/gateway/calls.js';
import type { GateOutcome } from '../../src/limits/gate.js';
import { denialFor } from '../../src/limits/step.js';
import { joinSentences } from '../../src/sentences.js';

// What an agent reads when a call is refused or its result withheld: sentences that do not run together,
// and that agree with each other about what is halted (the session, or the whole token).

describe('joinSentences', () => {
  it('adds ". " only when the first part does not already end a sentence', () => {
    expect(joinSentences('ask an operator for an mcp_rw_ token', 'This token is now halted.')).toBe('ask an operator for an mcp_rw_ token. This token is now halted.');
    expect(joinSentences('Limit reached.', 'Pause.')).toBe('Limit reached. Pause.');
    expect(joinSentences('it was "withheld."', 'Next.')).toBe('it was "withheld." Next.');
    expect(joinSentences('trailing space ', 'Next.')).toBe('trailing space. Next.');
    expect(joinSentences('', 'Only.')).toBe('Only.');
  });
});

describe('after-call triggers: the message says what happened, not what the gateway must do', () => {
  const where = { tokenId: 'tok-1', sessionId: 'ses-1' };
  const rules = { largeResultBytes: 1000, largeResultsAllowed: false, maxRows: 10, maxExecutionSeconds: 1 };
  const report = { status: 'success' as const, duration_ms: 5, result_bytes: 2000 };

  it('LARGE_RESULT with halt_token_on including it: withheld, and the token is halted', () => {
    const fired = afterCallTrigger({ ...rules, haltTokenOn: new Set(['LARGE_RESULT'] as const) }, report, where);
    expect(fired?.trigger).toBe('LARGE_RESULT');
    expect(fired?.message).toBe(
      'The result is 2000 bytes, over the 1000-byte limit for results without permission, so it was withheld. This token is now halted (LARGE_RESULT): every session of it, new ones included, is stopped until an operator resumes it: POST /v1/keys/tok-1/resume.',
    );
    expect(fired?.message).not.toContain('withhold it');
  });

  it('without it in halt_token_on, the session is halted', () => {
    expect(afterCallTrigger({ ...rules, haltTokenOn: new Set() }, { ...report, result_bytes: 10, rows: 11 }, where)?.message).toBe(
      'The result has 11 rows, over the limit of 10, so it was withheld. Session ses-1 is now halted (MAX_ROWS) until an operator resumes it: POST /v1/sessions/ses-1/resume.',
    );
    expect(afterCallTrigger(rules, { ...report, result_bytes: 10, duration_ms: 1500 }, where)?.message).toMatch(/^The call ran 1500 ms, over the limit of 1 s, so its result was withheld\. Session ses-1 is now halted/);
  });
});

describe('denialText (the gateway)', () => {
  const halted = { id: 'ses-1', state: 'halted', trigger: 'WRITE_IN_READ_SESSION', last_calls: [{ id: 'dec-1', at: 0, args: '', server: 'filesystem', tool: 'write_file', decision: 'deny' as const, code: 'PERMISSION_DENIED' }] };

  it('does not call a token halt a session halt: when the message says what is halted, it only adds what to do', () => {
    const message = 'Session ses-1 is halted (WRITE_IN_READ_SESSION), and so is this token; an operator resumes both with POST /v1/keys/tok-1/resume; resuming the session alone is not enough.';
    const text = denialText('SESSION_HALTED', message, halted);
    expect(text).toBe(`SESSION_HALTED: ${message}\nStop and ask a human: nothing more runs until an operator resumes it.\nLast calls:\n- filesystem/write_file → deny PERMISSION_DENIED`);
    expect(text).not.toContain('an operator must resume it');
  });

  it('a message that does not say it is halted gets the session line', () => {
    expect(denialText('PERMISSION_DENIED', 'no', { id: 'ses-1', state: 'halted', trigger: 'X' })).toBe('PERMISSION_DENIED: no\nSession ses-1 is halted (trigger X): stop and ask a human; an operator must resume it.');
  });
});

describe('denial messages survive the audit trail unchanged', () => {
  // The audit trail masks what looks like a secret ("token: <value>"); a message the product writes itself
  // must not look like one, or the record of an incident reads "[REDACTED] operator resumes both".
  const ctx = { input: { session_id: 'ses-1', server: 'filesystem', tool: 'write_file' }, agent: { id: 'tok-1' }, call: { capability: 'write' } } as unknown as CallContext;
  const base = { allowed: false, now: 0, limits: {}, warnings: [], alerts: [] };
  const outcomes: GateOutcome[] = [
    { ...base, reason: 'SESSION_HALTED', heldTrigger: 'WRITE_IN_READ_SESSION', tokenHalted: true },
    { ...base, reason: 'SESSION_HALTED', heldTrigger: 'WRITE_IN_READ_SESSION' },
    { ...base, reason: 'TOKEN_HALTED', heldTrigger: 'UNAUTHORIZED_SERVER' },
    { ...base, reason: 'SESSION_UNKNOWN' },
    { ...base, reason: 'NO_EPOCH' },
    { ...base, reason: 'UNVERIFIED' },
    { ...base, reason: 'UNAVAILABLE' },
  ];
  for (const o of outcomes) {
    it(`${o.reason}${o.tokenHalted ? ' (token halted too)' : ''}`, () => {
      const message = denialFor(o, ctx)?.message ?? '';
      expect(message).not.toBe('');
      expect(redactText(message)).toBe(message);
    });
  }
});
