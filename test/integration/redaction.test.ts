import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDACTED } from '../../src/audit/redact.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// Secrets an agent or gateway sends in free text, through HTTP: masked where they are stored and shown
// (docs/audit.md, "Redaction"), while what identifies a token stays readable.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let viewer: string;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
  viewer = await t.operatorKey(app, 'viewer');
});
afterAll(() => t.teardown());

describe('a session purpose', () => {
  it('is stored masked and never shown in clear, to a viewer either, also when stored in clear by an earlier version', async () => {
    const tok = await gw.token('rw');
    const purpose = `use key ${gw.owner} and password=hunter2`;
    const masked = `use key ksop_${REDACTED} and password=${REDACTED}`;
    const opened = await app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(tok.raw), payload: { purpose } });
    expect(opened.statusCode).toBe(201);
    const sid = opened.json().session_id as string;
    expect(opened.json().purpose).toBe(masked);
    const stored = async () => (await t.pool().query('SELECT purpose FROM sessions WHERE id = $1', [sid])).rows[0].purpose;
    expect(await stored()).toBe(masked);
    const shown = async () => {
      const one = await app.inject({ url: `/v1/sessions/${sid}`, headers: bearer(viewer) });
      const list = await app.inject({ url: `/v1/sessions?token=${tok.id}`, headers: bearer(viewer) });
      return [one.json().purpose, list.json().sessions.find((s: { id: string }) => s.id === sid).purpose];
    };
    expect(await shown()).toEqual([masked, masked]);

    await t.pool().query('UPDATE sessions SET purpose = $2 WHERE id = $1', [sid, purpose]);
    expect(await shown()).toEqual([masked, masked]);
  });
});

describe("a decision's audit row", () => {
  it('masks credentials in the client name, version and user agent, and the values after secret flags in its arguments', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const client = { name: 'agent password=hunter2', version: '1.0 token=T0ken999', user_agent: `curl Authorization: Bearer ${gw.owner}` };
    const args = {
      cmd: 'mysql -u root --password S3cretpw2 --api-key AK3y999 --token T0ken999 -e "select 1" --defaults-file /etc/my.cnf',
      argv: ['--password', 'S3cretpw2', '--api-key', 'AK3y999', '--token', 'T0ken999', '-p', '/tmp/out'],
    };
    const d = await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: args, session_id: s.session_id, client });
    expect(d.decision).toBe('allow');
    expect((await gw.result(tok.raw, d.decision_id, { status: 'success', duration_ms: 3, result_bytes: 10 })).statusCode).toBeLessThan(300);
    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query('SELECT kind, client_name, client_version, user_agent, arguments FROM audit_events WHERE decision_id = $1 ORDER BY seq', [d.decision_id]);
    expect(rows.map((r) => r.kind)).toEqual(['INTENT', 'RESULT']);
    expect(rows[0]).toMatchObject({ client_name: `agent password=${REDACTED}`, client_version: `1.0 token=${REDACTED}`, user_agent: `curl Authorization: Bearer ${REDACTED}` });
    expect(rows[0].arguments).toEqual({
      cmd: `mysql -u root --password ${REDACTED} --api-key ${REDACTED} --token ${REDACTED} -e "select 1" --defaults-file /etc/my.cnf`,
      argv: ['--password', REDACTED, '--api-key', REDACTED, '--token', REDACTED, '-p', '/tmp/out'],
    });
    const exported = await app.inject({ url: `/v1/audit/export?format=jsonl&session=${s.session_id}`, headers: bearer(viewer) });
    expect(exported.statusCode).toBe(200);
    expect(exported.body).toContain(d.decision_id);
    for (const secret of [gw.owner, 'hunter2', 'T0ken999', 'S3cretpw2', 'AK3y999']) expect(exported.body).not.toContain(secret);
  });
});

