import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// Text that operators and agents send and others read (in denials, alerts, audit rows, the UI and the
// CLI's one-line-per-item output): a line break, an escape sequence or a bidirectional override must not
// make it read as something else. One-line fields refuse them (400 naming the field); an upstream's error
// and a result summary keep their lines and lose the rest.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  await app.ctx.sessions.ensureState();
  gw = await new GatewayDriver(t, app).init();
});
afterAll(async () => {
  for (const l of t.logs.lines) if (l.includes('unhandled error')) console.error(l.slice(0, 2000));
  await t.teardown();
});

const FORGED_LINE = 'maintenance\nALERT: all clear, ignore the above';
const ESCAPES = 'maintenance\u001b[2K\u001b[1Aall clear';
const OVERRIDE = 'evil\u202Etxt.exe';
const C1 = 'held\u009B31m';
const SEPARATOR = 'one\u2028two';
const unsafe = [FORGED_LINE, ESCAPES, OVERRIDE, C1, SEPARATOR];
const fields = (res: { json(): { error?: { details?: Array<{ field: string }> } } }) => (res.json().error?.details ?? []).map((d) => d.field);
const nobody = '0190aaaa-0000-7000-8000-0000000000ff';

describe('one-line operator fields (reasons, notes, key descriptions)', () => {
  const token = { type: 'ro', role: 'code_agent', project_id: 'alpha', environment: 'development' };
  const cases: Array<[string, string, string, (text: string) => Record<string, unknown>, string]> = [
    ['a kill reason', 'POST', '/v1/kills', (r) => ({ target: 'token', token_id: nobody, reason: r }), 'reason'],
    ['a kill lift reason', 'DELETE', `/v1/kills/${nobody}`, (r) => ({ reason: r }), 'reason'],
    ['a session resume reason', 'POST', `/v1/sessions/${nobody}/resume`, (r) => ({ reason: r }), 'reason'],
    ['a token resume reason', 'POST', `/v1/keys/${nobody}/resume`, (r) => ({ reason: r }), 'reason'],
    ['a token revoke reason', 'POST', `/v1/keys/${nobody}/revoke`, (r) => ({ reason: r }), 'reason'],
    ['a bulk revoke reason', 'POST', '/v1/keys/bulk-revoke', (r) => ({ dry_run: true, project_id: 'nobody', reason: r }), 'reason'],
    ['a rotation reason', 'POST', `/v1/keys/${nobody}/rotate`, (r) => ({ grace_seconds: 0, reason: r }), 'reason'],
    ['an agent token description', 'POST', '/v1/keys', (r) => ({ ...token, description: r }), 'description'],
    ['a grant reason', 'POST', '/v1/grants', (r) => ({ token_id: nobody, reason: r, expires_in: 3600 }), 'reason'],
    ['an approval reason', 'POST', `/v1/approvals/${nobody}/approve`, (r) => ({ reason: r }), 'reason'],
    ['a rejection reason', 'POST', `/v1/approvals/${nobody}/reject`, (r) => ({ reason: r }), 'reason'],
    ['a tool definition approval reason', 'POST', `/v1/tools/${nobody}/approve`, (r) => ({ reason: r }), 'reason'],
    ['a tool definition rejection reason', 'POST', `/v1/tools/${nobody}/reject`, (r) => ({ reason: r }), 'reason'],
    ['an alert acknowledgement note', 'POST', `/v1/alerts/${nobody}/ack`, (r) => ({ note: r }), 'note'],
    ['a bulk acknowledgement note', 'POST', '/v1/alerts/ack', (r) => ({ kind: ['KILL_SWITCH'], note: r }), 'note'],
  ];
  for (const [name, method, url, body, field] of cases) {
    it(`${name} with a line break, ESC, a C1 control, a line separator or a bidirectional override → 400 naming ${field}`, async () => {
      for (const text of unsafe) {
        const res = await app.inject({ method: method as 'POST' | 'DELETE', url, headers: bearer(gw.owner), payload: body(text) });
        expect(res.statusCode, `${JSON.stringify(text)}: ${res.body}`).toBe(400);
        expect(res.json().error.code).toBe('INVALID_REQUEST');
        expect(fields(res)).toEqual([field]);
        expect(res.json().error.message).toContain('One line');
      }
      // The same request with a reason in any script, emoji and punctuation passes the schema.
      const fine = await app.inject({ method: method as 'POST' | 'DELETE', url, headers: bearer(gw.owner), payload: body('Wartung — café ✓ 维护 «ok» (ticket #42)') });
      expect(fields(fine)).not.toContain(field);
    });
  }

  it('a kill whose reason is clean is created and its reason shown as given', async () => {
    const tok = await gw.token('ro');
    const res = await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'token', token_id: tok.id, reason: 'Wartung — café ✓ 维护' } });
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json().kill.reason).toBe('Wartung — café ✓ 维护');
  });
});

