import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { CallContext, DecisionInput, ResolvedCall } from '../../src/decisions/types.js';
import { createFlagStep } from '../../src/flags/step.js';
import { resolveCall } from '../../src/policy/index.js';
import type { AgentPrincipal } from '../../src/tokens/authenticator.js';
import type { TokenType } from '../../src/tokens/format.js';
import type { Environment } from '../../src/tokens/store.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { restoreFlag, testAdmin, until } from '../helpers/unleash.js';

// The flag step against the run's real unleash-server, flags toggled through its admin API. Polling only
// here (no listener on the webhook port), so the bound is the polling target: toggle → deny ≤ 2.5 s.
const POLL_TARGET_MS = 2_500;

const unleash = inject('unleash');
const admin = testAdmin(unleash);
const env = unleash.environment;
const ctx = new TestContext();
let app: FastifyInstance;
const touched = new Set<string>();

function agent(tokenType: TokenType, environment: Environment = 'development', role = 'code_agent'): AgentPrincipal {
  return { kind: 'agent', id: `tok-${tokenType}-${environment}`, tokenType, scopes: [], role, projectId: 'proj-a', environment, displayPrefix: `mcp_${tokenType}_x`, expiresAt: null };
}

function callContext(a: AgentPrincipal, input: Partial<DecisionInput> & { server: string; tool: string }, call?: ResolvedCall): CallContext {
  const full: DecisionInput = { arguments: {}, session_id: 'sess-1', ...input };
  let resolved = call;
  if (!resolved) {
    const r = resolveCall(app.ctx.policy.current(), full);
    if (!('call' in r)) throw new Error(`test call not resolvable: ${r.denial.message}`);
    resolved = r.call;
  }
  return {
    decisionId: 'd-1',
    receivedAt: Date.now(),
    gateway: { kind: 'gateway', id: 'gw-1', name: 'test gateway', expiresAt: null },
    agent: a,
    input: full,
    ip: '127.0.0.1',
    call: resolved,
    flagsEvaluated: [],
    limits: {},
    warnings: [],
    dryRun: false,
    trace: [],
  };
}

async function run(c: CallContext) {
  return createFlagStep(app.ctx.flags).run(c);
}

const writeFile = () => callContext(agent('rw'), { server: 'filesystem', tool: 'write_file', arguments: { path: '/tmp/ks-demo/a.md' } });
const readFile = () => callContext(agent('rw'), { server: 'filesystem', tool: 'read_file', arguments: { path: '/tmp/ks-demo/a.md' } });

async function turnOff(flag: string) {
  touched.add(flag);
  await admin.setEnabled(flag, env, false);
}

async function addConstraint(flag: string, constraint: { contextName: string; operator: string; values: string[] }) {
  touched.add(flag);
  const [s] = await admin.getStrategies(flag, env);
  if (!s?.id) throw new Error(`${flag} has no strategy`);
  await admin.updateStrategy(flag, env, s.id, { ...s, constraints: [...(s.constraints ?? []), constraint] });
}

beforeAll(async () => {
  await ctx.setup();
  app = await ctx.app();
  expect(app.ctx.flags.isReady()).toBe(true);
});

afterEach(async () => {
  for (const flag of touched) await restoreFlag(unleash, flag);
  const restored = [...touched];
  touched.clear();
  // Wait until the instance sees them on again, so tests do not leak into each other.
  for (const flag of restored) await until(() => app.ctx.flags.isEnabled(flag, { userId: 'x', properties: { tokenType: 'rw', mcpEnvironment: 'development' } }), 10_000, `${flag} on again`);
});

afterAll(async () => {
  await ctx.teardown();
});

