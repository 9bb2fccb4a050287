import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolHash } from '../../src/tools/hash.js';
import { MAX_TOOLS_PER_REPORT, MAX_TOOLS_PER_SERVER } from '../../src/tools/limits.js';
import { TOOL_ADDED_ALERTS_PER_REPORT } from '../../src/tools/service.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// A malicious upstream drives tool reports without a single call (the reference gateway re-reads the
// upstream's list on every tools/list). A security review flooded the control plane that way: every
// change of a description was one more pending definition, TOOL_CHANGED alert and queue entry, and ever
// new tool names one more pinned row each, all listed by GET /v1/tools in one answer.

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

type Def = { name: string; description?: string };
type Row = Record<string, unknown> & { id: string; tool: string; hash: string; status: string; decided_by: string | null };
const identity = { command: 'npx', args: ['-y', '@modelcontextprotocol/server-memory'] };
const report = (via: GatewayDriver, token: string, server: string, tools: Def[]) =>
  app.inject({ method: 'POST', url: '/v1/gateway/tools', headers: via.headers(token), payload: { servers: [{ name: server, identity, tools }] } });
const listed = async (query: string) => {
  const res = await app.inject({ url: `/v1/tools?${query}`, headers: bearer(gw.owner) });
  expect(res.statusCode).toBe(200);
  return res.json() as { tools: Row[]; next_cursor: string | null };
};
const toolChangedAlerts = async (server: string) =>
  (await app.inject({ url: `/v1/alerts?kind=TOOL_CHANGED&server=${server}&limit=500`, headers: bearer(gw.owner) })).json().alerts as Array<{
    id: string;
    message: string;
    numbers: Record<string, number>;
    details: Record<string, unknown>;
  }>;

/** Another gateway (its own gateway key) of the same installation. */
async function otherGateway(name: string): Promise<GatewayDriver> {
  const driver = Object.assign(new GatewayDriver(t, app), { owner: gw.owner });
  const res = await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: bearer(gw.owner), payload: { name } });
  expect(res.statusCode).toBe(201);
  driver.gatewayKey = res.json().key;
  return driver;
}

