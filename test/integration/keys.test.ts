import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis } from '../../src/redis/client.js';
import { WRITE_RISK_WARNING } from '../../src/tokens/scopes.js';
import { bearer, TestContext } from '../helpers/context.js';

const t = new TestContext();
let app: FastifyInstance;
let owner: string;

beforeAll(async () => {
  await t.setup();
  app = await t.app();
  owner = await t.operatorKey(app, 'owner');
});
afterAll(() => t.teardown());

const roBody = { type: 'ro', role: 'code_agent', project_id: 'alpha', environment: 'development', description: 'docs bot' };

async function countTokens(): Promise<number> {
  const { rows } = await t.pool().query('SELECT count(*)::int AS n FROM agent_tokens');
  return rows[0].n;
}

describe('POST /v1/keys', () => {
  it('creates an ro token with seed 000 default scopes and returns the raw token once', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: roBody });
    expect(res.statusCode).toBe(201);
    const body = res.json();
    expect(body.token).toMatch(/^mcp_ro_[0-9A-Za-z]{28}$/);
    expect(body.key.scopes).toEqual(['db:select', 'storage:read', 'realtime:subscribe']);
    expect(body.key.key_prefix).toBe('mcp_ro_');
    expect(body.key.display_prefix).toBe(body.token.slice(0, 11));
    const got = await app.inject({ method: 'GET', url: `/v1/keys/${body.key.id}`, headers: bearer(owner) });
    expect(got.statusCode).toBe(200);
    expect(JSON.stringify(got.json())).not.toContain(body.token);
    const { rows } = await t.pool().query('SELECT key_hash FROM agent_tokens WHERE id = $1', [body.key.id]);
    expect(rows[0].key_hash.toString('utf8')).not.toContain(body.token);
  });

  it('refuses an rw token without acknowledge_write_risk, with the seed warning', async () => {
    const before = await countTokens();
    const res = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, type: 'rw' } });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('INVALID_REQUEST');
    expect(res.json().error.message).toBe(WRITE_RISK_WARNING);
    expect(res.json().error.details[0].field).toBe('acknowledge_write_risk');
    expect(await countTokens()).toBe(before);
    const ok = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, type: 'rw', acknowledge_write_risk: true } });
    expect(ok.statusCode).toBe(201);
    expect(ok.json().key.scopes).toContain('storage:write');
    expect(ok.json().warning).toBe(WRITE_RISK_WARNING);
  });

  it('refuses an admin token without the write-risk acknowledgement (as rw), with the seed warning, even when the admin confirmation is given', async () => {
    const before = await countTokens();
    const confirmed = { ...roBody, type: 'admin', confirm_admin: true, confirm_project_id: 'alpha' };
    for (const payload of [confirmed, { ...confirmed, acknowledge_write_risk: false }]) {
      const res = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload });
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().error.code).toBe('INVALID_REQUEST');
      expect(res.json().error.message).toBe(WRITE_RISK_WARNING);
      expect(res.json().error.details[0].field).toBe('acknowledge_write_risk');
    }
    expect(await countTokens()).toBe(before);
  });

  it('refuses an admin token without the second confirmation (on top of the acknowledgement)', async () => {
    const acknowledged = { ...roBody, type: 'admin', acknowledge_write_risk: true };
    const noConfirm = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: acknowledged });
    expect(noConfirm.statusCode).toBe(400);
    expect(noConfirm.json().error.details[0].field).toBe('confirm_admin');
    const wrongProject = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...acknowledged, confirm_admin: true, confirm_project_id: 'beta' } });
    expect(wrongProject.statusCode).toBe(400);
    expect(wrongProject.json().error.details[0].field).toBe('confirm_project_id');
    const ok = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...acknowledged, confirm_admin: true, confirm_project_id: 'alpha' } });
    expect(ok.statusCode).toBe(201);
    expect(ok.json().key.scopes).toContain('auth:*');
    expect(ok.json().warning).toBe(WRITE_RISK_WARNING);
    // Rotating keeps the settings the operator confirmed at creation: no new confirmation, the warning again (as for rw).
    const rotated = await app.inject({ method: 'POST', url: `/v1/keys/${ok.json().key.id}/rotate`, headers: bearer(owner), payload: { grace_seconds: 0 } });
    expect(rotated.statusCode, rotated.body).toBe(201);
    expect(rotated.json().key.type).toBe('admin');
    expect(rotated.json().warning).toBe(WRITE_RISK_WARNING);
  });

  it('a role the policy does not define: issued with a warning naming the roles it does define (after the write warning for rw)', async () => {
    const ro = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, role: 'no_such_role' } });
    expect(ro.statusCode, ro.body).toBe(201);
    expect(ro.json().warning).toContain('Role no_such_role is not defined by the policy in force');
    expect(ro.json().warning).toContain('code_agent, database_agent, documentation_agent');
    const rw = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, role: 'no_such_role', type: 'rw', acknowledge_write_risk: true } });
    expect(rw.statusCode).toBe(201);
    expect(rw.json().warning.startsWith(WRITE_RISK_WARNING)).toBe(true);
    expect(rw.json().warning).toContain('Role no_such_role is not defined');
    // A role of the policy: no warning for ro, only the write warning for rw.
    expect((await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: roBody })).json().warning).toBeUndefined();
  });

  it('never lets ro or rw tokens hold auth:* or delete scopes', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, type: 'rw', acknowledge_write_risk: true, scopes: ['storage:read', 'auth:*'] } });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details[0].field).toBe('scopes');
    expect(res.json().error.message).toContain('auth:*');
  });
});

