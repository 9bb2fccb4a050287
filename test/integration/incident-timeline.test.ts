import { parse } from 'csv-parse/sync';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// A scripted incident, step by step through the HTTP API, then GET /v1/incidents/timeline must list its
// events in that order, filtered by target, and export them.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  // buildApp returns before the first state-epoch reload is done; sessions answer 503 until it is.
  await app.ctx.sessions.ensureState();
  gw = await new GatewayDriver(t, app).init();
});
afterAll(async () => {
  for (const l of t.logs.lines) if (l.includes('unhandled error')) console.error(l.slice(0, 2000));
  await t.teardown();
});

const write = (path: string) => ({ server: 'filesystem', tool: 'write_file', arguments: { path, content: 'x' } });
const memoryRead = { server: 'memory', tool: 'read_graph', arguments: {} };
// Distinct milliseconds between steps, so the expected order does not rest on tie-breaking.
const tick = () => new Promise((r) => setTimeout(r, 5));

interface Ev {
  at: string;
  type: string;
  summary: string;
  code: string | null;
  server: string | null;
  token_id: string | null;
  kill_id: string | null;
}

async function timeline(query: Record<string, string>) {
  const res = await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query, headers: bearer(gw.owner) });
  expect(res.statusCode, res.body).toBe(200);
  return res;
}

