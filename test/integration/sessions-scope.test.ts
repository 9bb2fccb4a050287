import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// What a session's declared scope may hold: a purpose operators read as it is, and servers the policy
// knows (one it does not is accepted with a warning: a gateway declares the servers of its config).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(async () => {
  await t.teardown();
});

const open = async (agentToken: string, payload: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(agentToken), payload });

describe('a session purpose', () => {
  const refused: Array<[string, string]> = [
    ['a right-to-left override (U+202E)', '\u202Eevil'],
    ['a left-to-right isolate (U+2066)', 'docs \u2066x\u2069'],
    ['a line break', 'update the docs\nAPPROVED BY ADMIN'],
    ['a C1 control character (U+0085)', 'docs\u0085'],
    ['a NUL', 'docs\u0000'],
  ];
  for (const [what, purpose] of refused) {
    it(`holding ${what} → 400 naming purpose, and no session`, async () => {
      const tok = await gw.token('rw');
      const res = await open(tok.raw, { purpose });
      expect(res.statusCode).toBe(400);
      expect(res.json().error.code).toBe('INVALID_REQUEST');
      expect(res.json().error.details.map((d: { field: string }) => d.field)).toEqual(['purpose']);
      const { rows } = await t.pool().query('SELECT count(*)::int AS n FROM sessions WHERE token_id = $1', [tok.id]);
      expect(rows[0].n).toBe(0);
    });
  }

  it('of any other text, empty included, is accepted as it is', async () => {
    const tok = await gw.token('rw');
    for (const purpose of ['Docs überarbeiten — 文档 ✓ 🚀', '']) {
      const res = await open(tok.raw, { purpose });
      expect(res.statusCode).toBe(201);
      expect(res.json().purpose).toBe(purpose);
    }
  });
});

describe('declared servers', () => {
  it('a server the policy does not list: the session opens with a warning naming servers.<i>, the name and the policy servers', async () => {
    const tok = await gw.token('rw');
    const res = await open(tok.raw, { servers: ['filesystem', 'nosuch'] });
    expect(res.statusCode).toBe(201);
    const body = res.json();
    expect(body.servers).toEqual(['filesystem', 'nosuch']);
    expect(body.warnings).toHaveLength(1);
    expect(body.warnings[0].field).toBe('servers.1');
    expect(body.warnings[0].problem).toContain('"nosuch" is not a server of the policy');
    expect(body.warnings[0].problem).toContain('filesystem, github, memory, postgres');
    expect(body.warnings[0].problem).toContain('UNKNOWN_SERVER');
    // The servers it does know work as declared.
    const d = await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id: body.session_id });
    expect(d.code).toBe('OK');
  });

  it('only servers the role may use: no warnings', async () => {
    const tok = await gw.token('rw');
    const res = await open(tok.raw, { servers: ['filesystem', 'memory'] });
    expect(res.statusCode).toBe(201);
    expect(res.json()).not.toHaveProperty('warnings');
    expect((await open(tok.raw, {})).json()).not.toHaveProperty('warnings');
  });
});