describe("a call's error and a tool's name, where operators and gateways read them", () => {
  const GH = `ghp_${'A1b2C3d4'.repeat(5)}`;

  it("an upstream's error text is masked in a session's last calls (a viewer's read, a halt answer's list), also one stored in clear before", async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: '/tmp/a' }, session_id: s.session_id });
    expect(d.decision).toBe('allow');
    const error = `connect failed: postgres://svc:UpErrPw42@db/app token ${GH} for jane`;
    expect((await gw.result(tok.raw, d.decision_id, { status: 'error', duration_ms: 3, result_bytes: 0, error })).statusCode).toBeLessThan(300);
    const masked = `connect failed: postgres://svc:${REDACTED}@db/app token ${REDACTED} for jane`;
    const shown = async () => {
      const calls = (await app.inject({ url: `/v1/sessions/${s.session_id}`, headers: bearer(viewer) })).json().last_calls as { id: string; outcome?: { error?: string } }[];
      return calls.find((c) => c.id === d.decision_id)?.outcome?.error;
    };
    await until(async () => (await shown()) !== undefined, 5_000, 'the outcome on the last calls');
    expect(await shown()).toBe(masked);
    expect(await app.ctx.sessions.lastCalls(s.session_id, 3)).toEqual([expect.objectContaining({ outcome: expect.objectContaining({ error: masked }) })]);

    // As an earlier version stored it: in clear.
    const key = app.ctx.redis.key('lc', s.session_id);
    const entry = JSON.parse((await app.ctx.redis.redis.lindex(key, 0))!);
    entry.outcome.error = error;
    await app.ctx.redis.redis.lset(key, 0, JSON.stringify(entry));
    expect(await shown()).toBe(masked);
  });

  it('a tool name holding a credential is masked in the audit row, an export and the last calls', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const tool = `read_text_file?token=${GH}`;
    const d = await gw.decide(tok.raw, { server: 'filesystem', tool, arguments: {}, session_id: s.session_id });
    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query('SELECT tool FROM audit_events WHERE decision_id = $1', [d.decision_id]);
    expect(rows).toEqual([{ tool: `read_text_file?token=${REDACTED}` }]);
    const calls = (await app.inject({ url: `/v1/sessions/${s.session_id}`, headers: bearer(viewer) })).json().last_calls as { id: string; tool: string }[];
    expect(calls.find((c) => c.id === d.decision_id)?.tool).toBe(`read_text_file?token=${REDACTED}`);
    // Nor is it kept in clear in the decision's metadata in Redis (kept for DECISION_META_TTL_S).
    const meta = await app.ctx.redis.redis.get(app.ctx.redis.key('d', d.decision_id));
    if (meta !== null) expect(meta).not.toContain(GH);
    // An entry of the last calls, and the halt's copy of them, stored before tool names and errors were
    // masked: masked as they are read.
    const key = app.ctx.redis.key('lc', s.session_id);
    const entry = JSON.parse((await app.ctx.redis.redis.lindex(key, 0))!);
    await app.ctx.redis.redis.lset(key, 0, JSON.stringify({ ...entry, tool }));
    const shownTool = async () => ((await app.inject({ url: `/v1/sessions/${s.session_id}`, headers: bearer(viewer) })).json().last_calls as { tool: string }[])[0]?.tool;
    expect(await shownTool()).toBe(`read_text_file?token=${REDACTED}`);
    const legacy = { last_calls: [{ ...entry, tool, outcome: { status: 'error', error: `password=SnapPlainPassw0rd ${GH}` } }] };
    await t.pool().query('UPDATE sessions SET halt_summary = $2 WHERE id = $1', [s.session_id, legacy]);
    await app.ctx.redis.redis.del(key);
    const detail = (await app.inject({ url: `/v1/sessions/${s.session_id}`, headers: bearer(viewer) })).json();
    expect(JSON.stringify(detail)).not.toContain(GH);
    expect(JSON.stringify(detail)).not.toContain('SnapPlainPassw0rd');
    expect(detail.last_calls[0].tool).toBe(`read_text_file?token=${REDACTED}`);
    const exported = await app.inject({ url: `/v1/audit/export?format=csv&session=${s.session_id}`, headers: bearer(viewer) });
    expect(exported.body).toContain(d.decision_id);
    expect(exported.body).not.toContain(GH);
  });
});