describe('flag step (real unleash-server)', () => {
  it('allows when every flag is on and records exactly the flags of the call', async () => {
    const c = callContext(agent('rw'), { server: 'postgres', tool: 'execute_sql' });
    expect(c.call?.capability).toBe('write');
    expect(await run(c)).toBeUndefined();
    expect(c.flagsEvaluated).toEqual([
      { name: 'mcp.enabled', enabled: true },
      { name: 'mcp.tokens.rw', enabled: true },
      { name: 'mcp.postgres.write', enabled: true },
      { name: 'mcp.database.write', enabled: true },
    ]);
  });

  // How fast a toggle reaches decisions is measured by `npm run bench:killswitch`, not here.
  it('turning mcp.filesystem.write off denies filesystem writes with KILL_SWITCH; reads stay allowed', async () => {
    expect(await run(writeFile())).toBeUndefined();
    await turnOff('mcp.filesystem.write');
    await until(async () => (await run(writeFile()))?.code === 'KILL_SWITCH', 10_000, 'write denied');
    const c = writeFile();
    const denial = await run(c);
    expect(denial?.code).toBe('KILL_SWITCH');
    expect(denial?.message).toBe('mcp.filesystem.write is off: Filesystem writes by agents (create, edit, move files).');
    expect(c.flagsEvaluated).toContainEqual({ name: 'mcp.filesystem.write', enabled: false });
    expect(await run(readFile())).toBeUndefined();
    // Another server's writes are unaffected.
    expect(await run(callContext(agent('rw'), { server: 'memory', tool: 'create_entities' }))).toBeUndefined();
  });

  it('a tokenType constraint on mcp.enabled kills only mcp_rw_ tokens', async () => {
    await addConstraint('mcp.enabled', { contextName: 'tokenType', operator: 'NOT_IN', values: ['rw'] });
    await until(async () => (await run(readFile()))?.code === 'KILL_SWITCH', POLL_TARGET_MS + 1_000, 'rw denied');
    const denial = await run(readFile());
    expect(denial?.message).toMatch(/^mcp\.enabled is off for this call: /);
    expect(await run(callContext(agent('ro'), { server: 'filesystem', tool: 'read_file' }))).toBeUndefined();
    expect(await run(callContext(agent('admin'), { server: 'filesystem', tool: 'write_file' }))).toBeUndefined();
  });

  it('dry run (explain): the same verdicts as a real call, constraints included, with nothing counted in Unleash usage metrics', async () => {
    await addConstraint('mcp.enabled', { contextName: 'tokenType', operator: 'NOT_IN', values: ['rw'] });
    await until(async () => (await run(readFile()))?.code === 'KILL_SWITCH', POLL_TARGET_MS + 1_000, 'rw denied');
    const dry = (c: CallContext) => Object.assign(c, { dryRun: true });
    const counted: string[] = [];
    const stop = app.ctx.flags.onUsageCount((name) => counted.push(name));
    try {
      const denied = dry(readFile());
      expect(await run(denied)).toMatchObject({ code: 'KILL_SWITCH', message: expect.stringMatching(/^mcp\.enabled is off for this call: /) });
      expect(denied.flagsEvaluated).toEqual([
        { name: 'mcp.enabled', enabled: false },
        { name: 'mcp.tokens.rw', enabled: true },
        { name: 'mcp.filesystem.read', enabled: true },
      ]);
      // Through the SDK's strategies (the constraint lets ro tokens through), still uncounted.
      const allowed = dry(callContext(agent('ro'), { server: 'filesystem', tool: 'read_file' }));
      expect(await run(allowed)).toBeUndefined();
      expect(allowed.flagsEvaluated[0]).toEqual({ name: 'mcp.enabled', enabled: true });
      expect(counted).toEqual([]);
      // A real call counts each of its flags once: asking why one is off counts nothing more.
      expect((await run(readFile()))?.code).toBe('KILL_SWITCH');
      expect(counted).toEqual(['mcp.enabled', 'mcp.tokens.rw', 'mcp.filesystem.read']);
    } finally {
      stop();
    }
  });

  it('an mcpEnvironment constraint lets development through and denies production', async () => {
    await addConstraint('mcp.github.api', { contextName: 'mcpEnvironment', operator: 'IN', values: ['development'] });
    const prod = () => callContext(agent('rw', 'production'), { server: 'github', tool: 'create_issue' });
    await until(async () => (await run(prod()))?.code === 'KILL_SWITCH', POLL_TARGET_MS + 1_000, 'production denied');
    const c = prod();
    expect((await run(c))?.message).toMatch(/^mcp\.github\.api is off for this call/);
    expect(c.flagsEvaluated.find((f) => f.name === 'mcp.github.api')).toEqual({ name: 'mcp.github.api', enabled: false });
    expect(await run(callContext(agent('rw', 'development'), { server: 'github', tool: 'create_issue' }))).toBeUndefined();
  });

  it('a role constraint kills one role only', async () => {
    await addConstraint('mcp.enabled', { contextName: 'role', operator: 'NOT_IN', values: ['database_agent'] });
    const db = () => callContext(agent('rw', 'development', 'database_agent'), { server: 'postgres', tool: 'query' });
    await until(async () => (await run(db()))?.code === 'KILL_SWITCH', POLL_TARGET_MS + 1_000, 'database_agent denied');
    expect(await run(callContext(agent('rw', 'development', 'code_agent'), { server: 'postgres', tool: 'query' }))).toBeUndefined();
  });

  it('turning mcp.database.write off denies writes on the policy postgres server (extra flag), reads stay allowed', async () => {
    await turnOff('mcp.database.write');
    const write = () => callContext(agent('admin'), { server: 'postgres', tool: 'execute_sql' });
    await until(async () => (await run(write()))?.code === 'KILL_SWITCH', POLL_TARGET_MS + 1_000, 'postgres write denied');
    const c = write();
    expect((await run(c))?.message).toMatch(/^mcp\.database\.write is off: /);
    expect(c.flagsEvaluated.map((f) => f.name)).toEqual(['mcp.enabled', 'mcp.tokens.admin', 'mcp.postgres.write', 'mcp.database.write']);
    expect(await run(callContext(agent('admin'), { server: 'postgres', tool: 'query' }))).toBeUndefined();
  });

  it('with two flags of a call off, the denial names the first in check order (the token type before the server)', async () => {
    await turnOff('mcp.filesystem.write');
    await turnOff('mcp.tokens.rw');
    const bothOff = async () => {
      const probe = writeFile();
      await run(probe);
      return probe.flagsEvaluated.filter((f) => !f.enabled).length === 2;
    };
    await until(bothOff, POLL_TARGET_MS + 1_000, 'both off');
    const c = writeFile();
    expect((await run(c))?.message).toMatch(/^mcp\.tokens\.rw is off: /);
    // Every flag of the call is still evaluated and recorded for the audit trail.
    expect(c.flagsEvaluated).toEqual([
      { name: 'mcp.enabled', enabled: true },
      { name: 'mcp.tokens.rw', enabled: false },
      { name: 'mcp.filesystem.write', enabled: false },
    ]);
  });

  it('turning mcp.tokens.ro off denies every read-only token and nothing else', async () => {
    await turnOff('mcp.tokens.ro');
    await until(async () => (await run(callContext(agent('ro'), { server: 'memory', tool: 'read_graph' })))?.code === 'KILL_SWITCH', POLL_TARGET_MS + 1_000, 'ro denied');
    expect(await run(callContext(agent('rw'), { server: 'memory', tool: 'read_graph' }))).toBeUndefined();
  });

  it('a server whose flags do not exist in Unleash is denied (a missing flag is off)', async () => {
    const call: ResolvedCall = {
      server: 'brand-new-server',
      serverClass: 'storage',
      tool: 'read_thing',
      requiredScope: 'storage:read',
      capability: 'read',
      scopeSource: 'map',
      extraFlags: [],
      resourceIds: ['brand-new-server:read_thing'],
      networkIdentities: [],
    };
    const c = callContext(agent('rw'), { server: 'brand-new-server', tool: 'read_thing' }, call);
    const denial = await run(c);
    expect(denial?.code).toBe('KILL_SWITCH');
    expect(denial?.message).toMatch(/^mcp\.brand-new-server\.read is off: the flag does not exist in Unleash/);
    expect(denial?.message).toContain('It was deleted or archived in Unleash, or never created');
    expect(denial?.message).toContain('a deleted one comes back OFF');
    expect(c.flagsEvaluated).toContainEqual({ name: 'mcp.brand-new-server.read', enabled: false });
    // Same for an extra flag the policy names that nobody created.
    const c2 = callContext(agent('rw'), { server: 'memory', tool: 'read_graph' });
    c2.call = { ...c2.call!, extraFlags: ['mcp.never.created'] };
    expect((await run(c2))?.code).toBe('KILL_SWITCH');
  });

  it('GET /v1/flags shows the state in force, the per-context evaluation and the last fetch', async () => {
    const viewer = await ctx.operatorKey(app, 'viewer');
    const turnedOffAt = Date.now();
    await turnOff('mcp.memory.delete');
    await until(() => !app.ctx.flags.isEnabled('mcp.memory.delete', { userId: 'x' }), POLL_TARGET_MS + 1_000, 'memory.delete off');
    const res = await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({ environment: 'development', ready: true, source: 'poll', stale: false });
    // The state shown (the flag off) came from a fetch made after the toggle, and its age counts from that fetch.
    const answeredAt = Date.now();
    expect(Date.parse(body.last_fetch_at)).toBeGreaterThanOrEqual(turnedOffAt);
    expect(Date.parse(body.last_fetch_at)).toBeLessThanOrEqual(answeredAt);
    expect(body.age_s).toBeGreaterThanOrEqual(0);
    expect(body.age_s).toBeLessThanOrEqual(Math.ceil((answeredAt - turnedOffAt) / 1000));
    expect(body.fetch_failing).toBe(false);
    const byName = new Map(body.flags.map((f: { name: string }) => [f.name, f]));
    expect(byName.get('mcp.memory.delete')).toMatchObject({ enabled: false, source: 'poll', evaluations: { rw: { development: false, production: false } } });
    expect(byName.get('mcp.enabled')).toMatchObject({ enabled: true, description: expect.stringMatching(/All MCP tool calls/), evaluations: { ro: { development: true, staging: true, production: true } } });
    for (const s of unleash.servers) for (const cap of ['read', 'write', 'delete']) expect(byName.has(`mcp.${s}.${cap}`)).toBe(true);
    // Operators only.
    expect((await app.inject({ method: 'GET', url: '/v1/flags' })).statusCode).toBe(401);
  });

  it('GET /v1/flags: a kill of one token (userId constraint) leaves enabled and evaluations true, and shows as that constraint, listed', async () => {
    const viewer = await ctx.operatorKey(app, 'viewer');
    const killed = agent('rw');
    await addConstraint('mcp.enabled', { contextName: 'userId', operator: 'NOT_IN', values: [killed.id] });
    const call = () => callContext(killed, { server: 'memory', tool: 'read_graph' });
    await until(async () => (await run(call()))?.code === 'KILL_SWITCH', POLL_TARGET_MS + 1_000, 'the token is denied');
    expect(await run(callContext(agent('ro'), { server: 'memory', tool: 'read_graph' }))).toBeUndefined();
    const body = (await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json();
    const byName = new Map(body.flags.map((f: { name: string }) => [f.name, f]));
    // What enabled and evaluations cannot show (they evaluate a made-up token), the count does, and the constraint itself.
    expect(byName.get('mcp.enabled')).toMatchObject({ enabled: true, constraints: 1, evaluations: { rw: { development: true, staging: true, production: true } } });
    expect(byName.get('mcp.enabled')).toMatchObject({
      active_strategies: [
        {
          name: 'flexibleRollout',
          parameters: { rollout: '100' },
          constraints: [{ context_name: 'userId', operator: 'NOT_IN', values: [killed.id], values_total: 1, value: null, inverted: false, case_insensitive: false }],
          segments: [],
        },
      ],
    });
    expect(byName.get('mcp.memory.read')).toMatchObject({ enabled: true, constraints: 0, active_strategies: [{ constraints: [] }] });
  });

  it("GET /v1/flags: a key limited to projects sees no other project's token, session or project in a constraint, only how many were withheld", async () => {
    const gw = await new GatewayDriver(ctx, app).init();
    const alpha = await gw.token('rw', { project: 'alpha' });
    const beta = await gw.token('rw', { project: 'beta' });
    const alphaSession = (await gw.session(alpha.raw)).session_id;
    const betaSession = (await gw.session(beta.raw)).session_id;
    const gone = '0190a1b2-0000-7000-8000-000000000000'; // a UUID no token has: it names nothing this key may see
    await addConstraint('mcp.memory.write', { contextName: 'userId', operator: 'NOT_IN', values: [beta.id, alpha.id.toUpperCase(), gone, 'tok-by-hand'] });
    await addConstraint('mcp.memory.write', { contextName: 'projectId', operator: 'NOT_IN', values: ['beta', 'alpha'] });
    await addConstraint('mcp.memory.write', { contextName: 'sessionId', operator: 'NOT_IN', values: [betaSession, alphaSession] });
    await addConstraint('mcp.memory.write', { contextName: 'role', operator: 'NOT_IN', values: ['beta_only_role'] });
    const limited = await ctx.operatorKey(app, 'viewer', ['alpha']);
    const everyProject = await ctx.operatorKey(app, 'viewer');
    const constraintsSeenBy = async (key: string) => {
      const body = (await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(key) })).json();
      const [strategy] = body.flags.find((f: { name: string }) => f.name === 'mcp.memory.write').active_strategies;
      return strategy.constraints.map((c: { context_name: string; values: string[]; values_withheld: number; values_total: number }) => [c.context_name, c.values, c.values_withheld, c.values_total]);
    };
    await until(async () => (await constraintsSeenBy(everyProject)).length === 4, POLL_TARGET_MS + 1_000, 'the four constraints polled');
    expect(await constraintsSeenBy(everyProject)).toEqual([
      ['userId', [beta.id, alpha.id.toUpperCase(), gone, 'tok-by-hand'], 0, 4],
      ['projectId', ['beta', 'alpha'], 0, 2],
      ['sessionId', [betaSession, alphaSession], 0, 2],
      ['role', ['beta_only_role'], 0, 1],
    ]);
    // Its own token (in whatever case Unleash holds it), project and session; the rest counted. Policy names stay.
    expect(await constraintsSeenBy(limited)).toEqual([
      ['userId', [alpha.id.toUpperCase()], 3, 4],
      ['projectId', ['alpha'], 1, 2],
      ['sessionId', [alphaSession], 1, 2],
      ['role', ['beta_only_role'], 0, 1],
    ]);
    expect(JSON.stringify((await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(limited) })).json())).not.toMatch(new RegExp(`${beta.id}|${betaSession}|"beta"`, 'i'));
  });

  it('GET /v1/flags lists the first 20 values of a long constraint and how many there are', async () => {
    const viewer = await ctx.operatorKey(app, 'viewer');
    const tokens = Array.from({ length: 25 }, (_v, i) => `tok-runaway-${i}`);
    await addConstraint('mcp.memory.write', { contextName: 'userId', operator: 'NOT_IN', values: tokens });
    const blocked = { ...agent('rw'), id: 'tok-runaway-24' };
    await until(async () => (await run(callContext(blocked, { server: 'memory', tool: 'create_entities' })))?.code === 'KILL_SWITCH', POLL_TARGET_MS + 1_000, 'the last token denied');
    const body = (await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json();
    const flag = body.flags.find((f: { name: string }) => f.name === 'mcp.memory.write');
    expect(flag.active_strategies[0].constraints).toEqual([
      { context_name: 'userId', operator: 'NOT_IN', values: tokens.slice(0, 20), values_total: 25, values_withheld: 0, value: null, inverted: false, case_insensitive: false },
    ]);
  });

  it("GET /v1/flags counts nothing in Unleash's usage metrics (an open Flags page asks every 2 s); a call does", async () => {
    const viewer = await ctx.operatorKey(app, 'viewer');
    // A constraint sends mcp.enabled through the SDK's strategy evaluation, the others take the index.
    await addConstraint('mcp.enabled', { contextName: 'tokenType', operator: 'NOT_IN', values: ['rw'] });
    // A token no earlier test's constraint names: denied only once this constraint is polled.
    const fresh = () => callContext({ ...agent('rw'), id: 'tok-usage-metrics' }, { server: 'filesystem', tool: 'read_file', arguments: { path: '/tmp/ks-demo/a.md' } });
    await until(async () => (await run(fresh()))?.code === 'KILL_SWITCH', POLL_TARGET_MS + 1_000, 'rw denied');
    const counted: string[] = [];
    const stop = app.ctx.flags.onUsageCount((name) => counted.push(name));
    try {
      const res = await app.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) });
      expect(res.statusCode).toBe(200);
      const enabled = res.json().flags.find((f: { name: string }) => f.name === 'mcp.enabled');
      expect(enabled.evaluations).toEqual({
        ro: { development: true, staging: true, production: true },
        rw: { development: false, staging: false, production: false },
        admin: { development: true, staging: true, production: true },
      });
      expect(res.json().flags.length).toBeGreaterThan(10);
      expect(counted).toEqual([]);
      expect((await run(fresh()))?.code).toBe('KILL_SWITCH');
      expect(counted).toEqual(['mcp.enabled', 'mcp.tokens.rw', 'mcp.filesystem.read']);
    } finally {
      stop();
    }
  });
});