describe('an upstream that keeps changing its tools', () => {
  it('leaves one pending definition per tool, the latest, with one open TOOL_CHANGED alert and one queue entry that count the changes', async () => {
    const tok = await gw.token('ro');
    const v = (n: number): Def[] => [
      { name: 'read_graph', description: `Read the knowledge graph, version ${n}` },
      { name: 'search_nodes', description: `Search nodes, version ${n}` },
    ];
    expect((await report(gw, tok.raw, 'memory', v(0))).json().servers[0].tools.map((x: { status: string }) => x.status)).toEqual(['approved', 'approved']);
    const changes = 8;
    for (let n = 1; n <= changes; n++) {
      const res = await report(gw, tok.raw, 'memory', v(n));
      expect(res.json().servers[0].tools.map((x: { status: string }) => x.status)).toEqual(['changed', 'changed']);
    }

    const pending = (await listed('server=memory&status=pending')).tools;
    expect(pending.map((r) => [r.tool, r.hash]).sort()).toEqual(v(changes).map((d) => [d.name, toolHash(d)]).sort());
    // The replaced ones ran nowhere any more (this gateway reports the latest): they are gone.
    expect((await listed('server=memory')).tools).toHaveLength(4);

    const queue = (await app.inject({ url: '/v1/approvals?kind=tool_definition&state=pending', headers: bearer(gw.owner) })).json().approvals as Array<{ id: string }>;
    expect(queue.map((q) => q.id).sort()).toEqual(pending.map((r) => r.id).sort());

    const alerts = await toolChangedAlerts('memory');
    expect(alerts).toHaveLength(2);
    for (const r of pending) {
      const alert = alerts.find((a) => a.details['tool'] === r.tool)!;
      expect(alert.numbers).toEqual({ changes });
      expect(alert.details['definition_id']).toBe(r.id);
      expect(alert.message).toContain(r.id);
      expect(alert.message).toContain(`${changes} changes`);
    }

    // Still never callable unreviewed, by the latest hash, an older one, or without a hash.
    const s = await gw.session(tok.raw);
    const call = { server: 'memory', tool: 'read_graph', session_id: s.session_id };
    expect((await gw.decide(tok.raw, call)).code).toBe('TOOL_CHANGED');
    expect((await gw.decide(tok.raw, { ...call, tool_hash: toolHash(v(changes)[0]!) })).code).toBe('TOOL_CHANGED');
    expect((await gw.decide(tok.raw, { ...call, tool_hash: toolHash(v(3)[0]!) })).code).toBe('TOOL_CHANGED');
    const latest = pending.find((r) => r.tool === 'read_graph')!;
    expect((await app.inject({ method: 'POST', url: `/v1/tools/${latest.id}/approve`, headers: bearer(gw.owner), payload: { reason: 'read the change' } })).statusCode).toBe(200);
    expect((await gw.decide(tok.raw, call)).code).toBe('OK');
  });

  it(`raises at most ${TOOL_ADDED_ALERTS_PER_REPORT} TOOL_ADDED alerts per server for one report's new names, and one naming how many more`, async () => {
    const tok = await gw.token('ro');
    expect((await report(gw, tok.raw, 'crm-flood', [{ name: 'seed' }])).statusCode).toBe(200);
    const names = Array.from({ length: 25 }, (_, i) => ({ name: `added_${String(i).padStart(2, '0')}` }));
    expect((await report(gw, tok.raw, 'crm-flood', [{ name: 'seed' }, ...names])).statusCode).toBe(200);
    const alerts = (await app.inject({ url: '/v1/alerts?kind=TOOL_ADDED&server=crm-flood&limit=500', headers: bearer(gw.owner) })).json().alerts as Array<{
      message: string;
      numbers: Record<string, number>;
      details: Record<string, unknown>;
    }>;
    expect(alerts).toHaveLength(TOOL_ADDED_ALERTS_PER_REPORT + 1);
    expect(alerts.filter((a) => a.details['tool'] !== undefined).map((a) => a.details['tool']).sort()).toEqual(names.slice(0, TOOL_ADDED_ALERTS_PER_REPORT).map((n) => n.name));
    const rest = alerts.find((a) => a.details['tool'] === undefined)!;
    expect(rest.numbers).toEqual({ added: 25 - TOOL_ADDED_ALERTS_PER_REPORT });
    expect(rest.message).toContain(`${25 - TOOL_ADDED_ALERTS_PER_REPORT} more new tools of server crm-flood`);
    expect(rest.details['tools']).toEqual(names.slice(TOOL_ADDED_ALERTS_PER_REPORT).map((n) => n.name));
  });

  it('raises a new alert for a change after the open one was acknowledged', async () => {
    const tok = await gw.token('ro');
    const v = (n: number): Def[] => [{ name: 'open_nodes', description: `Open nodes, version ${n}` }];
    await report(gw, tok.raw, 'memory', v(0));
    await report(gw, tok.raw, 'memory', v(1));
    const [first] = (await toolChangedAlerts('memory')).filter((a) => a.details['tool'] === 'open_nodes');
    expect((await app.inject({ method: 'POST', url: `/v1/alerts/${first!.id}/ack`, headers: bearer(gw.owner), payload: {} })).statusCode).toBe(200);
    await report(gw, tok.raw, 'memory', v(2));
    const mine = (await toolChangedAlerts('memory')).filter((a) => a.details['tool'] === 'open_nodes');
    expect(mine.map((a) => a.numbers['changes'])).toEqual([1, 1]);
    expect((await listed('server=memory&status=pending')).tools.filter((r) => r.tool === 'open_nodes').map((r) => r.hash)).toEqual([toolHash(v(2)[0]!)]);
  });

  it('keeps a replaced definition another gateway still runs: superseded by `replaced`, its calls TOOL_CHANGED, pending again when reported again', async () => {
    const tok = await gw.token('ro');
    const other = await otherGateway('second gateway');
    const v0 = { name: 'delete_entities', description: 'Delete entities' };
    const mine = { ...v0, description: 'Delete entities. And the backups.' };
    const theirs = { ...v0, description: 'Delete entities. And mail them out first.' };
    await report(gw, tok.raw, 'memory', [v0]);
    await report(other, tok.raw, 'memory', [theirs]);
    await report(gw, tok.raw, 'memory', [mine]);

    const rows = (await listed('server=memory')).tools.filter((r) => r.tool === 'delete_entities');
    const kept = rows.find((r) => r.hash === toolHash(theirs))!;
    expect(kept).toMatchObject({ status: 'superseded', decided_by: 'replaced' });
    expect(rows.filter((r) => r.status === 'pending').map((r) => r.hash)).toEqual([toolHash(mine)]);
    const s = await other.session(tok.raw);
    const denied = await other.decide(tok.raw, { server: 'memory', tool: 'delete_entities', session_id: s.session_id });
    expect(denied.code).toBe('TOOL_CHANGED');
    expect(denied.message).toContain(kept.id);
    expect(denied.message).toContain('replaced');

    const again = await report(other, tok.raw, 'memory', [theirs]);
    expect(again.json().servers[0].tools[0]).toMatchObject({ status: 'changed', callable: false });
    const after = (await listed('server=memory')).tools.filter((r) => r.tool === 'delete_entities');
    expect(after.filter((r) => r.status === 'pending').map((r) => r.hash)).toEqual([toolHash(theirs)]);
    expect(after.find((r) => r.hash === toolHash(mine))).toMatchObject({ status: 'superseded', decided_by: 'replaced' });
    const alerts = (await toolChangedAlerts('memory')).filter((a) => a.details['tool'] === 'delete_entities');
    expect(alerts.map((a) => a.numbers['changes'])).toEqual([3]);
  });
});