describe('key names (echoed in alerts and audit rows)', () => {
  const spoofing: Array<[string, string]> = [
    ['right-to-left override', 'ana\u202Etxt.exe'],
    ['left-to-right isolate', 'ana\u2066x'],
    ['left-to-right mark', 'ana\u200E'],
    ['Arabic letter mark', 'ana\u061Cx'],
    ['newline', 'ana\nOperator root revoked every token'],
    ['NUL', 'ana\u0000'],
    ['C1 control', 'ana\u0085'],
  ];
  for (const [what, name] of spoofing) {
    it(`${what}: operator and gateway keys are refused with 400 naming name, nothing written`, async () => {
      const count = async () => (await t.pool().query('SELECT (SELECT count(*) FROM operator_keys) + (SELECT count(*) FROM gateway_keys) AS n')).rows[0].n;
      const before = await count();
      for (const url of ['/v1/operator-keys', '/v1/gateway-keys']) {
        const res = await app.inject({ method: 'POST', url, headers: bearer(owner), payload: url === '/v1/operator-keys' ? { name, role: 'viewer' } : { name } });
        expect(res.statusCode, `${url} ${res.body}`).toBe(400);
        expect(res.json().error.details[0].field).toBe('name');
        // Said in words (the field's description), not as the pattern.
        expect(res.json().error.message).toContain('name: is not accepted: Not blank; no control characters');
      }
      expect(await count()).toBe(before);
    });
  }

  // Shown as an empty name in alerts, audit rows and the UI: "who did this" would read as nobody.
  const invisible: Array<[string, string]> = [
    ['blank', '   '],
    ['zero-width space', '\u200B'],
    ['zero-width joiners', '\u200C\u200D'],
    ['word joiner and byte order mark', '\u2060\uFEFF'],
    ['combining marks alone', '\u0301\u0308'],
    ['no-break and ideographic spaces', '\u00A0\u3000'],
    ['Hangul filler', '\u3164'],
    ['blank Braille pattern', '\u2800'],
    ['spaces and zero-width characters mixed', ' \u200B \uFEFF '],
  ];
  for (const [what, name] of invisible) {
    it(`${what}: operator and gateway keys are refused with 400 naming name (no visible character), nothing written`, async () => {
      const count = async () => (await t.pool().query('SELECT (SELECT count(*) FROM operator_keys) + (SELECT count(*) FROM gateway_keys) AS n')).rows[0].n;
      const before = await count();
      for (const url of ['/v1/operator-keys', '/v1/gateway-keys']) {
        const res = await app.inject({ method: 'POST', url, headers: bearer(owner), payload: url === '/v1/operator-keys' ? { name, role: 'viewer' } : { name } });
        expect(res.statusCode, `${url} ${res.body}`).toBe(400);
        expect(res.json().error.code).toBe('INVALID_REQUEST');
        expect(res.json().error.details).toEqual([{ field: 'name', problem: 'must contain at least one visible character' }]);
      }
      expect(await count()).toBe(before);
    });
  }

  it('ordinary names, accents and inner spaces included, are accepted', async () => {
    const op = await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(owner), payload: { name: 'Zoë Ünal (on-call)', role: 'viewer' } });
    expect(op.statusCode, op.body).toBe(201);
    const gw = await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(owner), payload: { name: 'gateway eu-1' } });
    expect(gw.statusCode, gw.body).toBe(201);
    // A visible character with invisible ones around it, a combining accent on its base, an emoji with its joiners.
    for (const name of ['\u200Bana', 'Jose\u0301', '\u{1F469}\u200D\u{1F4BB} ops', '日本']) {
      const res = await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(owner), payload: { name, role: 'viewer' } });
      expect(res.statusCode, `${JSON.stringify(name)} ${res.body}`).toBe(201);
      expect(res.json().operator_key.name).toBe(name);
    }
  });
});

