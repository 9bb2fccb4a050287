import { parse } from 'csv-parse/sync';
import type { FastifyInstance } from 'fastify';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { intentRow } from '../../src/audit/rows.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';
import { agentPrincipal, callContext, TestWriters } from './audit-fixtures.js';

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
  project_id: string | null;
  kill_id: string | null;
  actor: string | null;
}

async function timeline(query: Record<string, string>) {
  const res = await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query, headers: bearer(gw.owner) });
  expect(res.statusCode, res.body).toBe(200);
  return res;
}

interface Keyed {
  source: string;
  id: string;
  type: string;
}
/** One event's identity: a kill's id names its creation, lift and expiry, hence the type. */
const keysOf = (events: Keyed[]) => events.map((e) => `${e.source}:${e.id}:${e.type}`);

/** Follows `next` from the first page to the last (JSON), checking what every page says about the rest. */
async function walk(query: Record<string, string>, limit: number, repeat = false) {
  const events: Array<Ev & Keyed> = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    // Either the cursor alone (it carries the query) or the first query repeated with the cursor added.
    const q: Record<string, string> = cursor ? (repeat ? { ...query, cursor } : { cursor }) : query;
    const res = await timeline({ ...q, limit: String(limit) });
    const body = res.json();
    expect(body.events.length).toBeLessThanOrEqual(limit);
    expect(body.next !== null).toBe(body.truncated);
    expect(res.headers['x-truncated']).toBe(String(body.truncated));
    expect(res.headers['x-next-cursor']).toBe(body.next ?? undefined);
    if (body.truncated) expect(body.events.length).toBe(limit);
    events.push(...body.events);
    cursor = body.next;
    expect(++pages, 'the cursors end').toBeLessThan(200);
  } while (cursor);
  return { events, pages };
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
    // A project nothing names (a typo at 3 a.m.) is 404, not the installation-wide events alone; the project's
    // own name finds its events.
    const typo = await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { from, to, target: 'project:icn' }, headers: bearer(gw.owner) });
    expect(typo.statusCode, typo.body).toBe(404);
    expect(typo.json().error.message).toBe('project icn not found: no agent token or kill of a project this key can see names it');
    const byProject = (await timeline({ from, to, target: 'project:inc' })).json().events as Ev[];
    expect(byProject.some((e) => e.type === 'decision' && e.project_id === 'inc')).toBe(true);
    expect((await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { target: 'nonsense' }, headers: bearer(gw.owner) })).statusCode).toBe(400);
    expect((await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { target: 'token:not-a-uuid' }, headers: bearer(gw.owner) })).statusCode).toBe(400);
    expect((await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { from: to, to: from }, headers: bearer(gw.owner) })).statusCode).toBe(400);
  });

  it('names the operator of a kill and of its lift as it names the operator of an audit row: operator:<id> (<name>)', async () => {
    const events = (await timeline({ from, to })).json().events as Ev[];
    const revocation = events.find((e) => e.type === 'revocation' && e.token_id === agent.id);
    expect(revocation?.actor).toMatch(/^operator:[0-9a-f-]{36} \(.+\)$/);
    // The same owner key made, revoked and lifted: its kill events read as its audit rows do.
    expect(events.find((e) => e.type === 'kill' && e.kill_id === killId)?.actor).toBe(revocation?.actor);
    expect(events.find((e) => e.type === 'kill_lifted' && e.kill_id === killId)?.actor).toBe(revocation?.actor);
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
    expect(typeof cut.next).toBe('string');
    expect(json.next).toBeNull();
    // Following the cursors lists the whole window, each event once.
    const walked = await walk({ from, to }, 3);
    expect(walked.pages).toBeGreaterThan(1);
    expect(keysOf(walked.events).sort()).toEqual(keysOf(json.events).sort());
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
    expect(lines[3]).toMatchObject({ type: 'truncated', at: third.at, limit: 3, next: jsonl.headers['x-next-cursor'] });
    expect(lines[3].summary).toContain('TRUNCATED: this export holds only the first 3 events (limit=3)');
    expect(lines[3].summary).toContain(`ask again with cursor=${lines[3].next}`);
    expect(lines[3].summary).toContain('at most 50000');
    // The cursor of the file continues where it stopped: the fourth event first.
    const rest = await timeline({ cursor: lines[3].next, format: 'jsonl', limit: '1' });
    expect(JSON.parse(rest.body.split('\n')[0]!).id).toBe(all.events[3].id);
    expect(rest.body.split('\n')[1]).toContain('this export holds only the next 1 events');

    const csv = await timeline({ from, to, format: 'csv', limit: '3' });
    expect(csv.headers['x-truncated']).toBe('true');
    const rows = parse(csv.body, { columns: true }) as Array<Record<string, string>>;
    expect(rows).toHaveLength(4);
    expect(rows.slice(0, 3).map((r) => r['id'])).toEqual(all.events.slice(0, 3).map((e: Ev & { id: string }) => e.id));
    expect(rows[3]).toMatchObject({ at: third.at, type: 'truncated', id: '' });
    expect(rows[3]!['summary']).toContain(`TRUNCATED: this export holds only the first 3 events`);
    expect(rows[3]!['summary']).toContain(`cursor=${csv.headers['x-next-cursor']}`);
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

describe('GET /v1/incidents/timeline: continuing with `cursor` when many events share one millisecond', () => {
  // Two hours back, where no other test of this file writes: a window of known events. T is one
  // millisecond holding 31 events of every source, many more than `limit`; `from=<last at>` never gets
  // past it, the cursor must.
  const T = Math.floor(Date.now() / 1000) * 1000 - 2 * 3_600_000;
  const iso = (ms: number) => new Date(ms).toISOString();
  const from = iso(T - 5);
  const to = iso(T + 5);
  const agent = agentPrincipal({ projectId: 'cur' });
  const killIds: string[] = [];
  let expiredKill = '';
  const writers = new TestWriters(t.databaseUrl, t.name);
  let full: Array<Ev & Keyed> = [];

  beforeAll(async () => {
    // Audit rows written at exact times, as by another replica whose clock says T.
    let clock = T - 1;
    const writer = await writers.open({ clock: () => clock });
    const decide = (decision: 'allow' | 'deny') =>
      writer.recordIntent(intentRow(callContext({ agent, server: 'postgres' }), decision === 'allow' ? { decision, code: 'OK', message: 'allowed' } : { decision, code: 'KILL_SWITCH', message: 'killed' }));
    for (let i = 0; i < 2; i++) await decide('allow');
    clock = T;
    for (let i = 0; i < 12; i++) await decide(i % 3 === 0 ? 'deny' : 'allow');
    for (let i = 0; i < 3; i++) await writer.recordAdmin({ actor: 'operator:cursor', action: 'key.revoked', target: `agent_token:${uuidv7()}`, projectId: 'cur', details: { reason: 'INC-9' } });
    for (let i = 0; i < 3; i++) await writer.recordAdmin({ actor: 'operator:cursor', action: 'flag.disabled', target: 'flag:mcp.postgres.read' });
    clock = T + 1;
    for (let i = 0; i < 2; i++) await decide('allow');
    await writer.close();

    // Alerts at microseconds within T (Postgres keeps them; the timeline orders the millisecond by rank),
    // and one in the next millisecond.
    const db = t.pool();
    const alert = (kind: string, at: string, details: Record<string, unknown> = {}) =>
      db.query(`INSERT INTO alerts (id, kind, severity, project_id, server, details, message, created_at) VALUES ($1, $2, 'warning', 'cur', 'postgres', $3, $4, $5::timestamptz)`, [
        uuidv7(),
        kind,
        details,
        `${kind} at ${at}`,
        at,
      ]);
    const micro = (us: number) => `${iso(T).slice(0, -1)}${String(us).padStart(3, '0')}Z`;
    for (let i = 0; i < 5; i++) await alert('SESSION_HALTED', micro(100 + i * 200));
    for (let i = 0; i < 3; i++) await alert('FLAG_DISABLED', micro(950 - i * 300), { flag: 'mcp.postgres.read' });
    await alert('SESSION_HALTED', iso(T + 1));

    // Two kills created and lifted within T: each kill's two events share its id and their millisecond.
    for (let i = 0; i < 2; i++) {
      const kill = await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'server', server: 'postgres', reason: `INC-9 ${i}` } });
      expect(kill.statusCode, kill.body).toBe(201);
      const id = kill.json().kill.id as string;
      killIds.push(id);
      expect((await app.inject({ method: 'DELETE', url: `/v1/kills/${id}`, headers: bearer(gw.owner), payload: { reason: 'INC-9 over' } })).statusCode).toBe(200);
      await db.query(`UPDATE kills SET created_at = $2::timestamptz, lifted_at = $3::timestamptz WHERE id = $1`, [id, micro(400 + i), micro(800 + i)]);
    }
    // And one created within T that expired two milliseconds later, nobody lifting it (a row as the kill
    // service leaves it: its Redis key expired with it).
    expiredKill = uuidv7();
    await db.query(
      `INSERT INTO kills (id, target, target_key, server, reason, created_by, created_at, expires_at) VALUES ($1, 'server', 'server:postgres', 'postgres', 'INC-9 timed', 'operator:cursor', $2::timestamptz, $3::timestamptz)`,
      [expiredKill, micro(600), iso(T + 2)],
    );

    const whole = (await timeline({ from, to, limit: '50000' })).json();
    expect(whole).toMatchObject({ truncated: false, next: null });
    full = whole.events;
  });
  afterAll(() => writers.close());

  it('lists the millisecond in one total order: kills, operator actions, flag alerts, alerts, decisions', () => {
    expect(full).toHaveLength(2 + 18 + 8 + 5 + 2 + 1 + 1);
    const inT = full.filter((e) => e.at === iso(T));
    expect(inT).toHaveLength(31);
    const group = (e: Ev & Keyed) =>
      e.source === 'kill' ? 0 : e.source === 'audit' && e.type !== 'decision' && e.type !== 'denial' ? 1 : e.type === 'flag_change' ? 2 : e.type === 'alert' ? 3 : 4;
    const groups = inT.map(group);
    expect(groups).toEqual([...groups].sort());
    expect(groups.filter((g) => g === 0)).toHaveLength(5);
    // A kill's creation before its lift, though they share the millisecond and the id.
    for (const id of killIds) expect(inT.filter((e) => e.kill_id === id && e.source === 'kill').map((e) => e.type)).toEqual(['kill', 'kill_lifted']);
    expect(full.filter((e) => e.kill_id === expiredKill).map((e) => [e.type, e.at])).toEqual([
      ['kill', iso(T)],
      ['kill_expired', iso(T + 2)],
    ]);
    // Ties within a group by id, whatever the microseconds said.
    for (const g of [1, 2, 3, 4]) {
      const ids = inT.filter((e) => group(e) === g).map((e) => e.id);
      expect(ids).toEqual([...ids].sort());
    }
    expect(full.map((e) => e.at)).toEqual([...full.map((e) => e.at)].sort());
  });

  it('following `next` visits every event exactly once, in order, with a limit far below the millisecond', async () => {
    for (const limit of [1, 4, 7, 31]) {
      for (const repeat of [false, true]) {
        const { events, pages } = await walk({ from, to }, limit, repeat);
        expect(pages).toBe(Math.ceil(full.length / limit));
        expect(new Set(keysOf(events)).size).toBe(events.length);
        expect(keysOf(events)).toEqual(keysOf(full));
      }
    }
    // `from=<the last event's at>` still answers as before: the millisecond from its start, again.
    const first = (await timeline({ from, to, limit: '4' })).json();
    const again = (await timeline({ from: first.events[3].at, to, limit: '4' })).json();
    expect(again.events[0].at).toBe(iso(T));
    expect(keysOf(again.events)).toEqual(keysOf(full.filter((e) => e.at === iso(T)).slice(0, 4)));
  });

  it('a target narrows the walk the same way', async () => {
    const server = (await timeline({ from, to, target: 'server:postgres', limit: '50000' })).json().events as Array<Ev & Keyed>;
    expect(server.some((e) => e.source === 'kill')).toBe(true);
    const { events } = await walk({ from, to, target: 'server:postgres' }, 3);
    expect(keysOf(events)).toEqual(keysOf(server));
    const denials = (await timeline({ from, to, decisions: 'denials', limit: '50000' })).json().events as Array<Ev & Keyed>;
    expect(keysOf((await walk({ from, to, decisions: 'denials' }, 2)).events)).toEqual(keysOf(denials));
  });

  it('exports continue from their X-Next-Cursor header or their trailer line / row', async () => {
    // JSON Lines: the `next` of the `truncated` line.
    const lines: Array<Ev & Keyed & { next?: string }> = [];
    let cursor: string | undefined;
    for (let page = 0; page < 50; page++) {
      const res = await timeline({ ...(cursor ? { cursor } : { from, to }), format: 'jsonl', limit: '5' });
      const got = res.body.trim().split('\n').map((l) => JSON.parse(l));
      const trailer = got.at(-1)?.type === 'truncated' ? got.pop() : undefined;
      expect(trailer?.next).toBe(res.headers['x-next-cursor']);
      lines.push(...got);
      cursor = trailer?.next;
      if (!cursor) break;
    }
    expect(keysOf(lines)).toEqual(keysOf(full));

    // CSV: the header (the last row has the same cursor in its text).
    const ids: string[] = [];
    cursor = undefined;
    for (let page = 0; page < 50; page++) {
      const res = await timeline({ ...(cursor ? { cursor } : { from, to }), format: 'csv', limit: '6' });
      const rows = parse(res.body, { columns: true }) as Array<Record<string, string>>;
      cursor = res.headers['x-next-cursor'] as string | undefined;
      if (cursor) expect(rows.pop()!['summary']).toContain(`cursor=${cursor}`);
      ids.push(...rows.map((r) => `${r['source']}:${r['id']}:${r['type']}`));
      if (!cursor) break;
    }
    expect(ids).toEqual(keysOf(full));
  });

  it('a malformed cursor is a 400 naming `cursor`; a cursor with another window is a 400 naming the parameter', async () => {
    const first = (await timeline({ from, to, limit: '4' })).json();
    const next = first.next as string;
    const wire = JSON.parse(Buffer.from(next, 'base64url').toString('utf8'));
    const forged = (change: (w: unknown[]) => void) => {
      const w = structuredClone(wire);
      change(w);
      return Buffer.from(JSON.stringify(w)).toString('base64url');
    };
    const malformed = [
      'nonsense!',
      next.slice(0, -4),
      Buffer.from('{"at":1}').toString('base64url'),
      forged((w) => {
        w[0] = 2;
      }),
      forged((w) => {
        (w[5] as unknown[])[3] = 'not-a-uuid';
      }),
      forged((w) => {
        (w[5] as unknown[])[1] = 9;
      }),
      forged((w) => {
        w[2] = w[1];
      }),
      'x'.repeat(1_001),
    ];
    for (const cursor of malformed) {
      const res = await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { cursor }, headers: bearer(gw.owner) });
      expect(res.statusCode, cursor).toBe(400);
      expect(res.json().error.code).toBe('INVALID_REQUEST');
      expect(res.json().error.details[0].field, cursor).toBe('cursor');
      expect(res.json().error.message).toMatch(/^cursor: /);
    }
    for (const [field, value] of [
      ['to', iso(T + 6)],
      ['from', iso(T - 4)],
      ['target', 'server:postgres'],
      ['decisions', 'denials'],
    ] as const) {
      const res = await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { cursor: next, [field]: value }, headers: bearer(gw.owner) });
      expect(res.statusCode, field).toBe(400);
      expect(res.json().error.details[0].field).toBe(field);
    }
    // The same values are accepted, in another spelling too.
    const same = await app.inject({ method: 'GET', url: '/v1/incidents/timeline', query: { cursor: next, from: from.replace('Z', '+00:00'), to, decisions: 'all', limit: '4' }, headers: bearer(gw.owner) });
    expect(same.statusCode, same.body).toBe(200);
    expect(keysOf(same.json().events)).toEqual(keysOf(full.slice(4, 8)));
  });
});
