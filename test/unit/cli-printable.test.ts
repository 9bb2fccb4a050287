import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliFailure, listKills, resolveTokenId, unkill } from '../../src/cli/kill.js';
import { printable, printableJson } from '../../src/cli/printable.js';
import type { Config } from '../../src/config.js';
import { TEXT_PATTERN } from '../../src/tokens/names.js';

// What the CLI prints of the control plane's answers: control characters, separators and bidirectional
// marks are shown escaped, never written to the terminal.

// No control character, separator or bidirectional mark: what the API accepts in a reason.
const ONE_LINE = new RegExp(TEXT_PATTERN, 'u');
const printedSafely = (text: string) => text.split('\n').every((l) => ONE_LINE.test(l));

describe('printable', () => {
  it('shows ESC, line breaks, C1 controls, separators and bidirectional marks as \\uXXXX, and leaves the rest alone', () => {
    expect(printable('maintenance\u001b[2K\u001b[1A\nALERT: all clear\r\t\u009B\u2028\u202Etxt.exe\u2067')).toBe(
      'maintenance\\u001b[2K\\u001b[1A\\u000aALERT: all clear\\u000d\\u0009\\u009b\\u2028\\u202etxt.exe\\u2067',
    );
    expect(printable('Wartung — café ✓ 维护 C:\\temp 😀')).toBe('Wartung — café ✓ 维护 C:\\temp 😀');
  });

  it('printableJson is valid JSON of the same value, indented, with no raw control or bidirectional character', () => {
    const value = { kills: [{ reason: 'a\u001bb\nc\u202Ed\u0085e\u2029f' }], n: 1 };
    const text = printableJson(value);
    expect(JSON.parse(text)).toEqual(value);
    expect(text).toContain('\n  "kills": [');
    expect(text.split('\n').every((l) => ONE_LINE.test(l))).toBe(true);
    expect(text).toContain('"a\\u001bb\\nc\\u202ed\\u0085e\\u2029f"');
  });
});

describe('killswitch kills / unkill print what the control plane answers escaped', () => {
  // A reason stored before the API refused such characters (the API now answers 400 for them), as a
  // stand-in control plane answers it.
  const reason = 'maintenance\u001b[2K\u001b[1A\n0190aaaa-0000-7000-8000-000000000001  lifted  everything  — all clear \u202Etxt.exe';
  const kill = {
    id: '0190aaaa-0000-7000-8000-000000000002',
    target: 'everything',
    description: 'every MCP call',
    reason,
    created_by: 'operator:ana\u001b]0;pwned\u0007',
    created_at: '2026-01-01T00:00:00.000Z',
    expires_at: null,
    lifted_at: '2026-01-01T01:00:00.000Z',
    lifted_by: 'operator:bo',
    lift_reason: 'done\u009B2J',
    state: 'lifted',
  };
  let server: Server;
  let cfg: Config;
  beforeAll(async () => {
    server = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      if (req.method === 'GET' && req.url?.startsWith('/v1/keys')) {
        // Two live tokens share the display prefix mcp_rw_AAAA; a third is expired.
        const token = (id: string, description: string, expires_at: string | null = null) => ({ id, type: 'rw', display_prefix: 'mcp_rw_AAAA', description, project_id: 'alpha', expires_at, revoked_at: null });
        return res.end(
          JSON.stringify({
            keys: [
              token('0190aaaa-0000-7000-8000-000000000011', 'ci bot\u001b[2J'),
              token('0190aaaa-0000-7000-8000-000000000012', 'docs agent'),
              token('0190aaaa-0000-7000-8000-000000000013', 'old', '2020-01-01T00:00:00.000Z'),
            ],
          }),
        );
      }
      if (req.method === 'GET') return res.end(JSON.stringify({ kills: [kill], next_before: null }));
      if (req.url?.endsWith('/missing')) {
        res.statusCode = 404;
        return res.end(JSON.stringify({ error: { code: 'NOT_FOUND', message: 'no kill\u001b[2J\nkill lifted' } }));
      }
      res.end(JSON.stringify({ kill, message: 'Kill lifted\u001b[1A' }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cfg = { killswitchUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, killswitchOperatorKey: 'ks_op_test' } as Config;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const capture = () => {
    let text = '';
    return { out: { write: (s: string) => (text += s) }, text: () => text };
  };

  it('the table: one line per kill, ESC and the forged line shown escaped', async () => {
    const c = capture();
    await listKills(cfg, { all: true }, c.out);
    const lines = c.text().split('\n').filter(Boolean);
    expect(lines).toHaveLength(1);
    expect(printedSafely(c.text())).toBe(true);
    expect(lines[0]).toContain('maintenance\\u001b[2K\\u001b[1A\\u000a0190aaaa-0000-7000-8000-000000000001');
    expect(lines[0]).toContain('\\u202etxt.exe');
    expect(lines[0]).toContain('operator:ana\\u001b]0;pwned\\u0007');
    expect(lines[0]).toContain('(done\\u009b2J)');
  });

  it('--json: the same kills, parseable, with no raw control or bidirectional character', async () => {
    const c = capture();
    await listKills(cfg, { all: true, json: true }, c.out);
    expect(printedSafely(c.text())).toBe(true);
    expect(JSON.parse(c.text())).toEqual([kill]);
  });

  it("unkill's message and an error message are shown escaped too", async () => {
    const c = capture();
    await unkill(cfg, kill.id, { reason: 'done' }, c.out);
    expect(printedSafely(c.text())).toBe(true);
    expect(c.text()).toContain('Kill lifted\\u001b[1A\n');
    const failure = await unkill(cfg, 'missing', { reason: 'done' }, c.out).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(CliFailure);
    expect((failure as CliFailure).message).toBe('404 NOT_FOUND: no kill\\u001b[2J\\u000akill lifted');
  });

  it('a display prefix that several live tokens share: exit 1 listing their ids and descriptions, escaped', async () => {
    const failure = await resolveTokenId(cfg, 'mcp_rw_AAAA').catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(CliFailure);
    expect((failure as CliFailure).exitCode).toBe(1);
    const lines = (failure as CliFailure).message.split('\n');
    expect(lines[0]).toBe('2 live agent tokens have the display prefix mcp_rw_AAAA…; pass the id of the one to kill:');
    expect(lines.slice(1)).toEqual([
      '  0190aaaa-0000-7000-8000-000000000011  mcp_rw_AAAA…  project alpha  ci bot\\u001b[2J',
      '  0190aaaa-0000-7000-8000-000000000012  mcp_rw_AAAA…  project alpha  docs agent',
    ]);
    expect(await resolveTokenId(cfg, '0190AAAA-0000-7000-8000-000000000011')).toBe('0190AAAA-0000-7000-8000-000000000011');
  });
});