describe('bad input', () => {
  const cases: Array<[string, unknown, string]> = [
    ['missing field', { type: 'ro', role: 'r', environment: 'development' }, 'project_id'],
    ['extra field', { ...roBody, admin: true }, 'admin'],
    ['wrong type', { ...roBody, type: 5 }, 'type'],
    ['bad enum', { ...roBody, environment: 'prod' }, 'environment'],
    ['string for boolean', { ...roBody, type: 'rw', acknowledge_write_risk: 'true' }, 'acknowledge_write_risk'],
    ['bad pattern', { ...roBody, project_id: 'a b' }, 'project_id'],
  ];
  for (const [name, payload, field] of cases) {
    it(`${name} → 400 naming ${field}, nothing written`, async () => {
      const before = await countTokens();
      const res = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: payload as object });
      expect(res.statusCode).toBe(400);
      expect(res.json().error.code).toBe('INVALID_REQUEST');
      expect(res.json().error.details.map((d: { field: string }) => d.field)).toContain(field);
      expect(await countTokens()).toBe(before);
    });
  }

  it('non-JSON → 400 or 415 naming the body', async () => {
    const garbled = await app.inject({ method: 'POST', url: '/v1/keys', headers: { ...bearer(owner), 'content-type': 'application/json' }, payload: '{"type": ' });
    expect(garbled.statusCode).toBe(400);
    expect(garbled.json().error.details[0].field).toBe('body');
    const text = await app.inject({ method: 'POST', url: '/v1/keys', headers: { ...bearer(owner), 'content-type': 'text/plain' }, payload: 'hello' });
    expect(text.statusCode).toBe(415);
    expect(text.json().error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
  });

  it('oversized body → 413', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, description: 'x'.repeat(300_000) } });
    expect(res.statusCode).toBe(413);
    expect(res.json().error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('bad path parameter → 400 naming it', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/keys/not-a-uuid', headers: bearer(owner) });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details[0].field).toBe('id');
  });

  it('unknown route → 404 NOT_FOUND', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/nope', headers: bearer(owner) });
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('NOT_FOUND');
  });
});