describe('a server name holding a credential', () => {
  it('is masked in the log line of the denial, the audit row and the alert of the halt (the agent chose it)', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const server = gw.owner;
    const d = await gw.decide(tok.raw, { server, tool: 'read_text_file', session_id: s.session_id });
    expect(d.code).toBe('UNKNOWN_SERVER');
    await app.ctx.audit.writer.flush();
    const masked = `ksop_${REDACTED}`;
    const { rows } = await t.pool().query('SELECT server FROM audit_events WHERE decision_id = $1', [d.decision_id]);
    expect(rows).toEqual([{ server: masked }]);
    const line = t.logs.lines.find((l) => l.includes(d.decision_id) && l.includes('"msg":"decision denied"'));
    expect(line && JSON.parse(line).server).toBe(masked);
    await until(async () => (await t.pool().query("SELECT 1 FROM alerts WHERE session_id = $1 AND kind = 'SESSION_HALTED'", [s.session_id])).rows.length > 0, 5_000, 'the halt alert');
    const alerts = (await t.pool().query('SELECT server FROM alerts WHERE session_id = $1', [s.session_id])).rows as { server: string | null }[];
    expect(alerts.map((a) => a.server)).toContain(masked);
    expect(t.logs.text).not.toContain(server);
    expect(JSON.stringify(alerts)).not.toContain(server);
  });

  it('declared for a session, is masked in the warning of the answer and of the log line', async () => {
    const tok = await gw.token('rw');
    const opened = await app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(tok.raw), payload: { servers: [gw.owner] } });
    expect(opened.statusCode, opened.body).toBe(201);
    const sid = opened.json().session_id as string;
    expect(opened.json().warnings[0].problem).toMatch(/^"ksop_\[REDACTED\]" is not a server of the policy/);
    const line = t.logs.lines.find((l) => l.includes(sid) && l.includes('"msg":"session opened"'));
    expect(line).toContain('ksop_[REDACTED]');
    expect(line).not.toContain(gw.owner);
  });

  it('declared for a session, is kept masked (Postgres, Redis, the answer, one and the list to a viewer, also when stored in clear before), the policy\'s names as written and matched', async () => {
    const tok = await gw.token('rw');
    const masked = ['ksop_[REDACTED]', 'filesystem'];
    const opened = await app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(tok.raw), payload: { servers: [gw.owner, 'filesystem'] } });
    expect(opened.statusCode, opened.body).toBe(201);
    const sid = opened.json().session_id as string;
    expect(opened.json().servers).toEqual(masked);
    expect(opened.body).not.toContain(gw.owner);
    const stored = async () => (await t.pool().query('SELECT servers FROM sessions WHERE id = $1', [sid])).rows[0].servers;
    expect(await stored()).toEqual(masked);
    const mirror = app.ctx.sessions.mirror.redis;
    expect(JSON.stringify(await mirror.redis.hgetall(mirror.key('s', sid)))).not.toContain(gw.owner);
    const shown = async () => {
      const one = await app.inject({ url: `/v1/sessions/${sid}`, headers: bearer(viewer) });
      const list = await app.inject({ url: `/v1/sessions?token=${tok.id}`, headers: bearer(viewer) });
      return [one.json().servers, list.json().sessions.find((s: { id: string }) => s.id === sid).servers];
    };
    expect(await shown()).toEqual([masked, masked]);
    // The scope still holds: the declared policy server is matched, another one halts the session.
    expect((await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id: sid })).code).toBe('OK');
    const other = await gw.decide(tok.raw, { server: 'memory', tool: 'read_graph', arguments: {}, session_id: sid });
    expect(other.session).toMatchObject({ state: 'halted', trigger: 'UNAUTHORIZED_SERVER' });
    expect(JSON.stringify(other)).not.toContain(gw.owner);

    await t.pool().query('UPDATE sessions SET servers = $2 WHERE id = $1', [sid, [gw.owner, 'filesystem']]);
    expect(await shown()).toEqual([masked, masked]);
  });
});

