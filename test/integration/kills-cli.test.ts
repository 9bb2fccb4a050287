import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliFailure, KILL_NOT_ENFORCED, killBody, killExitCode, parseDuration } from '../../src/cli/kill.js';
import { OperatorRequestError, operatorRequest } from '../../src/cli/operator-http.js';
import { killServiceFor } from '../../src/kills/plugin.js';
import { createRedis } from '../../src/redis/client.js';
import type { OperatorPrincipal } from '../../src/tokens/authenticator.js';
import { killswitch, listenUrl } from '../helpers/cli.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// `killswitch kill | kills | unkill` as an operator runs them: a child process talking HTTP to a
// listening control plane, with the operator key from the environment.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let url = '';
let operatorKey = '';

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  // buildApp returns before the first state-epoch reload is done; sessions answer 503 until it is.
  await app.ctx.sessions.ensureState();
  url = await listenUrl(app);
  gw = await new GatewayDriver(t, app).init();
  operatorKey = await t.operatorKey(app, 'operator');
});
afterAll(() => t.teardown());

const cli = (args: string[], env: Record<string, string> = {}) =>
  killswitch(args, { env: { KILLSWITCH_URL: url, KILLSWITCH_OPERATOR_KEY: operatorKey, LOG_LEVEL: 'warn', ...env } });