describe('who may use the admin API', () => {
  it('401 with one body for missing, malformed, unknown, revoked and expired keys', async () => {
    const unknownButValid = (await import('../../src/tokens/format.js')).generateCredential('ksop_');
    const revoked = await t.operatorKey(app, 'owner');
    const list = await app.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(owner) });
    const revokedId = list.json().keys.find((k: { display_prefix: string }) => revoked.startsWith(k.display_prefix)).id;
    expect((await app.inject({ method: 'POST', url: `/v1/operator-keys/${revokedId}/revoke`, headers: bearer(owner) })).statusCode).toBe(204);
    const expired = await app.ctx.credentials.createOperatorKey('test', { name: 'expired', role: 'owner' });
    await t.pool().query(`UPDATE operator_keys SET expires_at = now() - interval '1 second' WHERE id = $1`, [expired.operator_key.id]);
    const bodies = new Set<string>();
    for (const headers of [{}, bearer('ksop_garbage'), bearer(unknownButValid), bearer(revoked), bearer(expired.key), { authorization: 'Basic abc' }]) {
      const res = await app.inject({ method: 'GET', url: '/v1/keys', headers });
      expect(res.statusCode).toBe(401);
      bodies.add(res.body);
    }
    expect(bodies.size).toBe(1);
  });

  it('the credential is checked before the request is validated: without a key a bad body or id is 401, never a 400 that describes the schema', async () => {
    const badBody = await app.inject({ method: 'POST', url: '/v1/keys', payload: { type: 'nope', project_id: 42 } });
    expect(badBody.statusCode).toBe(401);
    expect(badBody.json().error.code).toBe('UNAUTHENTICATED');
    expect((await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer('ksop_garbage'), payload: { target: 1 } })).statusCode).toBe(401);
    expect((await app.inject({ method: 'POST', url: '/v1/sessions/not-a-uuid/resume', payload: {} })).statusCode).toBe(401);
    expect((await app.inject({ method: 'GET', url: '/v1/policy/replicas?bogus=1' })).statusCode).toBe(401);
    // The gateway routes too: no gateway key, a body that is not a decision request.
    const decision = await app.inject({ method: 'POST', url: '/v1/decisions', payload: { server: 7 } });
    expect(decision.statusCode).toBe(401);
    // With a key, the same requests are validated as before.
    const validated = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { type: 'nope', project_id: 42 } });
    expect(validated.statusCode).toBe(400);
  });

  it('agent tokens and gateway keys get 403 MCP_TOKEN_FORBIDDEN', async () => {
    const created = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, type: 'admin', acknowledge_write_risk: true, confirm_admin: true, confirm_project_id: 'alpha' } });
    const agent = created.json().token;
    const gw = await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(owner), payload: { name: 'gw-1' } });
    expect(gw.statusCode).toBe(201);
    for (const key of [agent, gw.json().key]) {
      const res = await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(key) });
      expect(res.statusCode).toBe(403);
      expect(res.json().error.code).toBe('MCP_TOKEN_FORBIDDEN');
    }
    const viaHeader = await app.inject({ method: 'GET', url: '/v1/keys', headers: { ...bearer(owner), 'x-agent-token': agent } });
    expect(viaHeader.statusCode).toBe(403);
  });

  it('a viewer can list but cannot create keys (403 FORBIDDEN)', async () => {
    const viewer = await t.operatorKey(app, 'viewer');
    expect((await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(viewer) })).statusCode).toBe(200);
    const res = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(viewer), payload: roBody });
    expect(res.statusCode).toBe(403);
    expect(res.json().error.code).toBe('FORBIDDEN');
    expect((await app.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(viewer) })).statusCode).toBe(403);
  });

  it('routes that act on every project refuse keys limited to projects (403 FORBIDDEN): gateway keys, tool definitions, the log level, audit verify', async () => {
    const limitedOwner = await t.operatorKey(app, 'owner', ['alpha']);
    const gwKey = await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(owner), payload: { name: 'shared gateway' } });
    expect(gwKey.statusCode).toBe(201);
    const attempts = [
      { method: 'POST', url: '/v1/gateway-keys', payload: { name: 'mine' } },
      { method: 'POST', url: `/v1/gateway-keys/${gwKey.json().gateway_key.id}/revoke` },
      { method: 'GET', url: '/v1/tools' },
      { method: 'POST', url: '/v1/tools/0192f0c1-0000-7000-8000-000000000003/approve', payload: { reason: 'looks fine' } },
      { method: 'PUT', url: '/v1/admin/log-level', payload: { level: 'silent' } },
      { method: 'GET', url: '/v1/audit/verify' },
    ] as const;
    for (const a of attempts) {
      const res = await app.inject({ method: a.method, url: a.url, headers: bearer(limitedOwner), ...('payload' in a ? { payload: a.payload } : {}) });
      expect(res.statusCode, `${a.method} ${a.url}`).toBe(403);
      expect(res.json().error.code).toBe('FORBIDDEN');
      expect(res.json().error.message).toContain('limited to projects alpha');
    }
    // The same key still reads what it may.
    expect((await app.inject({ method: 'GET', url: '/v1/gateway-keys', headers: bearer(limitedOwner) })).statusCode).toBe(200);
    // An unlimited key may do all of it.
    expect((await app.inject({ method: 'GET', url: '/v1/tools', headers: bearer(owner) })).statusCode).toBe(200);
    expect((await app.inject({ method: 'POST', url: `/v1/gateway-keys/${gwKey.json().gateway_key.id}/revoke`, headers: bearer(owner) })).statusCode).toBe(204);
  });

  it('an owner limited to projects mints, sees and revokes only operator keys inside its projects', async () => {
    const limited = await t.operatorKey(app, 'owner', ['alpha', 'gamma']);
    const other = await app.ctx.credentials.createOperatorKey('test', { name: 'beta-owner', role: 'owner', projects: ['beta'] });
    const everywhere = await app.ctx.credentials.createOperatorKey('test', { name: 'global-owner', role: 'owner' });
    for (const payload of [{ name: 'x', role: 'owner' }, { name: 'x', role: 'viewer', projects: ['alpha', 'beta'] }]) {
      const res = await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(limited), payload });
      expect(res.statusCode, JSON.stringify(payload)).toBe(403);
      expect(res.json().error).toMatchObject({ code: 'FORBIDDEN', details: [{ field: 'projects' }] });
    }
    const ok = await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(limited), payload: { name: 'alpha-viewer', role: 'viewer', projects: ['alpha'] } });
    expect(ok.statusCode).toBe(201);
    const ids = (await app.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(limited) })).json().keys.map((k: { id: string }) => k.id);
    expect(ids).toContain(ok.json().operator_key.id);
    expect(ids).not.toContain(other.operator_key.id);
    expect(ids).not.toContain(everywhere.operator_key.id);
    for (const id of [other.operator_key.id, everywhere.operator_key.id]) {
      expect((await app.inject({ method: 'POST', url: `/v1/operator-keys/${id}/revoke`, headers: bearer(limited) })).statusCode).toBe(404);
    }
    expect((await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(everywhere.key) })).statusCode).toBe(200);
    expect((await app.inject({ method: 'POST', url: `/v1/operator-keys/${ok.json().operator_key.id}/revoke`, headers: bearer(limited) })).statusCode).toBe(204);
    // An owner without a project limit still sees every key.
    const all = (await app.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(owner) })).json().keys.map((k: { id: string }) => k.id);
    expect(all).toEqual(expect.arrayContaining([other.operator_key.id, everywhere.operator_key.id]));
  });

  it('an operator limited to project A gets 404 for project B and never sees it in lists', async () => {
    const b = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, project_id: 'beta' } });
    const limited = await t.operatorKey(app, 'operator', ['alpha']);
    const res = await app.inject({ method: 'GET', url: `/v1/keys/${b.json().key.id}`, headers: bearer(limited) });
    expect(res.statusCode).toBe(404);
    const revoke = await app.inject({ method: 'POST', url: `/v1/keys/${b.json().key.id}/revoke`, headers: bearer(limited), payload: { reason: 'x' } });
    expect(revoke.statusCode).toBe(404);
    const list = await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(limited) });
    expect(list.json().keys.every((k: { project_id: string }) => k.project_id === 'alpha')).toBe(true);
    expect(list.json().keys.length).toBeGreaterThan(0);
    const create = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(limited), payload: { ...roBody, project_id: 'beta' } });
    expect(create.statusCode).toBe(403);
  });

  it('GET /v1/keys filters by type, project and revoked', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/keys?type=rw&project=alpha&revoked=false', headers: bearer(owner) });
    expect(res.statusCode).toBe(200);
    const keys = res.json().keys;
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.every((k: { type: string; project_id: string; revoked_at: unknown }) => k.type === 'rw' && k.project_id === 'alpha' && k.revoked_at === null)).toBe(true);
  });

  it('GET /v1/keys and GET /v1/keys/:id say whether a token is halted (trigger, since when), and not after it is resumed', async () => {
    const created = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, description: 'halt field' } });
    const id: string = created.json().key.id;
    const shown = async () => {
      const list = await app.inject({ method: 'GET', url: '/v1/keys?project=alpha', headers: bearer(owner) });
      const one = await app.inject({ method: 'GET', url: `/v1/keys/${id}`, headers: bearer(owner) });
      expect(list.statusCode).toBe(200);
      expect(one.statusCode).toBe(200);
      const listed = list.json().keys.find((k: { id: string }) => k.id === id);
      expect(listed.halt).toEqual(one.json().halt);
      return one.json().halt;
    };
    expect(await shown()).toBeNull();
    const before = (await t.pool().query<{ now: Date }>('SELECT now()')).rows[0]!.now;
    const halted = await app.ctx.sessions.halt({ tokenId: id, trigger: 'UNAUTHORIZED_SERVER', haltToken: true, summary: {} });
    expect(halted.token_halted).toBe(true);
    const after = (await t.pool().query<{ now: Date }>('SELECT now()')).rows[0]!.now;
    const halt = await shown();
    expect(halt).toMatchObject({ trigger: 'UNAUTHORIZED_SERVER' });
    // The halt's own time (Postgres's clock, read around it), not some other row's.
    expect(new Date(halt.halted_at).getTime()).toBeGreaterThanOrEqual(before.getTime());
    expect(new Date(halt.halted_at).getTime()).toBeLessThanOrEqual(after.getTime());
    // Other tokens are not halted by it.
    const others = (await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(owner) })).json().keys.filter((k: { id: string }) => k.id !== id);
    expect(others.every((k: { halt: unknown }) => k.halt === null)).toBe(true);
    const resumed = await app.inject({ method: 'POST', url: `/v1/keys/${id}/resume`, headers: bearer(owner), payload: { reason: 'checked' } });
    expect(resumed.statusCode, resumed.body).toBe(200);
    expect(await shown()).toBeNull();
  });

  it('GET /v1/scopes shows which types may hold which scope', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/scopes', headers: bearer(owner) });
    expect(res.statusCode).toBe(200);
    const auth = res.json().scopes.find((s: { scope: string }) => s.scope === 'auth:*');
    expect(auth.allowed_types).toEqual(['admin']);
  });
});

