import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REVOKE_NOT_ANNOUNCED, revokeExitCode } from '../../src/cli/token-ops.js';
import { createRedis } from '../../src/redis/client.js';
import { countingServer, killswitch, listenUrl } from '../helpers/cli.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// `killswitch revoke | resume` as the on-call operator runs them: a child process talking HTTP to a
// listening control plane, with the operator key from the environment (as kills-cli.test.ts).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let url = '';
let operatorKey = '';
let opId = '';
// A KILLSWITCH_URL that counts what reaches it: the usage errors must send nothing.
let counter: Awaited<ReturnType<typeof countingServer>>;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  await app.ctx.sessions.ensureState();
  url = await listenUrl(app);
  gw = await new GatewayDriver(t, app).init();
  operatorKey = await t.operatorKey(app, 'operator');
  opId = (await app.ctx.auth.authenticate(operatorKey)).id;
  counter = await countingServer();
});
afterAll(async () => {
  await counter?.close();
  await t.teardown();
});

const cli = (args: string[], env: Record<string, string> = {}) =>
  killswitch(args, { env: { KILLSWITCH_URL: url, KILLSWITCH_OPERATOR_KEY: operatorKey, LOG_LEVEL: 'warn', ...env } });

const read = (session_id: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id });
const write = (session_id: string) => ({ server: 'filesystem', tool: 'write_file', arguments: { path: 'a.md', content: 'x' }, session_id });
const decideStatus = async (raw: string, session_id: string) => (await app.inject({ method: 'POST', url: '/v1/decisions', headers: gw.headers(raw), payload: read(session_id) })).statusCode;

describe('killswitch revoke', () => {
  it('revokes a token by its id: the API confirms it, and a decision with the token is then 401', async () => {
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    expect(await decideStatus(tok.raw, s)).toBe(200);

    const res = await cli(['revoke', '--token', tok.id, '--reason', 'INC-31 token in a leaked config']);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`Revoked agent token ${tok.raw.slice(0, 'mcp_rw_'.length + 4)}… (${tok.id}, project alpha)`);
    expect(res.stdout).toContain(`Revoked by operator:${opId} at `);
    expect(res.stdout).toContain('INC-31 token in a leaked config');
    expect(res.stdout).toContain(`Control plane: ${url} (KILLSWITCH_URL)`);
    expect(res.stdout + res.stderr).not.toContain(tok.raw);
    expect(await decideStatus(tok.raw, s)).toBe(401);

    const shown = (await app.inject({ url: `/v1/keys/${tok.id}`, headers: bearer(operatorKey) })).json();
    expect(shown).toMatchObject({ revoked_by: `operator:${opId}`, revoke_reason: 'INC-31 token in a leaked config' });
  }, 120_000);

  it('exits 3 when Redis did not take the announcement: revoked and audited here, the other replicas not told (the answer says announced: false)', async () => {
    const tok = await gw.token('rw');
    // This replica as it is during a Redis outage: its command connection swapped for one to a port where nothing listens.
    const dead = createRedis('redis://127.0.0.1:1', app.ctx.redis.prefix, 100);
    const live = app.ctx.redis.redis;
    app.ctx.redis.redis = dead.redis;
    try {
      const human = await cli(['revoke', '--token', tok.id, '--reason', 'INC-33 while Redis was away']);
      expect(human.code, human.stderr).toBe(REVOKE_NOT_ANNOUNCED);
      expect(human.stderr).toContain(`token ${tok.id} is revoked and audited, but NOT ANNOUNCED to the other replicas (exit 3)`);
      expect(human.stderr).toContain('Redis did not take the announcement');
      expect(human.stdout).toContain('this replica refuses it; the others when their cache entry expires');

      const json = await cli(['revoke', '--token', tok.id, '--reason', 'INC-33 again', '--json']);
      expect(json.code).toBe(3);
      expect(JSON.parse(json.stdout)).toMatchObject({ id: tok.id, announced: false, warning: expect.stringContaining('Redis did not take the announcement') });
    } finally {
      app.ctx.redis.redis = live;
      await dead.close();
    }
    // Revoking again once Redis is back announces it: exit 0, announced.
    const again = await cli(['revoke', '--token', tok.id, '--reason', 'INC-33 announce', '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ id: tok.id, announced: true, revoke_reason: 'INC-33 while Redis was away' });
    // A malformed answer is not taken for announced.
    expect(revokeExitCode({ announced: true })).toBe(0);
    expect(revokeExitCode({})).toBe(3);
  }, 120_000);

  it('revokes a token by its display prefix (ellipsis included), with --json; the raw token is refused (exit 2, nothing sent)', async () => {
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    const display = tok.raw.slice(0, 'mcp_rw_'.length + 4);

    const before = counter.received;
    const raw = await cli(['revoke', '--token', tok.raw, '--reason', 'INC-32'], { KILLSWITCH_URL: counter.url });
    expect(raw.code, raw.stderr).toBe(2);
    expect(raw.stderr).toContain('not the token itself');
    expect(raw.stderr + raw.stdout).not.toContain(tok.raw);
    expect(counter.received).toBe(before);
    expect(await decideStatus(tok.raw, s)).toBe(200);

    const res = await cli(['revoke', '--token', `${display}…`, '--reason', 'INC-32', '--json']);
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ id: tok.id, display_prefix: display, revoked_by: `operator:${opId}`, revoke_reason: 'INC-32' });
    expect(await decideStatus(tok.raw, s)).toBe(401);

    // Revoked, its display prefix names no live token any more: exit 1 saying so.
    const again = await cli(['revoke', '--token', display, '--reason', 'INC-32']);
    expect(again.code, again.stderr).toBe(1);
    expect(again.stderr).toContain(`no live (unrevoked, unexpired) agent token this operator key can see has the display prefix ${display}…`);
  }, 120_000);

  it('refusals: an unknown id is exit 1 with the API message; a viewer key is exit 1 (403); no or a blank reason is exit 2 and sends nothing', async () => {
    const unknown = await cli(['revoke', '--token', '0190aaaa-0000-7000-8000-000000000000', '--reason', 'INC-33']);
    expect(unknown.code, unknown.stderr).toBe(1);
    expect(unknown.stderr).toMatch(/^killswitch: 404 NOT_FOUND: /);

    const tok = await gw.token('rw');
    const viewer = await t.operatorKey(app, 'viewer');
    const refused = await cli(['revoke', '--token', tok.id, '--reason', 'INC-33'], { KILLSWITCH_OPERATOR_KEY: viewer });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('403 FORBIDDEN');

    const before = counter.received;
    const noReason = await cli(['revoke', '--token', tok.id], { KILLSWITCH_URL: counter.url });
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain("required option '--reason <text>' not specified");
    for (const reason of ['   ', '\u200b']) {
      const blank = await cli(['revoke', '--token', tok.id, '--reason', reason], { KILLSWITCH_URL: counter.url });
      expect(blank.code).toBe(2);
      expect(blank.stderr).toContain('must contain at least one visible character');
    }
    const twice = await cli(['revoke', '--token', tok.id, '--token', tok.raw, '--reason', 'INC-33'], { KILLSWITCH_URL: counter.url });
    expect(twice.code).toBe(2);
    expect(twice.stderr).toContain("option '--token <id>' was given more than once");
    expect(twice.stderr + twice.stdout).not.toContain(tok.raw);
    expect(counter.received).toBe(before);
    // Still live.
    const s = (await gw.session(tok.raw)).session_id;
    expect(await decideStatus(tok.raw, s)).toBe(200);
  }, 120_000);
});