describe('GET /v1/incidents/timeline', () => {
  let from = '';
  let to = '';
  let agent: { raw: string; id: string };
  let killId = '';
  const steps: Array<{ name: string; match: (e: Ev) => boolean }> = [];

  it('lists the events of a scripted incident in the order they happened', async () => {
    from = new Date().toISOString();
    await tick();
    agent = await gw.token('rw', { project: 'inc' });
    const reader = await gw.token('ro', { project: 'inc' });
    const other = await gw.token('ro', { project: 'inc' });
    const s = (await gw.session(agent.raw)).session_id;
    const sReader = (await gw.session(reader.raw)).session_id;

    // 1. The agent writes (allowed).
    const ok = await gw.decide(agent.raw, { ...write('docs/a.md'), session_id: s });
    expect(ok.code).toBe('OK');
    steps.push({ name: 'allowed write', match: (e) => e.type === 'decision' && e.code === 'OK' && e.token_id === agent.id && e.server === 'filesystem' });
    await tick();

    // 2. An operator turns a flag off in Unleash; the webhook reports it.
    const hook = await app.inject({
      method: 'POST',
      url: '/v1/flags/events',
      headers: { authorization: app.ctx.config.unleashWebhookSecret },
      payload: { type: 'feature-environment-disabled', featureName: 'mcp.memory.read', environment: app.ctx.config.unleashEnvironment },
    });
    expect(hook.json().result).toBe('denied');
    steps.push({ name: 'flag change', match: (e) => e.type === 'flag_change' && e.summary.includes('mcp.memory.read') });
    await tick();

    // 3. The flag denies a call.
    expect((await gw.decide(agent.raw, { ...memoryRead, session_id: s })).code).toBe('KILL_SWITCH');
    steps.push({ name: 'flag denial', match: (e) => e.type === 'denial' && e.code === 'KILL_SWITCH' && e.server === 'memory' });
    await tick();

    // 4. Contain: kill the filesystem server.
    const kill = await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'server', server: 'filesystem', reason: 'INC-8 contain' } });
    killId = kill.json().kill.id;
    steps.push({ name: 'kill', match: (e) => e.type === 'kill' && e.kill_id === killId });
    steps.push({ name: 'kill alert', match: (e) => e.type === 'alert' && e.summary.startsWith('KILL_CREATED') && e.kill_id === killId });
    await tick();

    // 5. The kill denies the agent's next write.
    expect((await gw.decide(agent.raw, { ...write('docs/b.md'), session_id: s })).code).toBe('KILL_SWITCH');
    steps.push({ name: 'kill denial', match: (e) => e.type === 'denial' && e.code === 'KILL_SWITCH' && e.server === 'filesystem' });
    await tick();

    // 6. A read-only token tries to write: halted (a denial and an alert).
    expect((await gw.decide(reader.raw, { server: 'memory', tool: 'create_entities', arguments: { entities: [] }, session_id: sReader })).session?.state).toBe('halted');
    steps.push({ name: 'halt denial', match: (e) => e.type === 'denial' && e.token_id === reader.id && e.code === 'PERMISSION_DENIED' });
    steps.push({ name: 'halt alert', match: (e) => e.type === 'alert' && e.summary.startsWith('SESSION_HALTED') && e.token_id === reader.id });
    await tick();

    // 7. Remediate: revoke the agent's token, rotate another one, resume the halted token.
    expect((await app.inject({ method: 'POST', url: `/v1/keys/${agent.id}/revoke`, headers: bearer(gw.owner), payload: { reason: 'INC-8 compromised' } })).statusCode).toBe(200);
    steps.push({ name: 'revocation', match: (e) => e.type === 'revocation' && e.token_id === agent.id });
    await tick();
    expect((await app.inject({ method: 'POST', url: `/v1/keys/${other.id}/rotate`, headers: bearer(gw.owner), payload: { grace_seconds: 60, reason: 'INC-8 rotate' } })).statusCode).toBe(201);
    steps.push({ name: 'rotation', match: (e) => e.type === 'rotation' && e.token_id === other.id });
    await tick();
    expect((await app.inject({ method: 'POST', url: `/v1/keys/${reader.id}/resume`, headers: bearer(gw.owner), payload: { reason: 'INC-8 reviewed' } })).statusCode).toBe(200);
    steps.push({ name: 'resume', match: (e) => e.type === 'resume' && e.token_id === reader.id });
    await tick();

    // 8. Lift the kill.
    expect((await app.inject({ method: 'DELETE', url: `/v1/kills/${killId}`, headers: bearer(gw.owner), payload: { reason: 'INC-8 over' } })).statusCode).toBe(200);
    steps.push({ name: 'lift', match: (e) => e.type === 'kill_lifted' && e.kill_id === killId });
    await tick();
    to = new Date(Date.now() + 1).toISOString();

    await app.ctx.audit.writer.flush();
    const body = (await timeline({ from, to })).json();
    const events = body.events as Ev[];
    expect(body.truncated).toBe(false);
    // Oldest first (an alert a decision raised is listed right after that decision, even if stored a moment earlier).
    const notAlerts = events.filter((e) => e.type !== 'alert').map((e) => e.at);
    expect(notAlerts).toEqual([...notAlerts].sort());
    const positions = steps.map((st) => ({ name: st.name, at: events.findIndex(st.match) }));
    for (const p of positions) expect(p.at, `${p.name} is on the timeline`).toBeGreaterThanOrEqual(0);
    expect(positions.map((p) => p.name)).toEqual([...positions].sort((x, y) => x.at - y.at).map((p) => p.name));
    expect(body.counts).toMatchObject({ kill: 1, kill_lifted: 1, revocation: 1, rotation: 1, resume: 1 });
  });

  it('narrows to a target: a server timeline has its calls and the kills that covered it, not other servers’ calls', async () => {
    const events = (await timeline({ from, to, target: 'server:filesystem' })).json().events as Ev[];
    expect(events.some((e) => e.type === 'kill' && e.kill_id === killId)).toBe(true);
    expect(events.some((e) => e.type === 'denial' && e.server === 'filesystem')).toBe(true);
    expect(events.some((e) => e.type === 'denial' && e.server === 'memory')).toBe(false);
    // The memory flag is another server's: not on the filesystem timeline.
    expect(events.some((e) => e.type === 'flag_change')).toBe(false);

    const byToken = (await timeline({ from, to, target: `token:${agent.id}` })).json().events as Ev[];
    expect(byToken.filter((e) => e.type === 'decision' || e.type === 'denial').every((e) => e.token_id === agent.id)).toBe(true);
    expect(byToken.some((e) => e.type === 'revocation')).toBe(true);
    expect(byToken.some((e) => e.type === 'kill')).toBe(false); // a server kill does not name the token

    const denialsOnly = (await timeline({ from, to, decisions: 'denials' })).json().events as Ev[];
    expect(denialsOnly.some((e) => e.type === 'decision')).toBe(false);
    expect(denialsOnly.some((e) => e.type === 'denial')).toBe(true);

    expect((await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { target: 'token:0190aaaa-0000-7000-8000-000000000000' }, headers: bearer(gw.owner) })).statusCode).toBe(404);
    expect((await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { target: 'nonsense' }, headers: bearer(gw.owner) })).statusCode).toBe(400);
    expect((await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { target: 'token:not-a-uuid' }, headers: bearer(gw.owner) })).statusCode).toBe(400);
    expect((await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { from: to, to: from }, headers: bearer(gw.owner) })).statusCode).toBe(400);
  });

  it('exports the same events as JSON Lines and CSV; limit truncates and says so', async () => {
    const json = (await timeline({ from, to })).json();
    const jsonl = await timeline({ from, to, format: 'jsonl' });
    expect(jsonl.headers['content-type']).toContain('application/x-ndjson');
    expect(jsonl.headers['content-disposition']).toContain('attachment');
    const lines = jsonl.body.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toEqual(json.events);
    const csv = await timeline({ from, to, format: 'csv' });
    expect(csv.headers['content-type']).toContain('text/csv');
    const rows = parse(csv.body, { columns: true }) as Array<Record<string, string>>;
    expect(rows.map((r) => [r['at'], r['type'], r['id']])).toEqual(json.events.map((e: Ev & { id: string }) => [e.at, e.type, e.id]));

    const cut = (await timeline({ from, to, limit: '3' })).json();
    expect(cut.events).toEqual(json.events.slice(0, 3));
    expect(cut.truncated).toBe(true);
  });

  it('a truncated export says so: X-Truncated, and a last line (JSON Lines) or row (CSV) naming where the rest starts', async () => {
    const all = (await timeline({ from, to })).json();
    expect(all.events.length).toBeGreaterThan(3);
    const third = all.events[2] as Ev;

    const whole = await timeline({ from, to, format: 'jsonl' });
    expect(whole.headers['x-truncated']).toBe('false');
    expect(whole.body).not.toContain('truncated');
    expect((await timeline({ from, to, limit: '3' })).headers['x-truncated']).toBe('true');

    const jsonl = await timeline({ from, to, format: 'jsonl', limit: '3' });
    expect(jsonl.headers['x-truncated']).toBe('true');
    const lines = jsonl.body.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(4);
    expect(lines.slice(0, 3)).toEqual(all.events.slice(0, 3));
    expect(lines[3]).toMatchObject({ type: 'truncated', at: third.at, limit: 3 });
    expect(lines[3].summary).toContain('TRUNCATED: this export holds only the first 3 events (limit=3)');
    expect(lines[3].summary).toContain(`ask again with from=${third.at}`);
    expect(lines[3].summary).toContain('at most 50000');

    const csv = await timeline({ from, to, format: 'csv', limit: '3' });
    expect(csv.headers['x-truncated']).toBe('true');
    const rows = parse(csv.body, { columns: true }) as Array<Record<string, string>>;
    expect(rows).toHaveLength(4);
    expect(rows.slice(0, 3).map((r) => r['id'])).toEqual(all.events.slice(0, 3).map((e: Ev & { id: string }) => e.id));
    expect(rows[3]).toMatchObject({ at: third.at, type: 'truncated', id: '' });
    expect(rows[3]!['summary']).toContain(`TRUNCATED: this export holds only the first 3 events`);
    expect(rows[3]!['summary']).toContain(`from=${third.at}`);
  });

  it('a key limited to the project sees its events and the installation-wide flag change, not other projects', async () => {
    const limited = await t.operatorKey(app, 'viewer', ['inc']);
    const res = await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { from, to }, headers: bearer(limited) });
    expect(res.statusCode).toBe(200);
    const events = res.json().events as Array<Ev & { source: string; project_id: string | null }>;
    expect(events.some((e) => e.type === 'flag_change' && e.source === 'audit' && e.summary.includes('mcp.memory.read'))).toBe(true);
    expect(events.some((e) => e.type === 'decision' && e.token_id === agent.id)).toBe(true);
    expect(events.filter((e) => e.source === 'audit' && e.project_id !== null).every((e) => e.project_id === 'inc')).toBe(true);
  });

  it('a viewer may read it; agent tokens may not', async () => {
    const viewer = await t.operatorKey(app, 'viewer');
    expect((await app.inject({ method: 'GET', url: '/v1/incidents/timeline', headers: bearer(viewer) })).statusCode).toBe(200);
    const tok = await gw.token('ro');
    expect((await app.inject({ method: 'GET', url: '/v1/incidents/timeline', headers: bearer(tok.raw) })).json().error.code).toBe('MCP_TOKEN_FORBIDDEN');
  });
});