describe('revocation across replicas', () => {
  it('a revoked agent token is refused at once by a second instance that had it cached', async () => {
    const app2 = await t.app();
    const created = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: roBody });
    const raw = created.json().token;
    expect((await app2.ctx.auth.authenticate(raw)).kind).toBe('agent');
    const rev = await app.inject({ method: 'POST', url: `/v1/keys/${created.json().key.id}/revoke`, headers: bearer(owner), payload: { reason: 'leaked in a log' } });
    expect(rev.statusCode).toBe(200);
    expect(rev.json().revoke_reason).toBe('leaked in a log');
    expect(rev.json()).toMatchObject({ announced: true });
    expect(rev.json()).not.toHaveProperty('warning');
    // pub/sub delivery is asynchronous but sub-millisecond on loopback; poll briefly.
    const deadline = Date.now() + 2_000;
    let refused = false;
    while (!refused && Date.now() < deadline) {
      refused = await app2.ctx.auth.authenticate(raw).then(
        () => false,
        (err: { code?: string }) => err.code === 'UNAUTHENTICATED',
      );
      if (!refused) await new Promise((r) => setTimeout(r, 20));
    }
    expect(refused).toBe(true);
    // Each replica holds Postgres connections: closed when done, so parallel files stay within max_connections.
    await t.close(app2);
  });

  it('a revoked operator key gets 401 on the next request on a second instance', async () => {
    const app2 = await t.app();
    const op = await app.ctx.credentials.createOperatorKey('test', { name: 'temp', role: 'viewer' });
    expect((await app2.inject({ method: 'GET', url: '/v1/keys', headers: bearer(op.key) })).statusCode).toBe(200);
    await app.inject({ method: 'POST', url: `/v1/operator-keys/${op.operator_key.id}/revoke`, headers: bearer(owner) });
    await new Promise((r) => setTimeout(r, 50));
    expect((await app2.inject({ method: 'GET', url: '/v1/keys', headers: bearer(op.key) })).statusCode).toBe(401);
    await t.close(app2);
  });
});