describe('GET /v1/tools', () => {
  it('answers a page at a time, newest first, with next_cursor', async () => {
    const tok = await gw.token('ro');
    await report(
      gw,
      tok.raw,
      'postgres',
      ['query', 'list_tables', 'describe', 'explain', 'vacuum'].map((name) => ({ name })),
    );
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { tools: Row[]; next_cursor: string | null } = await listed(`server=postgres&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.tools.length).toBeLessThanOrEqual(2);
      seen.push(...page.tools.map((r) => r.tool));
      cursor = page.next_cursor;
    } while (cursor);
    expect(seen).toEqual(['vacuum', 'explain', 'describe', 'list_tables', 'query']);
    expect((await app.inject({ url: '/v1/tools?limit=501', headers: bearer(gw.owner) })).statusCode).toBe(400);
  });
});

describe('the number of tools', () => {
  it(`of one report is at most ${MAX_TOOLS_PER_REPORT}: more is 400 naming servers, and nothing is stored`, async () => {
    const tok = await gw.token('ro');
    const per = Math.ceil((MAX_TOOLS_PER_REPORT + 1) / 3);
    const servers = ['a', 'b', 'c'].map((s) => ({ name: `many-${s}`, identity, tools: Array.from({ length: per }, (_, i) => ({ name: `t${i}` })) }));
    const res = await app.inject({ method: 'POST', url: '/v1/gateway/tools', headers: gw.headers(tok.raw), payload: { servers } });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ error: { code: 'INVALID_REQUEST', details: [{ field: 'servers' }] } });
    expect((await listed('server=many-a')).tools).toHaveLength(0);
  });

  it(`of one server is at most ${MAX_TOOLS_PER_SERVER}: new names beyond are refused, not pinned, and never callable`, async () => {
    const tok = await gw.token('ro');
    const names = Array.from({ length: MAX_TOOLS_PER_SERVER + 3 }, (_, i) => ({ name: `tool_${String(i).padStart(4, '0')}` }));
    const res = await report(gw, tok.raw, 'github', names);
    expect(res.statusCode).toBe(200);
    const answered = res.json().servers[0].tools as Array<{ name: string; status: string; callable: boolean; reason?: string }>;
    expect(answered.filter((x) => x.status === 'approved')).toHaveLength(MAX_TOOLS_PER_SERVER);
    const refused = answered.filter((x) => x.status === 'refused');
    expect(refused.map((x) => x.name)).toEqual(names.slice(MAX_TOOLS_PER_SERVER).map((d) => d.name));
    expect(refused[0]).toMatchObject({ callable: false });
    expect(refused[0]!.reason).toContain(`${MAX_TOOLS_PER_SERVER} tools`);

    // A later report: known names are still pinned and answered, a new one is refused.
    const later = (await report(gw, tok.raw, 'github', [names[0]!, { name: 'brand_new' }])).json().servers[0].tools;
    expect(later.map((x: { status: string }) => x.status)).toEqual(['approved', 'refused']);
    let count = 0;
    let cursor: string | null = null;
    do {
      const page: { tools: Row[]; next_cursor: string | null } = await listed(`server=github&limit=500${cursor ? `&cursor=${cursor}` : ''}`);
      count += page.tools.length;
      cursor = page.next_cursor;
    } while (cursor);
    expect(count).toBe(MAX_TOOLS_PER_SERVER);

    // On the audit trail: one tool.pinned per pinned name (one group commit for the report), one
    // tool.refused per refused name, not again when the name is reported again.
    await report(gw, tok.raw, 'github', names.slice(MAX_TOOLS_PER_SERVER));
    const audited = await t.pool().query(
      `SELECT action, count(*)::int AS n, count(DISTINCT target)::int AS targets FROM audit_events WHERE action IN ('tool.pinned', 'tool.refused') AND target LIKE 'tool:github/%' GROUP BY action ORDER BY action`,
    );
    expect(audited.rows).toEqual([
      { action: 'tool.pinned', n: MAX_TOOLS_PER_SERVER, targets: MAX_TOOLS_PER_SERVER },
      { action: 'tool.refused', n: 4, targets: 4 },
    ]);
    const refusedRow = await t.pool().query(`SELECT details FROM audit_events WHERE action = 'tool.refused' AND target = 'tool:github/brand_new'`);
    expect(refusedRow.rows[0].details).toMatchObject({ reason: 'server_full', max_tools_per_server: MAX_TOOLS_PER_SERVER, token_id: tok.id });

    // A call to a refused name is denied, as a tool whose pin is not approved.
    const explained = await app.inject({ method: 'POST', url: '/v1/decisions/explain', headers: bearer(gw.owner), payload: { token_id: tok.id, server: 'github', tool: 'brand_new', arguments: {} } });
    expect(explained.json()).toMatchObject({ decision: 'deny', code: 'TOOL_CHANGED' });
  });
});
