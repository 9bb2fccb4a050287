import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// What an auditor finds by filter: the ADMIN rows about a token carry its id in token_id (so ?token= finds
// them beside its calls), and a project-limited owner finds what was done to the operator keys it manages.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(() => t.teardown());

type Event = { kind: string; action: string | null; target: string | null; details: Record<string, unknown> | null };
const events = async (key: string, query: string): Promise<Event[]> => {
  await app.ctx.audit.writer.flush();
  const res = await app.inject({ url: `/v1/audit?${query}&limit=1000`, headers: bearer(key) });
  expect(res.statusCode, res.body).toBe(200);
  return res.json().events;
};

describe('GET /v1/audit?token=', () => {
  it("finds the token's ADMIN rows (created, session opened and closed, killed, lift, resumed) beside its calls", async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id: s.session_id });
    const kill = await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'token', token_id: tok.id, reason: 'INC-1 contain' } });
    expect(kill.statusCode, kill.body).toBe(201);
    const lift = await app.inject({ method: 'DELETE', url: `/v1/kills/${kill.json().kill.id}`, headers: bearer(gw.owner), payload: { reason: 'INC-1 over' } });
    expect(lift.statusCode, lift.body).toBe(200);
    expect((await app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/close`, headers: bearer(gw.owner) })).statusCode).toBe(200);

    const rows = await events(gw.owner, `token=${tok.id}`);
    expect(rows.filter((r) => r.kind === 'ADMIN').map((r) => r.action)).toEqual(expect.arrayContaining(['key.created', 'session.opened', 'kill.created', 'kill.lifted', 'session.closed']));
    expect(rows.some((r) => r.kind === 'INTENT')).toBe(true);
    // The kill's target key names the token id in clear: an id is not a credential.
    const created = rows.find((r) => r.action === 'kill.created')!;
    expect(created.details).toMatchObject({ target: 'token', target_key: `token:${tok.id}` });
    // Another token's rows are not among them.
    const other = await gw.token('ro');
    expect((await events(gw.owner, `token=${other.id}`)).map((r) => r.action)).toEqual(['key.created']);
  });
});

describe('a project-limited owner', () => {
  it('finds in its audit trail the creation and revocation of the operator keys limited to its one project, and nothing of keys reaching beyond it', async () => {
    const limited = await t.operatorKey(app, 'owner', ['alpha', 'gamma']);
    const made = await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(limited), payload: { name: 'alpha-viewer', role: 'viewer', projects: ['alpha'] } });
    expect(made.statusCode).toBe(201);
    const both = await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(limited), payload: { name: 'both-viewer', role: 'viewer', projects: ['alpha', 'gamma'] } });
    expect(both.statusCode).toBe(201);
    for (const k of [made, both]) {
      expect((await app.inject({ method: 'POST', url: `/v1/operator-keys/${k.json().operator_key.id}/revoke`, headers: bearer(limited) })).statusCode).toBe(204);
    }
    const seen = (await events(limited, 'kind=ADMIN')).filter((r) => r.target?.startsWith('operator_key:'));
    const of = (id: string) => seen.filter((r) => r.target === `operator_key:${id}`).map((r) => r.action);
    expect(of(made.json().operator_key.id)).toEqual(['operator_key.revoked', 'operator_key.created']);
    // A key limited to two projects is listed to no owner of only one of them: its rows are under no
    // project, so no reader of one project's trail learns of it (or of the other project).
    expect(of(both.json().operator_key.id)).toEqual([]);
    const gammaOnly = await t.operatorKey(app, 'viewer', ['gamma']);
    const gammaSeen = (await events(gammaOnly, 'kind=ADMIN')).filter((r) => r.target?.startsWith('operator_key:'));
    expect(gammaSeen.map((r) => r.target)).not.toContain(`operator_key:${made.json().operator_key.id}`);
    expect(gammaSeen.map((r) => r.target)).not.toContain(`operator_key:${both.json().operator_key.id}`);
    // the unlimited owner sees every one of them
    const all = (await events(gw.owner, 'kind=ADMIN')).filter((r) => r.target === `operator_key:${both.json().operator_key.id}`);
    expect(all.map((r) => r.action).sort()).toEqual(['operator_key.created', 'operator_key.revoked']);
  });
});