describe('GET /v1/incidents/timeline?target=session:<id> after records retention removed the session', () => {
  // RECORDS_RETENTION_DAYS (default 90) removes closed sessions; their decisions stay in audit_events for
  // AUDIT_RETENTION_DAYS (e.g. 365). The timeline of such a session comes from the audit trail.
  const retire = async (id: string) => {
    await app.ctx.pool.query(`UPDATE sessions SET state = 'closed', closed_at = now() - interval '120 days' WHERE id = $1`, [id]);
    // What the retention job's DELETE does to a closed session with no halt history.
    expect((await app.ctx.pool.query('DELETE FROM sessions WHERE id = $1', [id])).rowCount).toBe(1);
  };
  const get = (key: string, query: Record<string, string>) => app.inject({ method: 'GET', url: '/v1/incidents/timeline', query, headers: bearer(key) });

  it('lists a deleted session’s decisions from the audit trail; another project’s key and unknown ids get 404', async () => {
    const from = new Date().toISOString();
    await tick();
    const agent = await gw.token('rw', { project: 'ret' });
    const s = (await gw.session(agent.raw)).session_id;
    const ok = await gw.decide(agent.raw, { ...write('docs/kept.md'), session_id: s });
    expect(ok.code).toBe('OK');
    await tick();
    expect((await gw.decide(agent.raw, { ...memoryRead, session_id: s })).code).toBe('KILL_SWITCH'); // the flag turned off above
    // A session whose only call was denied before the gate checked the session (a flag denial).
    const denied = (await gw.session(agent.raw)).session_id;
    expect((await gw.decide(agent.raw, { ...memoryRead, session_id: denied })).code).toBe('KILL_SWITCH');
    // An id no session ever had, named by a call: its SESSION_UNKNOWN denial says nothing about whose it is.
    const never = '0190aaaa-0000-7000-8000-00000000abcd';
    expect((await gw.decide(agent.raw, { ...write('docs/x.md'), session_id: never })).code).toBe('SESSION_UNKNOWN');
    await app.ctx.audit.writer.flush();
    await retire(s);
    await retire(denied);
    const to = new Date(Date.now() + 1).toISOString();

    const res = await get(gw.owner, { from, to, target: `session:${s}` });
    expect(res.statusCode, res.body).toBe(200);
    const events = res.json().events as Array<Ev & { session_id: string | null; project_id: string | null }>;
    const calls = events.filter((e) => e.type === 'decision' || e.type === 'denial');
    expect(calls.map((e) => [e.type, e.code, e.session_id, e.token_id, e.project_id])).toEqual([
      ['decision', 'OK', s, agent.id, 'ret'],
      ['denial', 'KILL_SWITCH', s, agent.id, 'ret'],
    ]);
    // The same id in capitals names the same session.
    expect((await get(gw.owner, { from, to, target: `session:${s.toUpperCase()}` })).json().events).toEqual(events);
    // A window without its calls is an empty timeline, as for a session that still has its row.
    const later = await get(gw.owner, { from: to, to: new Date(Date.now() + 60_000).toISOString(), target: `session:${s}` });
    expect(later.statusCode, later.body).toBe(200);
    expect((later.json().events as Ev[]).filter((e) => e.type === 'decision' || e.type === 'denial')).toEqual([]);

    const onlyDenied = await get(gw.owner, { from, to, target: `session:${denied}` });
    expect(onlyDenied.statusCode, onlyDenied.body).toBe(200);
    expect((onlyDenied.json().events as Ev[]).filter((e) => e.type === 'denial').map((e) => e.token_id)).toEqual([agent.id]);

    // Project scoping still applies: a key of the session's project sees it, a key of another project does not.
    const same = await get(await t.operatorKey(app, 'viewer', ['ret']), { from, to, target: `session:${s}` });
    expect(same.statusCode, same.body).toBe(200);
    expect((same.json().events as Ev[]).filter((e) => e.type === 'decision').map((e) => e.token_id)).toEqual([agent.id]);
    const other = await get(await t.operatorKey(app, 'viewer', ['inc']), { from, to, target: `session:${s}` });
    expect(other.statusCode).toBe(404);
    expect(other.json().error.code).toBe('NOT_FOUND');
    expect(other.body).not.toContain(agent.id);

    for (const id of [never, '0190aaaa-0000-7000-8000-000000000000']) {
      const unknown = await get(gw.owner, { from, to, target: `session:${id}` });
      expect(unknown.statusCode, `${id}: ${unknown.body}`).toBe(404);
      expect(unknown.json().error.message).toBe('session not found');
    }
  });

  it('a deleted session named by another project\'s denied calls is not attributed to that project (404 while its rows disagree)', async () => {
    const from = new Date().toISOString();
    await tick();
    const owner = await gw.token('rw', { project: 'ret' });
    const s = (await gw.session(owner.raw)).session_id;
    expect((await gw.decide(owner.raw, { ...memoryRead, session_id: s })).code).toBe('KILL_SWITCH');
    // Another project's token names the same id; its call is denied before the gate checks whose it is.
    const intruder = await gw.token('rw', { project: 'inc' });
    expect((await gw.decide(intruder.raw, { ...memoryRead, session_id: s })).code).toBe('KILL_SWITCH');
    await app.ctx.audit.writer.flush();
    await retire(s);
    const to = new Date(Date.now() + 1).toISOString();
    for (const key of [await t.operatorKey(app, 'viewer', ['inc']), await t.operatorKey(app, 'viewer', ['ret'])]) {
      const res = await get(key, { from, to, target: `session:${s}` });
      expect(res.statusCode, res.body).toBe(404);
    }
  });
});