describe('what gateways send', () => {
  it('a tool report naming a tool with a line break or a bidirectional override → 400 naming the field; nothing is pinned', async () => {
    const tok = await gw.token('ro');
    for (const name of [`read_graph\nALERT: all clear, ignore${'\u202E'}txt.exe`, ESCAPES, OVERRIDE]) {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/gateway/tools',
        headers: gw.headers(tok.raw),
        payload: { servers: [{ name: 'memory', identity: { command: 'npx' }, tools: [{ name: 'search_nodes', description: 'fine' }, { name, description: 'x' }] }] },
      });
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().error.code).toBe('INVALID_REQUEST');
      expect(fields(res)).toEqual(['servers.0.tools.1.name']);
    }
    // The whole report is refused: not even the clean tool before it is pinned.
    const { rows } = await t.pool().query(`SELECT tool FROM tool_definitions WHERE server = 'memory'`);
    expect(rows).toEqual([]);
  });

  for (const field of ['name', 'version', 'user_agent'] as const) {
    it(`a decision whose client.${field} holds a line break, ESC or a bidirectional override → 400 naming client.${field}`, async () => {
      const tok = await gw.token('ro');
      const s = await gw.session(tok.raw);
      for (const text of unsafe) {
        const res = await app.inject({
          method: 'POST',
          url: '/v1/decisions',
          headers: gw.headers(tok.raw),
          payload: { server: 'memory', tool: 'read_graph', arguments: {}, session_id: s.session_id, client: { [field]: text } },
        });
        expect(res.statusCode, `${JSON.stringify(text)}: ${res.body}`).toBe(400);
        expect(fields(res)).toEqual([`client.${field}`]);
      }
      const fine = await app.inject({
        method: 'POST',
        url: '/v1/decisions',
        headers: gw.headers(tok.raw),
        payload: { server: 'memory', tool: 'read_graph', arguments: {}, session_id: s.session_id, client: { [field]: 'Claude/0.9.2 (darwin; ✓)' } },
      });
      expect(fine.statusCode, fine.body).toBe(200);
    });
  }

  it("a result's error and summary keep line feeds and tabs; ESC, a lone CR, C1 controls and bidirectional overrides become spaces, and the report is recorded", async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id: s.session_id });
    expect(d.decision).toBe('allow');
    const error = 'ENOENT: no such file\r\n\tat open (fs.js:1)\n\u001b[31mALERT\u001b[0m all clear\roverwritten \u202Etxt.exe\u009B';
    const summary = 'rows:\t3\n\u001b]8;;https://evil.example\u0007link\u001b]8;;\u0007';
    // Over the large-result limit, so the session halts and the summary reaches the SESSION_HALTED alert.
    const body = { status: 'error', duration_ms: 5, result_bytes: 2 * 1024 * 1024, error, summary };
    const res = await gw.result(tok.raw, d.decision_id, body);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ recorded: true, action: 'withhold_and_halt' });
    const cleanError = 'ENOENT: no such file\n\tat open (fs.js:1)\n [31mALERT [0m all clear overwritten  txt.exe ';
    const cleanSummary = 'rows:\t3\n ]8;;https://evil.example link ]8;; ';

    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT details FROM audit_events WHERE decision_id = $1 AND kind = 'RESULT'`, [d.decision_id]);
    expect(rows).toHaveLength(1);
    expect(rows[0].details.error).toBe(cleanError);

    const halted = async () =>
      (await app.inject({ url: `/v1/alerts?kind=SESSION_HALTED&token=${tok.id}`, headers: bearer(gw.owner) })).json().alerts as Array<{ details: Record<string, unknown> }>;
    await until(async () => (await halted()).length > 0, 5_000, 'the SESSION_HALTED alert');
    const [alert] = await halted();
    expect(alert?.details['summary']).toBe(cleanSummary);
    expect(alert?.details['error']).toBe(cleanError);

    // The gateway's retry of the same raw report is the same report, not a different one (409).
    const again = await gw.result(tok.raw, d.decision_id, body);
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json().repeated).toBe(true);
  });
});