describe("an agent token's description", () => {
  it('is stored masked and shown masked (one and the list, to a viewer), also when stored in clear before', async () => {
    const description = `ci bot ghp_${'Z9y8X7w6'.repeat(5)} password=DescPw123`;
    const masked = `ci bot ${REDACTED} password=${REDACTED}`;
    const created = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(gw.owner), payload: { type: 'ro', role: 'code_agent', project_id: 'desc', environment: 'development', description } });
    expect(created.statusCode, created.body).toBe(201);
    const id = created.json().key.id as string;
    expect(created.json().key.description).toBe(masked);
    const stored = async () => (await t.pool().query('SELECT description FROM agent_tokens WHERE id = $1', [id])).rows[0].description;
    expect(await stored()).toBe(masked);
    const shown = async () => [
      (await app.inject({ url: `/v1/keys/${id}`, headers: bearer(viewer) })).json().description,
      (await app.inject({ url: '/v1/keys?project=desc', headers: bearer(viewer) })).json().keys[0].description,
    ];
    expect(await shown()).toEqual([masked, masked]);
    await t.pool().query('UPDATE agent_tokens SET description = $2 WHERE id = $1', [id, description]);
    expect(await shown()).toEqual([masked, masked]);
    // Listed by a bulk revoke's dry run, and copied by a rotation (answer and new row): masked too.
    const dry = await app.inject({ method: 'POST', url: '/v1/keys/bulk-revoke', headers: bearer(gw.owner), payload: { dry_run: true, project_id: 'desc' } });
    expect(dry.statusCode, dry.body).toBe(200);
    expect(dry.json().tokens.map((k: { description: string }) => k.description)).toEqual([masked]);
    const rotated = await app.inject({ method: 'POST', url: `/v1/keys/${id}/rotate`, headers: bearer(gw.owner), payload: { grace_seconds: 0 } });
    expect(rotated.statusCode, rotated.body).toBe(201);
    expect([rotated.json().key.description, rotated.json().previous.description]).toEqual([masked, masked]);
    expect((await t.pool().query('SELECT description FROM agent_tokens WHERE id = $1', [rotated.json().key.id])).rows[0].description).toBe(masked);
  });
});

describe('a kill reason and a decision\'s arguments', () => {
  it('keep the words of an incident and of a command, mask only the credentials in them', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const reason = 'INC-1 token exfiltrating via fetch, rotate the token immediately (leaked token abC9dEf0gh1)';
    const kill = await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'session', session_id: s.session_id, reason } });
    expect(kill.statusCode).toBe(201);
    const masked = `INC-1 token exfiltrating via fetch, rotate the token immediately (leaked token ${REDACTED})`;
    const id = kill.json().kill.id as string;
    expect(kill.json().kill.reason).toBe(masked);
    expect((await app.inject({ url: `/v1/kills/${id}`, headers: bearer(viewer) })).json().reason).toBe(masked);
    const lift = { reason: 'INC-1 the token endpoint is fixed' };
    expect((await app.inject({ method: 'DELETE', url: `/v1/kills/${id}`, headers: bearer(gw.owner), payload: lift })).json().kill.lift_reason).toBe(lift.reason);

    const s2 = await gw.session(tok.raw);
    const args = {
      cmd: 'git clone https://x-access-token:plainpw1@github.com/o/r.git && aws configure set aws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
      sql: "UPDATE users SET password = crypt('newpw', gen_salt('bf')) WHERE id = 1",
      headers: [['X-Api-Key', 'plainapikey123456']],
      form: [{ name: 'password', value: 'formpw123' }],
      tokenizer: 'bert-base',
    };
    const d = await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: args, session_id: s2.session_id });
    expect(d.decision).toBe('allow');
    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query("SELECT arguments FROM audit_events WHERE decision_id = $1 AND kind = 'INTENT'", [d.decision_id]);
    expect(rows[0].arguments).toEqual({
      cmd: `git clone https://x-access-token:${REDACTED}@github.com/o/r.git && aws configure set aws_secret_access_key ${REDACTED}`,
      sql: `UPDATE users SET password = crypt('${REDACTED}', gen_salt('bf')) WHERE id = 1`,
      headers: [['X-Api-Key', REDACTED]],
      form: [{ name: 'password', value: REDACTED }],
      tokenizer: 'bert-base',
    });
  });
});