describe('revocation while Redis is unreachable', () => {
  // A replica whose Redis commands fail at once (no offline queue), as during an outage: its command
  // connection is swapped for one to a port where nothing listens. The shared Redis is not touched, and a
  // second replica (short cache TTL) never hears the announcement.
  const PEER_TTL_MS = 300;
  let cut: FastifyInstance;
  let peer: FastifyInstance;
  let restore: () => Promise<void>;

  beforeAll(async () => {
    cut = await t.app();
    peer = await t.app({ tokenCacheTtlMs: PEER_TTL_MS });
    const dead = createRedis('redis://127.0.0.1:1', cut.ctx.redis.prefix, 100);
    const live = cut.ctx.redis.redis;
    cut.ctx.redis.redis = dead.redis;
    restore = async () => {
      cut.ctx.redis.redis = live;
      await dead.close();
    };
  });
  afterAll(async () => {
    await restore();
    await t.close(cut);
    await t.close(peer);
  });

  const refused = (a: FastifyInstance, raw: string) =>
    a.ctx.auth.authenticate(raw).then(
      () => false,
      (err: { code?: string }) => err.code === 'UNAUTHENTICATED',
    );

  async function adminRows(action: string, target?: string) {
    await cut.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT kind, target, details FROM audit_events WHERE action = $1 AND ($2::text IS NULL OR target = $2) ORDER BY ts, seq`, [action, target ?? null]);
    return rows as Array<{ kind: string; target: string; details: Record<string, unknown> }>;
  }

  it('an agent token revoked while the announcement cannot be sent: 200, refused here at once and on the others within their cache TTL, audited (key.revoked)', async () => {
    const created = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: roBody });
    const { token: raw, key } = created.json();
    // Both replicas hold the token as valid in their cache.
    expect((await cut.ctx.auth.authenticate(raw)).kind).toBe('agent');
    expect((await peer.ctx.auth.authenticate(raw)).kind).toBe('agent');

    const rev = await cut.inject({ method: 'POST', url: `/v1/keys/${key.id}/revoke`, headers: bearer(owner), payload: { reason: 'leaked at 3 a.m.' } });
    expect(rev.statusCode, rev.body).toBe(200);
    expect(rev.json()).toMatchObject({ id: key.id, revoke_reason: 'leaked at 3 a.m.', announced: false, warning: expect.stringContaining('Redis did not take the announcement') });
    expect(rev.json().revoked_at).not.toBeNull();
    expect(await refused(cut, raw)).toBe(true);

    const rows = await adminRows('key.revoked', `agent_token:${key.id}`);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ kind: 'ADMIN', details: { reason: 'leaked at 3 a.m.', announced: false } });
    expect(t.logs.text).toContain('Redis did not take the announcement');

    // The peer never got the message: its cache entry runs out instead.
    const deadline = Date.now() + PEER_TTL_MS + 2_000;
    let gone = await refused(peer, raw);
    while (!gone && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      gone = await refused(peer, raw);
    }
    expect(gone).toBe(true);
    // An operator who retries anyway gets the same answer: revoking is idempotent and keeps the first reason.
    const again = await cut.inject({ method: 'POST', url: `/v1/keys/${key.id}/revoke`, headers: bearer(owner), payload: { reason: 'retry' } });
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json().revoke_reason).toBe('leaked at 3 a.m.');
  });

  it('gateway keys, operator keys, bulk revoke and rotation succeed and are audited too', async () => {
    const gwKey = (await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(owner), payload: { name: 'gw-outage' } })).json();
    expect((await cut.ctx.auth.authenticate(gwKey.key)).kind).toBe('gateway');
    expect((await cut.inject({ method: 'POST', url: `/v1/gateway-keys/${gwKey.gateway_key.id}/revoke`, headers: bearer(owner) })).statusCode).toBe(204);
    expect(await refused(cut, gwKey.key)).toBe(true);
    expect(await adminRows('gateway_key.revoked', `gateway_key:${gwKey.gateway_key.id}`)).toMatchObject([{ kind: 'ADMIN', details: { announced: false } }]);

    const opKey = await app.ctx.credentials.createOperatorKey('test', { name: 'op-outage', role: 'viewer' });
    expect((await cut.ctx.auth.authenticate(opKey.key)).kind).toBe('operator');
    expect((await cut.inject({ method: 'POST', url: `/v1/operator-keys/${opKey.operator_key.id}/revoke`, headers: bearer(owner) })).statusCode).toBe(204);
    expect(await refused(cut, opKey.key)).toBe(true);
    expect(await adminRows('operator_key.revoked', `operator_key:${opKey.operator_key.id}`)).toMatchObject([{ kind: 'ADMIN', details: { announced: false } }]);

    const project = 'outage';
    const victims = [];
    for (let i = 0; i < 2; i++) victims.push((await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, project_id: project } })).json());
    for (const v of victims) await cut.ctx.auth.authenticate(v.token);
    const bulk = await cut.inject({ method: 'POST', url: '/v1/keys/bulk-revoke', headers: bearer(owner), payload: { dry_run: false, project_id: project, reason: 'INC-9 outage', expected_count: 2 } });
    expect(bulk.statusCode, bulk.body).toBe(200);
    expect(bulk.json()).toMatchObject({ dry_run: false, count: 2 });
    expect(bulk.json().message).toContain('Redis did not take the announcement');
    expect(bulk.json()).not.toHaveProperty('unannounced');
    for (const v of victims) expect(await refused(cut, v.token)).toBe(true);
    expect(await adminRows('key.bulk_revoked')).toMatchObject([{ kind: 'ADMIN', details: { reason: 'INC-9 outage', count: 2, announced: false } }]);

    const rotating = (await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: roBody })).json();
    await cut.ctx.auth.authenticate(rotating.token);
    const rot = await cut.inject({ method: 'POST', url: `/v1/keys/${rotating.key.id}/rotate`, headers: bearer(owner), payload: { grace_seconds: 0, reason: 'INC-9 rotate' } });
    expect(rot.statusCode, rot.body).toBe(201);
    expect(rot.json().message).toContain('Redis did not take the announcement');
    expect(await refused(cut, rotating.token)).toBe(true);
    expect(await adminRows('key.rotated', `agent_token:${rotating.key.id}`)).toMatchObject([{ kind: 'ADMIN', details: { announced: false } }]);

    // Both TOKENS_REVOKED alerts were raised (fire and forget: give them a moment).
    const deadline = Date.now() + 2_000;
    let alerts: string[] = [];
    while (alerts.length < 2 && Date.now() < deadline) {
      const { rows } = await t.pool().query(`SELECT message FROM alerts WHERE kind = 'TOKENS_REVOKED' AND (message LIKE '%INC-9%')`);
      alerts = rows.map((r: { message: string }) => r.message);
      if (alerts.length < 2) await new Promise((r) => setTimeout(r, 50));
    }
    expect(alerts).toHaveLength(2);
  });
});

describe('revoking what is revoked already', () => {
  type Row = { actor_id: string; details: Record<string, unknown> };
  async function revokedRows(action: string, target: string): Promise<Row[]> {
    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT actor_id, details FROM audit_events WHERE action = $1 AND target = $2 ORDER BY ts, seq`, [action, target]);
    return rows;
  }
  const firstAndRepeat = (rows: Row[]) => {
    // Exactly one row revoked it (whichever call won); the other says it found it revoked already.
    expect(rows).toHaveLength(2);
    const first = rows.filter((r) => !('already_revoked_at' in r.details));
    const repeat = rows.filter((r) => 'already_revoked_at' in r.details);
    expect(first).toHaveLength(1);
    expect(repeat).toHaveLength(1);
    return { first: first[0]!, repeat: repeat[0]! };
  };

  it('an agent token revoked twice, one after the other: 200 both times, the second row says when and why it was revoked first and keeps what this operator typed', async () => {
    const { key } = (await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: roBody })).json();
    const first = await app.inject({ method: 'POST', url: `/v1/keys/${key.id}/revoke`, headers: bearer(owner), payload: { reason: 'leaked in CI logs' } });
    expect(first.statusCode, first.body).toBe(200);
    const second = await app.inject({ method: 'POST', url: `/v1/keys/${key.id}/revoke`, headers: bearer(owner), payload: { reason: 'cleanup' } });
    expect(second.statusCode, second.body).toBe(200);
    expect(second.json()).toMatchObject({ revoked_at: first.json().revoked_at, revoke_reason: 'leaked in CI logs' });

    const rows = await revokedRows('key.revoked', `agent_token:${key.id}`);
    expect(rows).toHaveLength(2);
    expect(rows[0]!.details).not.toHaveProperty('already_revoked_at');
    expect(rows[0]!.details).not.toHaveProperty('kept_reason');
    expect(rows[0]!.details).toMatchObject({ reason: 'leaked in CI logs', announced: true });
    expect(rows[1]!.details).toMatchObject({
      reason: 'cleanup',
      display_prefix: key.display_prefix,
      announced: true,
      already_revoked_at: first.json().revoked_at,
      already_revoked_by: first.json().revoked_by,
      kept_reason: 'leaked in CI logs',
    });
  });

  it('an agent token revoked twice at once: one row revokes it, the other is the repeat naming the kept reason', async () => {
    const { key } = (await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: roBody })).json();
    const answers = await Promise.all(['reason A', 'reason B'].map((reason) => app.inject({ method: 'POST', url: `/v1/keys/${key.id}/revoke`, headers: bearer(owner), payload: { reason } })));
    for (const a of answers) expect(a.statusCode, a.body).toBe(200);
    const kept = answers[0]!.json().revoke_reason as string;
    expect(answers[1]!.json().revoke_reason).toBe(kept);
    const { first, repeat } = firstAndRepeat(await revokedRows('key.revoked', `agent_token:${key.id}`));
    expect(first.details.reason).toBe(kept);
    expect(repeat.details).toMatchObject({ reason: kept === 'reason A' ? 'reason B' : 'reason A', kept_reason: kept, already_revoked_at: answers[0]!.json().revoked_at });
  });

  it('gateway and operator keys revoked twice at once: 204 both times, one row revokes it, the other says when it was revoked first', async () => {
    const gw = (await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(owner), payload: { name: 'gw-twice' } })).json().gateway_key;
    const op = (await app.ctx.credentials.createOperatorKey('test', { name: 'op-twice', role: 'viewer' })).operator_key;
    for (const [path, kind, id] of [
      ['gateway-keys', 'gateway_key', gw.id],
      ['operator-keys', 'operator_key', op.id],
    ] as const) {
      const answers = await Promise.all([0, 1].map(() => app.inject({ method: 'POST', url: `/v1/${path}/${id}/revoke`, headers: bearer(owner) })));
      for (const a of answers) expect(a.statusCode, a.body).toBe(204);
      const listed = (await app.inject({ url: `/v1/${path}`, headers: bearer(owner) })).json().keys.find((k: { id: string }) => k.id === id);
      expect(listed.revoked_at).not.toBeNull();
      const { first, repeat } = firstAndRepeat(await revokedRows(`${kind}.revoked`, `${kind}:${id}`));
      expect(first.details).toMatchObject({ announced: true });
      expect(repeat.details).toMatchObject({ announced: true, already_revoked_at: listed.revoked_at });
    }
  });
});