describe('killswitch resume', () => {
  it('resumes a halted session, then its halted token (by display prefix); calls are decided again', async () => {
    // A real halt: a write in a read-only session halts the session and (halt_token_on) its token.
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw, { read_only: true })).session_id;
    expect((await gw.decide(tok.raw, write(s))).decision).toBe('deny');
    expect((await gw.decide(tok.raw, read(s))).code).toBe('SESSION_HALTED');

    const session = await cli(['resume', '--session', s, '--reason', 'INC-34 write was expected']);
    expect(session.code, session.stderr).toBe(0);
    expect(session.stdout).toContain(`Session ${s} resumed, but its token is still halted (WRITE_IN_READ_SESSION)`);
    expect(session.stdout).toContain(`Session ${s} (token ${tok.id}, project alpha) resumed by operator:${opId} at `);
    expect(session.stdout).toContain('from WRITE_IN_READ_SESSION');
    // The session's state is still halted through its token: said on the same line, not left to read as a failed resume.
    expect(session.stdout).toMatch(/from WRITE_IN_READ_SESSION; state halted \(its token is halted\)\./);
    // Its calls are still refused: the next command is named.
    expect(session.stderr).toContain(`its token is still halted: its calls are refused until it is resumed too: killswitch resume --token ${tok.id} --reason "..."`);
    expect((await gw.decide(tok.raw, read(s))).code).toBe('SESSION_HALTED');

    const display = tok.raw.slice(0, 'mcp_rw_'.length + 4);
    const token = await cli(['resume', '--token', `${display}…`, '--reason', 'INC-34 write was expected', '--json']);
    expect(token.code, token.stderr).toBe(0);
    const answer = JSON.parse(token.stdout);
    expect(answer).toMatchObject({ token_id: tok.id, token_halt: { trigger: 'WRITE_IN_READ_SESSION' } });
    expect(answer.message).toContain('Token resumed (was halted by WRITE_IN_READ_SESSION)');
    expect((await gw.decide(tok.raw, read(s))).code).toBe('OK');

    // Audited as the operator whose key the CLI used.
    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT action FROM audit_events WHERE target = ANY($1) AND actor_id = $2 ORDER BY ts`, [[`session:${s}`, `agent_token:${tok.id}`], opId]);
    expect(rows.map((r) => r.action)).toEqual(['session.resumed', 'agent_token.resumed']);
  }, 120_000);

  it('resumes a halted token by its id, in human output', async () => {
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw, { read_only: true })).session_id;
    expect((await gw.decide(tok.raw, write(s))).decision).toBe('deny');

    const res = await cli(['resume', '--token', tok.id, '--reason', 'INC-35']);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain('Token resumed (was halted by WRITE_IN_READ_SESSION); 1 halted session(s) resumed.');
    expect(res.stdout).toContain(`Token ${tok.id}: 1 session(s) resumed: ${s}.`);
    expect(res.stdout).toContain(`Control plane: ${url} (KILLSWITCH_URL)`);
    expect((await gw.decide(tok.raw, read(s))).code).toBe('OK');

    // Not halted any more: the API's 409, exit 1 with its message.
    const again = await cli(['resume', '--token', tok.id, '--reason', 'INC-35']);
    expect(again.code, again.stderr).toBe(1);
    expect(again.stderr).toContain(`409 CONFLICT: Token ${tok.id} is not halted and has no halted sessions.`);
    const sessionAgain = await cli(['resume', '--session', s, '--reason', 'INC-35']);
    expect(sessionAgain.code, sessionAgain.stderr).toBe(1);
    expect(sessionAgain.stderr).toContain(`409 CONFLICT: Session ${s} is not halted`);
  }, 120_000);

  it('refusals: an unknown id is exit 1 with the API message; both or neither of --session/--token, no or a blank reason are exit 2 and send nothing', async () => {
    const unknownSession = await cli(['resume', '--session', '0190aaaa-0000-7000-8000-000000000000', '--reason', 'INC-36']);
    expect(unknownSession.code, unknownSession.stderr).toBe(1);
    expect(unknownSession.stderr).toMatch(/^killswitch: 404 NOT_FOUND: /);
    const unknownToken = await cli(['resume', '--token', '0190aaaa-0000-7000-8000-000000000000', '--reason', 'INC-36']);
    expect(unknownToken.code, unknownToken.stderr).toBe(1);
    expect(unknownToken.stderr).toMatch(/^killswitch: 404 NOT_FOUND: /);

    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw, { read_only: true })).session_id;
    expect((await gw.decide(tok.raw, write(s))).decision).toBe('deny');

    const before = counter.received;
    const on = { KILLSWITCH_URL: counter.url };
    const both = await cli(['resume', '--session', s, '--token', tok.id, '--reason', 'INC-36'], on);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('name exactly one to resume: --session <session id>');
    const neither = await cli(['resume', '--reason', 'INC-36'], on);
    expect(neither.code).toBe(2);
    expect(neither.stderr).toContain('name exactly one to resume');
    const noReason = await cli(['resume', '--session', s], on);
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain("required option '--reason <text>' not specified");
    const blank = await cli(['resume', '--token', tok.id, '--reason', ' '], on);
    expect(blank.code).toBe(2);
    expect(blank.stderr).toContain('must contain at least one visible character');
    const notUuid = await cli(['resume', '--session', 'sess-1', '--reason', 'INC-36'], on);
    expect(notUuid.code).toBe(2);
    expect(notUuid.stderr).toContain('--session sess-1 is not a session id (a UUID)');
    const raw = await cli(['resume', '--token', tok.raw, '--reason', 'INC-36'], on);
    expect(raw.code).toBe(2);
    expect(raw.stderr + raw.stdout).not.toContain(tok.raw);
    const twice = await cli(['resume', '--session', s, '--session', s, '--reason', 'INC-36'], on);
    expect(twice.code).toBe(2);
    expect(twice.stderr).toContain("option '--session <id>' was given more than once");
    expect(counter.received).toBe(before);
    // Something that is not the control plane at KILLSWITCH_URL: exit 1 saying so, never success.
    for (const args of [['resume', '--session', s, '--reason', 'INC-36'], ['resume', '--token', tok.id, '--reason', 'INC-36'], ['revoke', '--token', tok.id, '--reason', 'INC-36']]) {
      const other = await cli(args, on);
      expect(other.code, other.stderr).toBe(1);
      expect(other.stdout).toBe('');
      expect(other.stderr).toContain(`${counter.url} (KILLSWITCH_URL) answered HTTP 500, text/plain, which is not the control plane's API`);
    }
    // Still halted: nothing was resumed.
    expect((await gw.decide(tok.raw, read(s))).code).toBe('SESSION_HALTED');
  }, 120_000);
});
