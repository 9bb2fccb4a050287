import { describe, expect, it } from 'vitest';
import { type ApiAuditEvent, auditQuery, eventLine, parseLimit, parseMoment } from '../../src/cli/audit-search.js';
import { CliFailure } from '../../src/cli/kill.js';
import type { Config } from '../../src/config.js';

// The pure parts of `killswitch audit search`: what it sends for the options, and one row's line.
// test/integration/audit-search-cli.test.ts runs the command against a real control plane.

const NOW = Date.parse('2026-12-07T03:00:00.000Z');
const usage = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CliFailure);
    expect((err as CliFailure).exitCode).toBe(2);
    return (err as Error).message;
  }
  throw new Error('expected a usage error');
};

describe('parseMoment', () => {
  it('takes a zoned time, a UTC day or a duration back from now', () => {
    expect(parseMoment('--from', '2026-12-07T04:00+01:00', NOW).toISOString()).toBe('2026-12-07T03:00:00.000Z');
    expect(parseMoment('--from', '2026-12-07 02:30:15.5Z', NOW).toISOString()).toBe('2026-12-07T02:30:15.500Z');
    expect(parseMoment('--from', '2026-12-06', NOW).toISOString()).toBe('2026-12-06T00:00:00.000Z');
    expect(parseMoment('--from', '90m', NOW).toISOString()).toBe('2026-12-07T01:30:00.000Z');
  });

  it('refuses a time without its zone, a bare number and anything else, naming the option', () => {
    expect(usage(() => parseMoment('--to', '2026-12-07T03:00:00', NOW))).toBe('--to 2026-12-07T03:00:00: has no time zone: add Z for UTC (2026-12-07T03:00:00Z) or the offset (2026-12-07T03:00:00+01:00)');
    expect(usage(() => parseMoment('--from', '15', NOW))).toContain('--from 15: 15 has no unit');
    expect(usage(() => parseMoment('--from', '2026-13-45', NOW))).toBe('--from 2026-13-45: is not a valid date');
    expect(usage(() => parseMoment('--from', 'now\u001b[2J', NOW))).toContain('--from now\\u001b[2J: expected a time with its zone');
  });
});

describe('parseLimit', () => {
  it('is 50 by default and 1 to 5000 when given', () => {
    expect(parseLimit(undefined)).toBe(50);
    expect(parseLimit('5000')).toBe(5000);
    for (const bad of ['0', '5001', '1.5', '-3', 'ten']) expect(usage(() => parseLimit(bad))).toContain('expected a whole number from 1 to 5000');
  });
});

describe('auditQuery', () => {
  const cfg = {} as Config;
  it('sends the API its parameters: codes and kinds in capitals, ids in lower case, the window in UTC', async () => {
    const { query } = await auditQuery(
      cfg,
      { code: 'kill_switch', kind: 'admin', session: '0190AAAA-0000-7000-8000-00000000000A', decision: 'deny', tool: ' write_file ', since: 3600, to: '2026-12-07T04:00:00+01:00' },
      NOW + 1000,
    );
    expect(query).toEqual({
      session: '0190aaaa-0000-7000-8000-00000000000a',
      decision: 'deny',
      code: 'KILL_SWITCH',
      tool: 'write_file',
      kind: 'ADMIN',
      from: '2026-12-07T02:00:01.000Z',
      to: '2026-12-07T03:00:00.000Z',
    });
    // A halt trigger is a code too (the RESULT rows of after-call triggers carry it).
    expect((await auditQuery(cfg, { code: 'large_result' })).query).toEqual({ code: 'LARGE_RESULT' });
  });

  it('refuses what would silently match nothing', async () => {
    const unknown = await auditQuery(cfg, { code: 'KILLSWITCH' }).catch((err: Error) => err.message);
    expect(unknown).toMatch(/^--code KILLSWITCH is not a decision code or a halt trigger: one of OK, PERMISSION_DENIED, KILL_SWITCH, .*MAX_EXECUTION_TIME \(docs\/errors\.md\)$/);
    // Each code once (CASCADE_WRITE is a decision code and a halt trigger).
    expect(String(unknown).match(/CASCADE_WRITE/g)).toHaveLength(1);
    await expect(auditQuery(cfg, { from: '1h', to: '2h' }, NOW)).rejects.toThrow('--from (2026-12-07T02:00:00.000Z) is not before --to (2026-12-07T01:00:00.000Z): nothing can match');
    await expect(auditQuery(cfg, { session: 's-042' })).rejects.toThrow('--session s-042 is not an id (a UUID)');
    await expect(auditQuery(cfg, { project: '  ' })).rejects.toThrow('--project is empty');
  });
});

describe('eventLine', () => {
  const base: ApiAuditEvent = {
    id: '0190aaaa-0000-7000-8000-000000000001',
    ts: '2026-12-07T02:14:03.120Z',
    kind: 'INTENT',
    actor_type: 'mcp_token',
    actor_id: 't1',
    token_id: '0190aaaa-0000-7000-8000-0000000000aa',
    token_type: 'rw',
    session_id: '0190aaaa-0000-7000-8000-0000000000bb',
    server: 'filesystem',
    tool: 'write_file',
    decision: 'deny',
    code: 'KILL_SWITCH',
    message: 'Stopped by an operator kill',
    action: null,
    target: null,
    result_status: null,
    summary: null,
    details: null,
  };

  it('one line: time, kind, decision, code, who (display prefix, else the token id), session, server/tool, message', () => {
    const displays = new Map([[base.token_id!, 'mcp_rw_XFuj']]);
    expect(eventLine(base, displays).split(/ {2,}/)).toEqual([
      '2026-12-07T02:14:03.120Z',
      'INTENT',
      'deny',
      'KILL_SWITCH',
      'mcp_rw_XFuj…',
      base.session_id,
      'filesystem/write_file',
      'Stopped by an operator kill',
    ]);
    expect(eventLine(base, new Map())).toContain(`  ${base.token_id}  `);
  });

  it('an operator action shows the operator, the action, and its target with the reason; a denial without a checked token says so', () => {
    const admin = { ...base, kind: 'ADMIN', actor_type: 'operator', actor_id: 'k1', token_id: null, session_id: null, server: null, tool: null, decision: null, code: null, message: null, action: 'kill.created', target: 'kill:k9', details: { operator_name: 'alice', reason: 'INC-7' } };
    expect(eventLine(admin, new Map()).split(/ {2,}/)).toEqual(['2026-12-07T02:14:03.120Z', 'ADMIN', '-', '-', 'operator:alice', '-', 'kill.created', 'kill:k9 — INC-7']);
    expect(eventLine({ ...base, token_id: null }, new Map())).toContain('  unchecked rw  ');
  });

  it('escapes what could rewrite the screen, and survives a row without some columns', () => {
    const line = eventLine({ ...base, message: 'a\u001b[2J\nb\u202ec', tool: 'x\u0007' }, new Map());
    for (const raw of ['\u001b', '\n', '\u202e', '\u0007']) expect(line).not.toContain(raw);
    expect(line).toContain('a\\u001b[2J\\u000ab\\u202ec');
    expect(line).toContain('filesystem/x\\u0007');
    const partial = { id: 'x', ts: '2026-12-07T02:14:03.120Z', kind: 'INTENT', actor_type: 'mcp_token', message: 42 } as unknown as ApiAuditEvent;
    expect(eventLine(partial, new Map()).split(/ {2,}/).slice(0, 4)).toEqual(['2026-12-07T02:14:03.120Z', 'INTENT', '-', '-']);
  });
});
