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

  it('only servers of the policy: no warnings', async () => {
    const tok = await gw.token('rw');
    const res = await open(tok.raw, { servers: ['filesystem', 'memory'] });
    expect(res.statusCode).toBe(201);
    expect(res.json()).not.toHaveProperty('warnings');
    expect((await open(tok.raw, {})).json()).not.toHaveProperty('warnings');
  });
});