describe('secrets stay out of logs', () => {
  it('raw tokens, keys and the hash secret never appear in log output', async () => {
    const created = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { ...roBody, type: 'rw', acknowledge_write_risk: true } });
    const raw = created.json().token;
    await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(raw) });
    app.log.info({ req: { headers: { authorization: `Bearer ${raw}`, 'x-agent-token': raw } }, token: raw, secret: 'test-secret-test-secret-test-secret-1234' }, 'probe');
    app.log.error({ err: new Error('boom'), headers: { authorization: `Bearer ${owner}` } }, 'probe error');
    const text = t.logs.text;
    expect(text).toContain('probe');
    expect(text).not.toContain(raw);
    expect(text).not.toContain(owner);
    expect(text).not.toContain('test-secret-test-secret');
  });
});

describe('health', () => {
  it('/healthz and /readyz', async () => {
    expect((await app.inject({ url: '/healthz' })).json()).toEqual({ ok: true });
    const ready = await app.inject({ url: '/readyz' });
    expect(ready.json().checks.postgres).toBe('ok');
    expect(ready.json().checks.redis).toBe('ok');
  });

  it('serves a generated OpenAPI document', async () => {
    const res = await app.inject({ url: '/docs/openapi.json' });
    expect(res.statusCode).toBe(200);
    expect(Object.keys(res.json().paths)).toContain('/v1/keys');
  });
});

