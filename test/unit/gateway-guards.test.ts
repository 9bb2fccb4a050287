import { describe, expect, it } from 'vitest';
import { boundedErrorText, MAX_AGENT_ERROR_BYTES } from '../../src/gateway/calls.js';
import { resultAnswerProblem } from '../../src/gateway/control-plane.js';
import { resultRows } from '../../src/gateway/guards.js';

// The gateway's result guards: what counts as rows, how much of an upstream error an agent reads, and
// which answers to a result report release a result.

const LIMIT = 1_048_576;
const rows = (n: number) => Array.from({ length: n }, (_, i) => ({ id: i }));
const text = (t: string) => ({ content: [{ type: 'text', text: t }] });

describe('resultRows', () => {
  it('counts a bare array, rows under any key, and an array inside an array (json_agg)', () => {
    expect(resultRows(text(JSON.stringify(rows(7))), LIMIT)).toBe(7);
    expect(resultRows(text(JSON.stringify({ rows: rows(500) })), LIMIT)).toBe(500);
    expect(resultRows(text(JSON.stringify({ result: { anything: rows(42) } })), LIMIT)).toBe(42);
    expect(resultRows(text(JSON.stringify([{ json_agg: rows(500) }])), LIMIT)).toBe(500);
  });

  it('counts embedded resources, resources/read contents and structured content; blocks add up', () => {
    expect(resultRows({ content: [{ type: 'resource', resource: { uri: 'x://y', text: JSON.stringify(rows(30)) } }] }, LIMIT)).toBe(30);
    expect(resultRows({ contents: [{ uri: 'x://y', text: JSON.stringify({ data: rows(12) }) }] }, LIMIT)).toBe(12);
    expect(resultRows({ structuredContent: { page: { items: rows(9) } }, content: [] }, LIMIT)).toBe(9);
    expect(resultRows({ content: [{ type: 'text', text: JSON.stringify(rows(4)) }, { type: 'text', text: JSON.stringify({ rows: rows(5) }) }] }, LIMIT)).toBe(9);
  });

  it('prose, objects without arrays and texts over the parse limit count no rows', () => {
    expect(resultRows(text('[not json] at all'), LIMIT)).toBeUndefined();
    expect(resultRows(text('{"name": "Ada"}'), LIMIT)).toBeUndefined();
    expect(resultRows(text(JSON.stringify(rows(100))), 50)).toBeUndefined();
    expect(resultRows({}, LIMIT)).toBeUndefined();
  });

  it('counts rows keyed by id and one object per content block (two or more), as a result may hold them to dodge maxRows', () => {
    const keyed = Object.fromEntries(rows(10).map((r) => [`row${r.id}`, r]));
    expect(resultRows({ structuredContent: keyed, content: [] }, LIMIT)).toBe(10);
    expect(resultRows(text(JSON.stringify({ data: keyed })), LIMIT)).toBe(10);
    const perBlock = { content: rows(10).map((r) => ({ type: 'text', text: JSON.stringify(r) })) };
    expect(resultRows(perBlock, LIMIT)).toBe(10);
    // One object alone, or an object of scalars, is no rows (as before).
    expect(resultRows(text('{"name": "Ada", "born": 1815}'), LIMIT)).toBeUndefined();
    expect(resultRows({ structuredContent: { user: { name: 'Ada' } }, content: [] }, LIMIT)).toBeUndefined();
  });

  it('deep nesting costs no stack', () => {
    const deep = `${'['.repeat(200_000)}${']'.repeat(200_000)}`;
    expect(resultRows(text(deep), LIMIT)).toBe(1);
  });
});

describe('boundedErrorText', () => {
  it('leaves a short message alone and cuts a long one to 4 KB, saying how long it was', () => {
    expect(boundedErrorText('boom')).toBe('boom');
    const long = `é${'x'.repeat(20_000)}`;
    const cut = boundedErrorText(long);
    expect(Buffer.byteLength(cut)).toBeLessThan(MAX_AGENT_ERROR_BYTES + 200);
    expect(cut).toMatch(/… \[killswitch: the upstream's error message was 20002 bytes; only the first 4096 are shown\]$/);
  });

  it('never ends in half a character', () => {
    const cut = boundedErrorText('é'.repeat(5000));
    expect(cut).not.toContain('\uFFFD');
  });
});

describe('resultAnswerProblem', () => {
  const ok = { decision_id: 'd-1', recorded: true, action: 'none', message: 'result recorded' };
  it('accepts the recorded answer for this decision, with either action', () => {
    expect(resultAnswerProblem(ok, 'd-1')).toBeUndefined();
    expect(resultAnswerProblem({ ...ok, action: 'withhold_and_halt', trigger: 'LARGE_RESULT' }, 'd-1')).toBeUndefined();
  });

  it('refuses anything else', () => {
    expect(resultAnswerProblem({ ok: true }, 'd-1')).toMatch(/decision_id/);
    expect(resultAnswerProblem({ ...ok, decision_id: 'd-2' }, 'd-1')).toMatch(/decision_id/);
    expect(resultAnswerProblem({ ...ok, recorded: false }, 'd-1')).toMatch(/recorded/);
    expect(resultAnswerProblem({ ...ok, action: 'release' }, 'd-1')).toMatch(/action/);
    expect(resultAnswerProblem([], 'd-1')).toMatch(/object/);
    expect(resultAnswerProblem(null, 'd-1')).toMatch(/object/);
  });
});
