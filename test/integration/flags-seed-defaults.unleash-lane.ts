import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { restoreFlag, testAdmin, until } from '../helpers/unleash.js';

// Seed 001's kill switches hold by default (DESIGN.md §5, docs/policy.md "Flags of a server"): turning
// mcp.database.write off in Unleash stops the writes of a db server whose policy entry names no flag,
// mcp.shell.execute every call of an exec-class server and mcp.cloud.infra every call of a cloud-class
// one, reads included, through the decision API, and the audit row records the flag. In the Unleash
// lane: it toggles flags.

const POLICY = 'test/fixtures/decisions/seed-flags-policy.yaml';
const FLAG = 'mcp.database.write';
const unleash = inject('unleash');
const admin = testAdmin(unleash);
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
});
/** The flags a test turned off: restored after it, and only they (see afterEach). */
const touched = new Set<string>();
async function turnOff(flag: string): Promise<void> {
  touched.add(flag);
  await admin.setEnabled(flag, unleash.environment, false);
}
// Only the flags the test turned off: restoring one deletes its strategies first, and Unleash disables a
// flag whose last strategy goes, so a flag restored while on is off for a moment, and the next test's
// control plane could poll that moment (seen in CI: the cloud test's first call denied KILL_SWITCH). Then
// wait until this control plane sees them on again, so tests do not leak into each other.
afterEach(async () => {
  const restored = [...touched];
  touched.clear();
  for (const flag of restored) await restoreFlag(unleash, flag);
  for (const flag of restored) await until(() => app.ctx.flags.isEnabled(flag, { userId: 'x', properties: { tokenType: 'admin', mcpEnvironment: 'development' } }), 10_000, `${flag} on again`);
});
afterAll(() => t.teardown());

async function explain(tokenId: string, call: Record<string, unknown>) {
  const res = await app.inject({ method: 'POST', url: '/v1/decisions/explain', headers: { authorization: `Bearer ${gw.owner}` }, payload: { token_id: tokenId, ...call } });
  return res.json() as { code: string; flags: { name: string; enabled: boolean }[] };
}

async function auditFlags(decisionId: string): Promise<Record<string, boolean>> {
  await app.ctx.audit.writer.flush();
  const { rows } = await t.pool().query(`SELECT flags FROM audit_events WHERE decision_id = $1 AND kind = 'INTENT'`, [decisionId]);
  expect(rows).toHaveLength(1);
  return rows[0].flags;
}

describe('mcp.database.write without a `flags:` entry', () => {
  it('off → a write on a db-class server that does not list it is denied with KILL_SWITCH; its reads, and a server that opted out, stay allowed', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const write = { server: 'sqlite', tool: 'write_query', arguments: { query: "update notes set body = 'x'" }, session_id: s.session_id };
    const read = { server: 'sqlite', tool: 'read_query', arguments: { query: 'select 1' }, session_id: s.session_id };
    const optedOut = { server: 'postgres', tool: 'execute', arguments: { sql: 'update t set a = 1' }, session_id: s.session_id };

    const before = await gw.decide(tok.raw, write);
    expect(before.code).toBe('OK');
    expect(await auditFlags(before.decision_id)).toMatchObject({ [FLAG]: true, 'mcp.sqlite.write': true });

    await turnOff(FLAG);
    // Explain polls without side effects (no session limit spent).
    await until(async () => (await explain(tok.id, { server: 'sqlite', tool: 'write_query' })).code === 'KILL_SWITCH', 5_000, 'sqlite write killed');

    const denied = await gw.decide(tok.raw, write);
    expect(denied).toMatchObject({ decision: 'deny', code: 'KILL_SWITCH' });
    expect(denied.message).toMatch(/^mcp\.database\.write is off: /);
    expect(await auditFlags(denied.decision_id)).toMatchObject({ [FLAG]: false });

    expect((await gw.decide(tok.raw, read)).code).toBe('OK');
    // `flags: { write: [] }` takes postgres's writes out of the kill switch (policy check warns about it).
    const other = await gw.decide(tok.raw, optedOut);
    expect(other.code).toBe('OK');
    expect(await auditFlags(other.decision_id)).not.toHaveProperty(FLAG);
  });
});

describe('mcp.shell.execute and mcp.cloud.infra by class (seed 001: every call, reads too)', () => {
  const calls = (sessionId: string) => ({
    shell: { server: 'shell', tool: 'run_command', arguments: { command: 'ls' }, session_id: sessionId },
    cloudRead: { server: 'everything', tool: 'describe_instances', arguments: {}, session_id: sessionId },
    cloudWrite: { server: 'everything', tool: 'terminate_instance', arguments: { id: 'i-1' }, session_id: sessionId },
    dbRead: { server: 'sqlite', tool: 'read_query', arguments: { query: 'select 1' }, session_id: sessionId },
  });

  it('mcp.shell.execute off → every exec-class call is denied with KILL_SWITCH naming it; cloud and db calls stay allowed', async () => {
    const tok = await gw.token('admin');
    const c = calls((await gw.session(tok.raw)).session_id);
    const before = await gw.decide(tok.raw, c.shell);
    expect(before.code).toBe('OK');
    expect(await auditFlags(before.decision_id)).toMatchObject({ 'mcp.shell.execute': true, 'mcp.shell.write': true });

    await turnOff('mcp.shell.execute');
    await until(async () => (await explain(tok.id, { server: 'shell', tool: 'run_command' })).code === 'KILL_SWITCH', 5_000, 'shell call killed');

    const denied = await gw.decide(tok.raw, c.shell);
    expect(denied).toMatchObject({ decision: 'deny', code: 'KILL_SWITCH' });
    expect(denied.message).toMatch(/^mcp\.shell\.execute is off: /);
    expect(await auditFlags(denied.decision_id)).toMatchObject({ 'mcp.shell.execute': false });
    for (const other of [c.cloudRead, c.cloudWrite, c.dbRead]) expect((await gw.decide(tok.raw, other)).code, other.tool).toBe('OK');
  });

  it('mcp.cloud.infra off → cloud-class reads and writes are denied with KILL_SWITCH naming it; shell and db calls stay allowed', async () => {
    const tok = await gw.token('admin');
    const c = calls((await gw.session(tok.raw)).session_id);
    const before = await gw.decide(tok.raw, c.cloudRead);
    expect(before.code).toBe('OK');
    expect(await auditFlags(before.decision_id)).toMatchObject({ 'mcp.cloud.infra': true, 'mcp.everything.read': true });

    await turnOff('mcp.cloud.infra');
    await until(async () => (await explain(tok.id, { server: 'everything', tool: 'describe_instances' })).code === 'KILL_SWITCH', 5_000, 'cloud read killed');

    for (const call of [c.cloudRead, c.cloudWrite]) {
      const denied = await gw.decide(tok.raw, call);
      expect(denied, call.tool).toMatchObject({ decision: 'deny', code: 'KILL_SWITCH' });
      expect(denied.message).toMatch(/^mcp\.cloud\.infra is off: /);
      expect(await auditFlags(denied.decision_id)).toMatchObject({ 'mcp.cloud.infra': false });
    }
    for (const other of [c.shell, c.dbRead]) expect((await gw.decide(tok.raw, other)).code, other.tool).toBe('OK');
  });
});