describe('GET /v1/incidents/timeline: kill reasons', () => {
  it('a kill recorded with its reasons in clear (before they were stored masked) shows them masked, in JSON, JSON Lines and CSV', async () => {
    const from = new Date().toISOString();
    const tok = await gw.token('ro', { project: 'kleak' });
    const github = `ghp_${'K3m4'.repeat(9)}`;
    const kill = await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'token', token_id: tok.id, reason: 'INC-77 contain' } });
    expect(kill.statusCode, kill.body).toBe(201);
    const id = kill.json().kill.id as string;
    expect((await app.inject({ method: 'DELETE', url: `/v1/kills/${id}`, headers: bearer(gw.owner), payload: { reason: 'INC-77 over' } })).statusCode).toBe(200);
    await t.pool().query('UPDATE kills SET reason = $2, lift_reason = $3 WHERE id = $1', [id, `INC-77 ${gw.gatewayKey} leaked`, `rotated ${github}`]);
    await tick();
    const query = { from, to: new Date().toISOString(), target: `token:${tok.id}` };

    const events = ((await timeline(query)).json().events as Ev[]).filter((e) => e.kill_id === id && (e.type === 'kill' || e.type === 'kill_lifted'));
    expect(events.map((e) => e.type)).toEqual(['kill', 'kill_lifted']);
    expect(events[0]!.summary).toContain('INC-77 ksgw_[REDACTED] leaked');
    for (const format of [undefined, 'jsonl', 'csv']) {
      const body = (await timeline(format ? { ...query, format } : query)).body;
      for (const secret of [gw.gatewayKey, github]) expect(body, format).not.toContain(secret);
      expect(body, format).toContain('[REDACTED]');
    }
  });
});