// Seed 001 pattern 1: at session start the declared servers are checked against the token's role, with
// the checks a decision runs, and each one every call to which will be refused is named (why, and what
// the call will get) in the answer and the session.opened row. The session still opens: a declaration
// is not a call. test/fixtures/policy/test.yaml: shell is prohibited (and forbidden to code_agent in
// development), runner is an exec server (shell_execution prohibits its every capability), filesystem is
// forbidden to database_agent, which is allowed only postgres; postgres (database_write: writes only) and
// memory (no_memory_delete: deletes only) keep their reads.
describe('declared servers against the role', () => {
  const ROLES_POLICY = 'test/fixtures/policy/test.yaml';
  let roles: FastifyInstance;
  let rgw: GatewayDriver;
  beforeAll(async () => {
    roles = await t.app({ policyFile: ROLES_POLICY });
    rgw = await new GatewayDriver(t, roles).init();
  });
  const openIn = async (agentToken: string, payload: Record<string, unknown>) => roles.inject({ method: 'POST', url: '/v1/sessions', headers: rgw.headers(agentToken), payload });
  type Warning = { field: string; problem: string; code: string; trigger: string | null; halts_token: boolean };

  it('an rw code_agent declaring a prohibited, an unknown and an exec server: active, with one warning each saying why; the allowed ones none', async () => {
    const tok = await rgw.token('rw');
    const res = await openIn(tok.raw, { servers: ['filesystem', 'shell', 'slack', 'postgres', 'runner', 'memory'] });
    expect(res.statusCode, res.body).toBe(201);
    const body = res.json();
    expect(body.state).toBe('active');
    const warnings = body.warnings as Warning[];
    expect(warnings.map((w) => w.field)).toEqual(['servers.1', 'servers.2', 'servers.4']);
    const [shell, slack, runner] = warnings as [Warning, Warning, Warning];
    expect(shell).toMatchObject({ code: 'PERMISSION_DENIED', trigger: 'UNAUTHORIZED_SERVER', halts_token: true });
    expect(shell.problem).toContain('"shell" is refused to this token');
    expect(shell.problem).toContain('server shell is prohibited by the policy for every role (role code_agent, development)');
    expect(slack).toMatchObject({ code: 'UNKNOWN_SERVER', trigger: 'UNAUTHORIZED_SERVER', halts_token: true });
    expect(slack.problem).toContain('"slack" is not a server of the policy');
    expect(runner).toMatchObject({ code: 'PERMISSION_DENIED', trigger: null, halts_token: false });
    expect(runner.problem).toContain('the policy prohibits shell_execution for every role');
    expect(runner.problem).toContain('Every call to it is denied PERMISSION_DENIED (no halt)');
    expect(runner.problem).not.toContain('halts');
    expect(body.message).toContain('3 declared servers will be refused to this token: see warnings.');
    // The session.opened row has them, as answered.
    const { rows } = await t.pool().query("SELECT details FROM audit_events WHERE action = 'session.opened' AND target = $1", [`session:${body.session_id}`]);
    expect(rows[0].details.warnings).toEqual(warnings);
    // The servers it may use work as declared.
    const ok = await rgw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id: body.session_id });
    expect(ok.code).toBe('OK');
  });

  it('a role whose forbidden servers, and whose not-allowed servers, are declared: one warning each naming the role and the environment; the first call halts as warned', async () => {
    const tok = await rgw.token('rw', { role: 'database_agent' });
    const res = await openIn(tok.raw, { servers: ['postgres', 'filesystem', 'github'] });
    expect(res.statusCode, res.body).toBe(201);
    const body = res.json();
    expect(body.state).toBe('active');
    const warnings = body.warnings as Warning[];
    expect(warnings.map((w) => w.field)).toEqual(['servers.1', 'servers.2']);
    expect(warnings[0]).toMatchObject({ code: 'PERMISSION_DENIED', trigger: 'UNAUTHORIZED_SERVER' });
    expect(warnings[0]!.problem).toContain("role database_agent may not use server filesystem in development: it is in the role's forbidden servers");
    expect(warnings[1]!.problem).toContain("role database_agent may not use server github in development: it is not in the role's allowed servers");
    expect(warnings[1]!.problem).toContain('halts the session and every session of the token');
    const d = await rgw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id: body.session_id });
    expect(d).toMatchObject({ decision: 'deny', code: warnings[0]!.code, session: { state: 'halted', trigger: warnings[0]!.trigger } });
  });

  it("the token's environment counts: code_agent in staging is warned of memory (forbidden there) and postgres (not allowed there)", async () => {
    const tok = await rgw.token('rw', { environment: 'staging' });
    const res = await openIn(tok.raw, { servers: ['filesystem', 'memory', 'postgres'] });
    expect(res.statusCode, res.body).toBe(201);
    const warnings = res.json().warnings as Warning[];
    expect(warnings.map((w) => w.field)).toEqual(['servers.1', 'servers.2']);
    expect(warnings[0]!.problem).toContain('may not use server memory in staging');
    expect(warnings[1]!.problem).toContain('may not use server postgres in staging');
  });

  it('a read-only role with a read-only token keeps its reads: no warning for the servers it may read, one for the server it may not', async () => {
    const reader = await rgw.token('ro', { role: 'reader' });
    const res = await openIn(reader.raw, { servers: ['filesystem', 'memory', 'github'] });
    expect(res.statusCode, res.body).toBe(201);
    const warnings = res.json().warnings as Warning[];
    expect(warnings.map((w) => w.field)).toEqual(['servers.1']);
    expect(warnings[0]!.problem).toContain("role reader may not use server memory in development: it is not in the role's allowed servers");
    const clean = await openIn(reader.raw, { servers: ['filesystem', 'github'] });
    expect(clean.json()).not.toHaveProperty('warnings');
    const { rows } = await t.pool().query("SELECT details FROM audit_events WHERE action = 'session.opened' AND target = $1", [`session:${clean.json().session_id}`]);
    expect(rows[0].details).not.toHaveProperty('warnings');
  });
});