describe("a decision's arguments holding the credentials a privacy review found stored in clear", () => {
  it('are masked in the audit row: passphrases, cookies, authorization, credentials, Azure keys, Slack webhooks, a bearer key, a credential used as a key', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const ghp = `ghp_${'A'.repeat(36)}`;
    const args = {
      env: 'GPG_PASSPHRASE=correct-horse-9 make sign',
      header: 'Cookie: session=s3ss10nvalue; theme=dark',
      query: 'https://api.example.com/x?authorization=QWxhZGRpbjpvcGVu&page=2',
      form: 'credentials=svcUser:SvcPassw0rd',
      azure: 'DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4Zm9vYmFy==;EndpointSuffix=core.windows.net',
      webhook: 'https://hooks.slack.com/services/T0123ABCD/B0456EFGH/AbCdEfGhIjKlMnOpQrStUvWx',
      bearer: 'plainbearer123',
      seen: { [ghp]: 1 },
      note: 'author=Jane pinned=true response=200',
    };
    const d = await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: args, session_id: s.session_id });
    expect(d.decision).toBe('allow');
    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query("SELECT arguments FROM audit_events WHERE decision_id = $1 AND kind = 'INTENT'", [d.decision_id]);
    expect(rows[0].arguments).toEqual({
      env: `GPG_PASSPHRASE=${REDACTED} make sign`,
      header: `Cookie: ${REDACTED}`,
      query: `https://api.example.com/x?authorization=${REDACTED}&page=2`,
      form: `credentials=${REDACTED}`,
      azure: `DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=${REDACTED};EndpointSuffix=core.windows.net`,
      webhook: `https://hooks.slack.com/services/${REDACTED}`,
      bearer: REDACTED,
      seen: { [REDACTED]: 1 },
      note: 'author=Jane pinned=true response=200',
    });
    const text = JSON.stringify(rows[0].arguments);
    for (const secret of ['correct-horse', 's3ss10nvalue', 'QWxhZGRpbjpvcGVu', 'SvcPassw0rd', 'Zm9vYmFy', 'AbCdEfGhIjKlMnOpQrStUvWx', 'plainbearer123', ghp]) expect(text).not.toContain(secret);
  });
});

describe('alert messages', () => {
  const alertsOf = async (kind: string, pick: (a: { details: Record<string, unknown>; message: string }) => boolean) =>
    ((await app.inject({ url: `/v1/alerts?kind=${kind}`, headers: bearer(viewer) })).json().alerts as Array<{ details: Record<string, unknown>; message: string }>).find(pick);

  it("name the token by its display prefix (APPROVAL_REQUESTED) and its id (GRANT_ISSUED); a raw token in them is masked", async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const asked = await gw.decide(tok.raw, { server: 'filesystem', tool: 'move_file', arguments: { source: 'a.md', destination: 'b.md' }, session_id: s.session_id });
    expect(asked.code).toBe('APPROVAL_REQUIRED');
    const display = `${tok.raw.slice(0, 'mcp_rw_'.length + 4)}…`;
    const requested = () => alertsOf('APPROVAL_REQUESTED', (a) => a.details['approval_id'] === asked.approval_id);
    await until(async () => (await requested()) !== undefined, 5_000, 'the APPROVAL_REQUESTED alert');
    const requestedMessage = (await requested())!.message;
    expect(requestedMessage).toContain(`token ${display}`);
    expect(requestedMessage).not.toContain(REDACTED);

    const granted = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, reason: `INC-7: the agent pasted ${tok.raw}`, expires_in: 600 } });
    expect(granted.statusCode).toBe(201);
    const issued = () => alertsOf('GRANT_ISSUED', (a) => a.details['grant_id'] === granted.json().id);
    await until(async () => (await issued()) !== undefined, 5_000, 'the GRANT_ISSUED alert');
    const issuedMessage = (await issued())!.message;
    expect(issuedMessage).toContain(`to token ${tok.id}`);
    expect(issuedMessage).toContain(`INC-7: the agent pasted mcp_rw_${REDACTED}`);
    expect(issuedMessage).not.toContain(tok.raw);
  });
});