describe('dependencies down on the admin API', () => {
  it('Postgres unavailable → 503 SERVICE_UNAVAILABLE, not a 500', async () => {
    const other = await t.app();
    const key = await t.operatorKey(other, 'owner');
    await other.ctx.pool.end();
    const cached = await other.inject({ method: 'GET', url: '/v1/keys', headers: bearer(key) });
    expect(cached.statusCode).toBe(503);
    expect(cached.json().error.code).toBe('SERVICE_UNAVAILABLE');
    const uncached = await other.inject({ method: 'GET', url: '/v1/keys', headers: bearer(owner) });
    expect(uncached.statusCode).toBe(503);
  });
});

// Last in the file: it revokes the file's owner key.
describe('the last owner key', () => {
  type KeyRow = { id: string; role: string; projects: string[] | null; display_prefix: string; revoked_at: string | null; expires_at: string | null };
  const keys = async (key: string): Promise<KeyRow[]> => (await app.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(key) })).json().keys;
  const idOf = async (key: string) => (await keys(key)).find((k) => key.startsWith(k.display_prefix))!.id;
  const revoke = (id: string, key: string) => app.inject({ method: 'POST', url: `/v1/operator-keys/${id}/revoke`, headers: bearer(key) });

  it('is never revoked (409 naming what to do first); a project-limited owner does not count; with a second owner it can go', async () => {
    const ownerId = await idOf(owner);
    // Every other live owner key for every project goes first, so that the file's owner key is the last.
    const live = (k: KeyRow) => k.role === 'owner' && k.projects === null && k.revoked_at === null && (k.expires_at === null || Date.parse(k.expires_at) > Date.now());
    for (const k of (await keys(owner)).filter(live)) if (k.id !== ownerId) expect((await revoke(k.id, owner)).statusCode).toBe(204);
    await t.operatorKey(app, 'owner', ['alpha']);

    const refused = await revoke(ownerId, owner);
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error).toMatchObject({ code: 'CONFLICT', details: { reason: 'last_owner_key' } });
    expect(refused.json().error.message).toContain('Create another owner key first');
    expect((await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(owner) })).statusCode).toBe(200);

    const second = await t.operatorKey(app, 'owner');
    expect((await revoke(ownerId, second)).statusCode).toBe(204);
    expect((await app.inject({ method: 'GET', url: '/v1/keys', headers: bearer(owner) })).statusCode).toBe(401);
    expect((await revoke(await idOf(second), second)).statusCode).toBe(409);
  });

  it('nor is the one that lasts longest: an owner key that expires cannot revoke the last one that does not', async () => {
    const lasting = await t.operatorKey(app, 'owner');
    const lastingId = await idOf(lasting);
    // The live unlimited owners but this one go, so it is the only one that never expires.
    const live = (k: KeyRow) => k.role === 'owner' && k.projects === null && k.revoked_at === null && (k.expires_at === null || Date.parse(k.expires_at) > Date.now());
    for (const k of (await keys(lasting)).filter(live)) if (k.id !== lastingId) expect((await revoke(k.id, lasting)).statusCode).toBe(204);
    const made = await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(lasting), payload: { name: 'short-lived owner', role: 'owner', expires_in: 60 } });
    expect(made.statusCode, made.body).toBe(201);
    const short = made.json().key as string;

    const refused = await revoke(lastingId, short);
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error).toMatchObject({ code: 'CONFLICT', details: { reason: 'last_owner_key' } });
    expect(refused.json().error.message).toContain('expires before it');
    // The short-lived one can go (the lasting one stays), and so can the lasting one once another never expires.
    const another = await t.operatorKey(app, 'owner');
    expect((await revoke(lastingId, short)).statusCode).toBe(204);
    expect((await revoke(made.json().operator_key.id, another)).statusCode).toBe(204);
  });
});