describe('GET /v1/incidents/timeline: a flag turned back on', () => {
  it('is a flag change on the timeline of everyone, project-limited keys included, like the flag turned off', async () => {
    const from = new Date().toISOString();
    const env = app.ctx.config.unleashEnvironment;
    const hook = (type: string) =>
      app.inject({ method: 'POST', url: '/v1/flags/events', headers: { authorization: app.ctx.config.unleashWebhookSecret }, payload: { type, featureName: 'mcp.fetch.read', environment: env } });
    expect((await hook('feature-environment-disabled')).statusCode).toBe(200);
    await tick();
    expect((await hook('feature-environment-enabled')).statusCode).toBe(200);
    const limited = await t.operatorKey(app, 'viewer', ['inc']);
    const flagEvents = async () => {
      const res = await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { from, to: new Date().toISOString() }, headers: bearer(limited) });
      expect(res.statusCode, res.body).toBe(200);
      return (res.json().events as Array<Ev & { source: string }>).filter((e) => e.source === 'alert' && e.summary.includes('mcp.fetch.read'));
    };
    await until(async () => (await flagEvents()).some((e) => e.summary.startsWith('FLAG_ENABLED')), 5_000, 'FLAG_ENABLED on the timeline');
    const events = await flagEvents();
    expect(events.map((e) => [e.type, e.summary.split(':')[0]])).toEqual([
      ['flag_change', 'FLAG_DISABLED'],
      ['flag_change', 'FLAG_ENABLED'],
    ]);
  });
});
