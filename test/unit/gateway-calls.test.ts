import { describe, expect, it } from 'vitest';
import type { DecisionAnswer, ResultBody } from '../../src/decisions/schemas.js';
import { type CallPorts, decideAndRun } from '../../src/gateway/calls.js';
import type { ApprovalStatusAnswer, ResultAnswerBody } from '../../src/gateway/control-plane.js';

// decideAndRun's own codes where the real control plane or an MCP client cannot show them: the answer
// to a call the agent cancelled (a client that cancelled never reads it; test/e2e/gateway-codes.test.ts
// drives the real cancellation), and a withhold whose report answer names no trigger (this control plane
// always names one; `trigger` is optional in the API).

const limits = { maxResultBytes: 1_000_000, maxRows: undefined, maxExecutionMs: 30_000 };
const call = { server: 'memory', tool: 'read_graph', arguments: {}, resources: [] };
const allow: DecisionAnswer = { decision: 'allow', code: 'OK', decision_id: 'd-1', message: 'allowed', limits: {} };
const text = { content: [{ type: 'text', text: 'graph: Ada knows Grace' }] };

function ports(p: { decide?: DecisionAnswer; report?: ResultAnswerBody; approval?: ApprovalStatusAnswer; wait?: boolean } = {}) {
  const reports: ResultBody[] = [];
  const ports: CallPorts = {
    agentToken: 'mcp_ro_test',
    sessionId: async () => 's-1',
    reopen: async () => 's-2',
    decide: async () => p.decide ?? allow,
    reportResult: async (decisionId, body) => {
      reports.push(body);
      return p.report ?? { decision_id: decisionId, recorded: true, action: 'none', message: 'result recorded' };
    },
    client: () => undefined,
    environment: undefined,
    approvalWait: { mode: p.wait ? 'wait' : 'return', timeoutMs: 60_000, pollMs: 20 },
    approvalStatus: async () => p.approval ?? { id: 'a-1', state: 'pending', expires_at: new Date(Date.now() + 60_000).toISOString(), reason: null, message: 'pending' },
  };
  return { ports, reports };
}

/** An upstream call that runs until its signal aborts, as the SDK's request does. */
const runUntilAborted = (started: () => void) => (o: { signal: AbortSignal }) =>
  new Promise<typeof text>((_, reject) => {
    o.signal.addEventListener('abort', () => reject(new Error('This operation was aborted')), { once: true });
    started();
  });

describe('the gateway code CANCELLED', () => {
  it('a call the agent cancels while it runs: CANCELLED, reported as cancelled', async () => {
    const { ports: p, reports } = ports();
    const abort = new AbortController();
    const outcome = await decideAndRun(p, call, limits, abort.signal, runUntilAborted(() => abort.abort()), () => ({ bytes: 0, rows: undefined, isError: false }));
    expect(outcome).toMatchObject({ kind: 'failed', code: 'CANCELLED', decisionId: 'd-1' });
    const said = 'the agent cancelled the call; it had been sent to the upstream, which may have done it all the same (a cancellation asks an MCP server to stop; it cannot undo what already ran)';
    expect(outcome.kind !== 'ok' && outcome.text).toBe(`CANCELLED: ${said}`);
    // The RESULT row must not read as "nothing happened": a cancelled write may be on disk.
    expect(reports).toEqual([expect.objectContaining({ status: 'cancelled', error: said })]);
  });

  it('a call the agent cancels while the gateway waits for its approval: CANCELLED, and it never runs', async () => {
    const denial: DecisionAnswer = { decision: 'deny', code: 'APPROVAL_REQUIRED', decision_id: 'd-2', message: 'a human must approve', limits: {}, approval_id: 'a-1' };
    const { ports: p, reports } = ports({ decide: denial, wait: true });
    const abort = new AbortController();
    let ran = false;
    const waiting = decideAndRun(
      p,
      call,
      limits,
      abort.signal,
      async () => {
        ran = true;
        return text;
      },
      () => ({ bytes: 0, rows: undefined, isError: false }),
      async () => {
        abort.abort();
      },
    );
    const outcome = await waiting;
    expect(outcome).toMatchObject({ kind: 'denied', code: 'CANCELLED', approvalId: 'a-1' });
    expect(outcome.kind !== 'ok' && outcome.text).toMatch(/^CANCELLED: the agent cancelled the call while it waited for approval a-1$/);
    expect(ran).toBe(false);
    expect(reports).toEqual([]);
  });
});

describe('the gateway code WITHHELD', () => {
  it('a withhold_and_halt answer without a trigger still withholds the result, naming WITHHELD', async () => {
    const report: ResultAnswerBody = { decision_id: 'd-1', recorded: true, action: 'withhold_and_halt', message: 'Session s-1 is now halted until an operator resumes it.' };
    const { ports: p } = ports({ report });
    const outcome = await decideAndRun(p, call, limits, new AbortController().signal, async () => text, () => ({ bytes: 40, rows: undefined, isError: false }));
    expect(outcome).toMatchObject({ kind: 'withheld', trigger: 'WITHHELD', decisionId: 'd-1' });
    const shown = outcome.kind !== 'ok' ? outcome.text : '';
    expect(shown).toMatch(/^WITHHELD: Session s-1 is now halted until an operator resumes it\. The result was withheld\./);
    expect(shown).not.toContain('Ada knows Grace');
  });

  it('with a trigger, or with a guard of its own, the withhold names that instead', async () => {
    const named: ResultAnswerBody = { decision_id: 'd-1', recorded: true, action: 'withhold_and_halt', trigger: 'MAX_ROWS', message: 'The result has 9 rows, over the limit of 5, so it was withheld.' };
    const outcome = await decideAndRun(ports({ report: named }).ports, call, limits, new AbortController().signal, async () => text, () => ({ bytes: 40, rows: 9, isError: false }));
    expect(outcome).toMatchObject({ kind: 'withheld', trigger: 'MAX_ROWS' });
    const unnamed: ResultAnswerBody = { decision_id: 'd-1', recorded: true, action: 'withhold_and_halt', message: 'halted' };
    const guarded = await decideAndRun(ports({ report: unnamed }).ports, call, { ...limits, maxResultBytes: 10 }, new AbortController().signal, async () => text, () => ({ bytes: 40, rows: undefined, isError: false }));
    expect(guarded).toMatchObject({ kind: 'withheld', trigger: 'LARGE_RESULT' });
  });
});