describe('killswitch kill / kills / unkill', () => {
  it('kills filesystem writes, lists the kill, lifts it; decisions follow', async () => {
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    const write = { server: 'filesystem', tool: 'write_file', arguments: { path: 'a.md', content: 'x' }, session_id: s };

    const killed = await cli(['kill', '--server', 'filesystem', '--capability', 'write', '--reason', 'INC-9 runaway writes', '--json']);
    expect(killed.code, killed.stderr).toBe(0);
    const created = JSON.parse(killed.stdout);
    expect(created.kill).toMatchObject({ target: 'capability', server: 'filesystem', capability: 'write', reason: 'INC-9 runaway writes', state: 'active' });
    expect((await gw.decide(tok.raw, write)).code).toBe('KILL_SWITCH');
    expect((await gw.decide(tok.raw, { ...write, tool: 'read_text_file', arguments: { path: 'a.md' } })).code).toBe('OK');

    const list = await cli(['kills']);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(created.kill.id);
    expect(list.stdout).toContain('write calls on server filesystem');
    expect(list.stdout).toContain('INC-9 runaway writes');

    const lifted = await cli(['unkill', created.kill.id, '--reason', 'INC-9 fixed']);
    expect(lifted.code, lifted.stderr).toBe(0);
    expect(lifted.stdout).toContain('Lifted: write calls on server filesystem are decided normally again on every replica.');
    expect((await gw.decide(tok.raw, write)).code).toBe('OK');
    expect((await cli(['kills'])).stdout).toContain('no kills in force');
    // Who lifted it is in the text too, as in --json's lifted_by.
    const op = await app.ctx.auth.authenticate(operatorKey);
    const all = (await cli(['kills', '--all'])).stdout.split('\n').find((l) => l.startsWith(created.kill.id));
    expect(all).toContain(`lifted by operator:${op.id} at `);
    expect(all).toContain('(INC-9 fixed)');

    // Audited as the operator whose key the CLI used.
    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT action FROM audit_events WHERE target = $1 AND actor_id = $2 ORDER BY ts`, [`kill:${created.kill.id}`, op.id]);
    expect(rows.map((r) => r.action)).toEqual(['kill.created', 'kill.lifted']);
  }, 120_000);

  it('human output, expiry, and the errors an operator sees', async () => {
    const out = await cli(['kill', '--everything', '--reason', 'drill', '--expires-in', '10m']);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain('Killed every MCP call on every replica');
    // It names the control plane that took the kill (a shell with another KILLSWITCH_URL kills elsewhere).
    expect(out.stdout).toContain(`Control plane: ${url} (KILLSWITCH_URL)`);
    expect(out.stdout).toMatch(/until \d{4}-/);
    const id = /killswitch unkill (\S+)/.exec(out.stdout)?.[1];
    expect(id).toBeTruthy();
    expect((await app.inject({ method: 'DELETE', url: `/v1/kills/${id}`, headers: bearer(operatorKey), payload: { reason: 'drill over' } })).statusCode).toBe(200);

    const noKey = await cli(['kills'], { KILLSWITCH_OPERATOR_KEY: '' });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain('KILLSWITCH_OPERATOR_KEY');
    // The line break a secret file or a Kubernetes secret ends with is dropped (it failed as "cannot reach the
    // control plane: Invalid character in header content"); a value that cannot be a key is exit 2, unprinted.
    for (const end of ['\n', '\r\n', ' ']) expect((await cli(['kills'], { KILLSWITCH_OPERATOR_KEY: `${operatorKey}${end}` })).code).toBe(0);
    for (const [value, message] of [
      [`Bearer ${operatorKey}`, 'KILLSWITCH_OPERATOR_KEY starts with "Bearer ": set it to the key alone'],
      [`${operatorKey.slice(0, 10)}\n${operatorKey.slice(10)}`, 'KILLSWITCH_OPERATOR_KEY holds a space, line break, control or non-ASCII character inside it'],
    ] as const) {
      const bad = await cli(['kills'], { KILLSWITCH_OPERATOR_KEY: value });
      expect(bad.code, bad.stderr).toBe(2);
      expect(bad.stderr).toContain(message);
      expect(bad.stderr).not.toContain(operatorKey.slice(10));
    }
    const viewer = await t.operatorKey(app, 'viewer');
    const refused = await cli(['kill', '--server', 'filesystem', '--reason', 'x'], { KILLSWITCH_OPERATOR_KEY: viewer });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('403 FORBIDDEN');
    // What to do, not only what the API said: another key, not another URL.
    expect(refused.stderr).toContain('KILLSWITCH_OPERATOR_KEY is a live key of that installation, but its role or projects do not allow this');
    const typo = await cli(['kill', '--server', 'filesytem', '--reason', 'x']);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toContain('not a server of the policy');
    const twoTargets = await cli(['kill', '--server', 'filesystem', '--token', 'x', '--reason', 'x']);
    expect(twoTargets.code).toBe(2);
    const down = await cli(['kills'], { KILLSWITCH_URL: 'http://127.0.0.1:9' });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('cannot reach the control plane at http://127.0.0.1:9 (KILLSWITCH_URL)');
    // Down, or the wrong address: what to check (the socket error alone did not say).
    expect(down.stderr).toContain('Nothing accepts connections at 127.0.0.1:9: check that the control plane runs there (`curl http://127.0.0.1:9/healthz` answers 200) and that KILLSWITCH_URL is its address');
    const unresolvable = await cli(['kills'], { KILLSWITCH_URL: 'http://no-such-host.invalid:8080' });
    expect(unresolvable.code).toBe(1);
    expect(unresolvable.stderr).toContain('The host name no-such-host.invalid does not resolve');
    // A password in the URL is refused before any request, and never printed.
    const withPassword = await cli(['kills'], { KILLSWITCH_URL: 'http://ops:p4ssw0rd@127.0.0.1:9' });
    expect(withPassword.code).toBe(2);
    expect(withPassword.stderr).toContain('KILLSWITCH_URL holds a user name or password (http://***@127.0.0.1:9)');
    expect(withPassword.stderr + withPassword.stdout).not.toContain('p4ssw0rd');
    expect((await cli(['unkill', '0190aaaa-0000-7000-8000-000000000000'])).code).not.toBe(0); // --reason is required
    // A malformed kill id is a usage error (exit 2) before any request, as the kill options are (it was a 400, exit 1).
    const badId = await cli(['unkill', 'nope', '--reason', 'x']);
    expect(badId.code).toBe(2);
    expect(badId.stderr).toContain('expected a kill id (a UUID, as `killswitch kills` lists it)');
    // A key the control plane does not know: the answer says which control plane refused which setting.
    const unknownKey = await cli(['kills'], { KILLSWITCH_OPERATOR_KEY: 'ksop_unknownunknownunknownunknown1234' });
    expect(unknownKey.code).toBe(1);
    expect(unknownKey.stderr).toContain(`401 UNAUTHENTICATED`);
    expect(unknownKey.stderr).toContain(`The control plane at ${url} (KILLSWITCH_URL) refused KILLSWITCH_OPERATOR_KEY`);
  }, 180_000); // each CLI run starts a Node process that loads the TypeScript sources

  it('exits 3, saying the kill is not enforced yet, when the control plane answers enforced: false', async () => {
    // The control plane as it is when its Redis write fails: the same installation through a Redis that does not answer.
    const deadRedis = createRedis('redis://127.0.0.1:1', app.ctx.redis.prefix, 100);
    const real = app.ctx.kills;
    app.ctx.kills = killServiceFor(app.ctx, deadRedis);
    const ids: string[] = [];
    try {
      const human = await cli(['kill', '--token', (await gw.token('rw')).id, '--reason', 'INC-5 while Redis was away']);
      expect(human.code, human.stderr).toBe(3);
      expect(KILL_NOT_ENFORCED).toBe(3);
      expect(human.stdout).toContain('Redis did not take it');
      expect(human.stderr).toContain('recorded but NOT ENFORCED YET (exit 3)');
      ids.push(/killswitch unkill (\S+)/.exec(human.stdout)?.[1] ?? '');

      const json = await cli(['kill', '--token', (await gw.token('rw')).id, '--reason', 'INC-5 again', '--json']);
      expect(json.code).toBe(3);
      const answer = JSON.parse(json.stdout);
      expect(answer.enforced).toBe(false);
      ids.push(answer.kill.id);
    } finally {
      app.ctx.kills = real;
      await deadRedis.close();
      for (const id of ids) if (id) await app.inject({ method: 'DELETE', url: `/v1/kills/${id}`, headers: bearer(operatorKey), payload: { reason: 'test over' } });
    }
    // An enforced kill still exits 0 (the first tests run the CLI end to end); a malformed answer is not taken for enforced.
    expect(killExitCode({ enforced: true })).toBe(0);
    expect(killExitCode({})).toBe(3);
  }, 120_000);

  it('--token takes a display prefix (looked up among live tokens), never the raw token; --session a UUID', async () => {
    const count = async () => (await app.inject({ method: 'GET', url: '/v1/kills?state=all&limit=500', headers: bearer(operatorKey) })).json().kills.length;
    const before = await count();
    const tok = await gw.token('rw');
    const display = tok.raw.slice(0, 'mcp_rw_'.length + 4);

    // The raw token is a secret: refused before any request, and not printed.
    const raw = await cli(['kill', '--token', tok.raw, '--reason', 'INC-11']);
    expect(raw.code, raw.stderr).toBe(2);
    expect(raw.stderr).toContain('not the token itself');
    expect(raw.stderr + raw.stdout).not.toContain(tok.raw);
    expect(await count()).toBe(before);

    // A revoked token's display prefix matches no live token: exit 1 naming the prefix and where ids are.
    const old = await gw.token('rw');
    const oldDisplay = old.raw.slice(0, 'mcp_rw_'.length + 4);
    expect((await app.inject({ method: 'POST', url: `/v1/keys/${old.id}/revoke`, headers: bearer(operatorKey), payload: { reason: 'test' } })).statusCode).toBe(200);
    const none = await cli(['kill', '--token', `${oldDisplay}…`, '--reason', 'INC-11']);
    expect(none.code, none.stderr).toBe(1);
    expect(none.stderr).toContain(`display prefix ${oldDisplay}…`);
    expect(none.stderr).toContain("copy the token's id from the admin UI's Tokens page or from `GET /v1/keys`");

    const session = await cli(['kill', '--session', 'sess-1', '--reason', 'INC-11']);
    expect(session.code).toBe(2);
    expect(session.stderr).toContain("is not a session id (a UUID): the admin UI's Sessions page shows the ids");
    expect(await count()).toBe(before);

    // The display prefix as the Tokens page shows it, ellipsis included: the one live token it names is killed.
    const killed = await cli(['kill', '--token', `${display}…`, '--reason', 'INC-11', '--json']);
    expect(killed.code, killed.stderr).toBe(0);
    const created = JSON.parse(killed.stdout);
    expect(created.kill).toMatchObject({ target: 'token', token_id: tok.id });
    expect((await app.inject({ method: 'DELETE', url: `/v1/kills/${created.kill.id}`, headers: bearer(operatorKey), payload: { reason: 'test over' } })).statusCode).toBe(200);
  }, 120_000);

  it('builds the API body from the options', () => {
    expect(killBody({ server: 'filesystem', reason: 'r' })).toEqual({ target: 'server', server: 'filesystem', reason: 'r' });
    expect(killBody({ capability: 'delete', reason: 'r' })).toEqual({ target: 'capability', capability: 'delete', reason: 'r' });
    expect(killBody({ session: 'abc', reason: 'r', expiresIn: 60 })).toEqual({ target: 'session', session_id: 'abc', reason: 'r', expires_in: 60 });
    expect(() => killBody({ reason: 'r' })).toThrow(CliFailure);
    expect(() => killBody({ everything: true, role: 'x', reason: 'r' })).toThrow(CliFailure);
    expect(parseDuration('90s')).toBe(90);
    expect(parseDuration('2h')).toBe(7200);
    expect(parseDuration('1d')).toBe(86_400);
    expect(() => parseDuration('soon')).toThrow();
  });

  it('a bad option value is a usage error (exit 2) and sends nothing: an unknown environment, a duration without a unit', async () => {
    const before = (await app.inject({ method: 'GET', url: '/v1/kills?state=all&limit=500', headers: bearer(operatorKey) })).json().kills.length;

    const env = await cli(['kill', '--environment', 'prod', '--reason', 'INC-10']);
    expect(env.code, env.stderr).toBe(2);
    expect(env.stderr).toContain("option '--environment <env>' argument 'prod' is invalid");
    expect(env.stderr).toContain('development, staging, production');
    expect(env.stderr).not.toContain('INVALID_REQUEST'); // refused before any request

    const cap = await cli(['kill', '--capability', 'execute', '--reason', 'INC-10']);
    expect(cap.code).toBe(2);
    expect(cap.stderr).toContain('read, write, delete');

    // `30` meant 30 seconds; the help's examples (30m, 2h) have a unit, so a bare number is refused.
    const bare = await cli(['kill', '--server', 'memory', '--reason', 'INC-10', '--expires-in', '30']);
    expect(bare.code, bare.stdout).toBe(2);
    expect(bare.stderr).toContain('30 has no unit: write 30s, 30m, 30h or 30d');
    expect(() => parseDuration('90')).toThrow(/has no unit/);

    expect((await app.inject({ method: 'GET', url: '/v1/kills?state=all&limit=500', headers: bearer(operatorKey) })).json().kills).toHaveLength(before);
  }, 120_000);

  it('an option given twice is a usage error (exit 2) naming the option, and sends nothing', async () => {
    const count = async () => (await app.inject({ method: 'GET', url: '/v1/kills?state=all&limit=500', headers: bearer(operatorKey) })).json().kills.length;
    const before = await count();
    // Commander kept the last value silently: this killed memory only, and the operator believed both killed.
    const twice = await cli(['kill', '--server', 'filesystem', '--server', 'memory', '--reason', 'INC-12']);
    expect(twice.code, twice.stdout).toBe(2);
    expect(twice.stderr).toContain("option '--server <name>' was given more than once");
    const reasons = await cli(['kill', '--server', 'memory', '--reason', 'INC-12', '--reason', 'INC-13']);
    expect(reasons.code, reasons.stdout).toBe(2);
    expect(reasons.stderr).toContain("option '--reason <text>' was given more than once");
    // The values are not echoed: one may be a raw token pasted by mistake.
    const tok = await gw.token('rw');
    const tokens = await cli(['kill', '--token', tok.id, '--token', tok.raw, '--reason', 'INC-12']);
    expect(tokens.code).toBe(2);
    expect(tokens.stderr).toContain("option '--token <id>' was given more than once");
    expect(tokens.stderr + tokens.stdout).not.toContain(tok.raw);
    expect(await count()).toBe(before);
  }, 120_000);

  it('a blank reason is a usage error (exit 2), for kill and unkill, and sends nothing', async () => {
    const count = async () => (await app.inject({ method: 'GET', url: '/v1/kills?state=all&limit=500', headers: bearer(operatorKey) })).json().kills.length;
    const before = await count();
    // A reason of spaces (or zero-width characters) reads as no reason in every denial, alert and audit row.
    for (const reason of ['   ', '\u200b']) {
      const blank = await cli(['kill', '--server', 'memory', '--reason', reason]);
      expect(blank.code, blank.stdout).toBe(2);
      expect(blank.stderr).toContain("option '--reason <text>' argument");
      expect(blank.stderr).toContain('must contain at least one visible character');
    }
    const blankLift = await cli(['unkill', '0190aaaa-0000-7000-8000-000000000000', '--reason', ' ']);
    expect(blankLift.code).toBe(2);
    expect(blankLift.stderr).toContain('must contain at least one visible character');
    expect(await count()).toBe(before);
  }, 120_000);

  it('a KILLSWITCH_URL that answers something other than the control plane\'s API: exit 1 saying so, not a JavaScript error or a page of HTML', async () => {
    // What the embedded Unleash's port, a gateway or a proxy's error page answer.
    const answers: Record<string, [number, string, string]> = {
      '/html200': [200, 'text/html; charset=utf-8', '<!DOCTYPE html><html><body>Unleash</body></html>'],
      '/html404': [404, 'text/html', '<!DOCTYPE html>\n<html>\n<pre>Cannot POST /v1/kills</pre>\n</html>'],
      '/json200': [200, 'application/json', '{"ok":true}'],
      '/empty502': [502, 'text/plain', ''],
    };
    const other: Server = createServer((req, res) => {
      const [status, type, body] = answers[`/${req.url!.split('/')[1]}`] ?? [500, 'text/plain', 'no'];
      res.writeHead(status, { 'content-type': type }).end(body);
    });
    await new Promise<void>((done) => other.listen(0, '127.0.0.1', done));
    const origin = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
    try {
      for (const path of Object.keys(answers)) {
        for (const args of [['kills'], ['kill', '--server', 'memory', '--reason', 'INC-14'], ['kill', '--token', 'mcp_rw_abcd', '--reason', 'INC-14'], ['unkill', '0190aaaa-0000-7000-8000-000000000000', '--reason', 'x']]) {
          const res = await cli(args, { KILLSWITCH_URL: `${origin}${path}` });
          expect(res.code, `${path} ${args.join(' ')}: ${res.stderr}`).toBe(1);
          expect(res.stderr).toContain(`killswitch: ${origin} (KILLSWITCH_URL) answered HTTP ${answers[path]![0]}, ${answers[path]![1].split(';')[0]}, which is not the control plane's API`);
          expect(res.stderr).not.toContain('Cannot read properties');
          expect(res.stderr).not.toContain('<html');
        }
      }
    } finally {
      await new Promise((done) => other.close(done));
    }
  }, 180_000);

  it('a request to the control plane ends within its timeout even when the answer trickles in (the timeout was per silence)', async () => {
    // Headers at once, then a byte of body every 20 ms for ever: never silent for the timeout.
    const trickle: Server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const timer = setInterval(() => res.write(' '), 20);
      res.on('close', () => clearInterval(timer));
    });
    await new Promise<void>((done) => trickle.listen(0, '127.0.0.1', done));
    try {
      const url = new URL(`http://127.0.0.1:${(trickle.address() as AddressInfo).port}/v1/kills`);
      const err = await operatorRequest({ url, method: 'GET', headers: {}, timeoutMs: 500 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OperatorRequestError);
      expect((err as OperatorRequestError).code).toBe('ETIMEDOUT');
      expect((err as OperatorRequestError).message).toContain('no complete answer within 0.5 s');
    } finally {
      trickle.closeAllConnections();
      await new Promise((done) => trickle.close(done));
    }
  }, 60_000);

  // Last: it leaves more kills than one page of GET /v1/kills, which the counts above read.
  it('kills lists every kill, not the first page of 500: --json keeps the oldest too', async () => {
    const op = (await app.ctx.auth.authenticate(operatorKey)) as OperatorPrincipal;
    const tok = await gw.token('rw');
    const ids: string[] = [];
    // One more than the API's largest page (limit=500).
    for (let i = 0; i <= 500; i++) ids.push((await app.ctx.kills.create(op, { target: 'token', token_id: tok.id, reason: `INC-15 kill ${i}` })).kill.id);
    const all = await cli(['kills', '--all', '--json']);
    expect(all.code, all.stderr).toBe(0);
    const listed = new Set((JSON.parse(all.stdout) as Array<{ id: string }>).map((k) => k.id));
    expect(listed.size).toBe(JSON.parse(all.stdout).length); // no kill twice across pages
    expect(ids.filter((id) => !listed.has(id))).toEqual([]);
    const active = await cli(['kills']);
    expect(active.code, active.stderr).toBe(0);
    expect(active.stdout).toContain(`${ids[0]}  active`);
  }, 180_000);
});
