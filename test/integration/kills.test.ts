import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// Break-glass kills through HTTP on two replicas of one installation (same Postgres, same Redis prefix).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let a: FastifyInstance;
let b: FastifyInstance;
let gwA: GatewayDriver;
let gwB: GatewayDriver;
let operatorKey: string;

beforeAll(async () => {
  await t.setup();
  a = await t.app({ policyFile: POLICY });
  b = await t.app({ policyFile: POLICY });
  // buildApp returns before the first state-epoch reload is done; sessions answer 503 until it is.
  await a.ctx.sessions.ensureState();
  gwA = await new GatewayDriver(t, a).init();
  // The second replica: same installation, so the same gateway key and tokens work there.
  gwB = new GatewayDriver(t, b);
  gwB.owner = gwA.owner;
  gwB.gatewayKey = gwA.gatewayKey;
  operatorKey = await t.operatorKey(a, 'operator');
});
afterAll(async () => {
  for (const l of t.logs.lines) if (l.includes('unhandled error')) console.error(l.slice(0, 2000));
  await t.teardown();
});

const write = (path: string) => ({ server: 'filesystem', tool: 'write_file', arguments: { path, content: 'x' } });
const read = (path: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path } });
const memoryRead = { server: 'memory', tool: 'read_graph', arguments: {} };

async function killOn(app: FastifyInstance, body: Record<string, unknown>, key = operatorKey) {
  return app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(key), payload: body });
}
async function lift(app: FastifyInstance, id: string, reason = 'resolved') {
  return app.inject({ method: 'DELETE', url: `/v1/kills/${id}`, headers: bearer(operatorKey), payload: { reason } });
}

describe('POST /v1/kills', () => {
  it('kill a server on replica A → the next decision on replica B denies with KILL_SWITCH naming the kill (measured)', async () => {
    const tok = await gwA.token('rw');
    const s = await gwA.session(tok.raw);
    // Warm both replicas: the measured path is the steady state, not the first request of a process.
    for (let i = 0; i < 5; i++) {
      expect((await gwA.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');
      expect((await gwB.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');
    }

    // B keeps deciding while A kills: every decision B starts after the kill answered must deny.
    const samples: Array<{ start: number; end: number; code: string; message: string }> = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const start = performance.now();
        const d = await gwB.decide(tok.raw, { ...read('a.md'), session_id: s.session_id });
        samples.push({ start, end: performance.now(), code: d.code, message: d.message });
      }
    })();
    await new Promise((r) => setTimeout(r, 20));
    const killStart = performance.now();
    const res = await killOn(a, { target: 'server', server: 'filesystem', reason: 'INC-1 agent deleting files' });
    const killAnswered = performance.now();
    expect(res.statusCode).toBe(201);
    // Until B has started (and finished) at least two decisions after the kill answered, however slow the machine.
    const deadline = Date.now() + 10_000;
    while (samples.filter((x) => x.start >= killAnswered).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    polling = false;
    await poller;
    const kill = res.json().kill;
    expect(res.json().enforced).toBe(true);
    expect(kill).toMatchObject({ target: 'server', server: 'filesystem', target_key: 'server:filesystem', state: 'active', description: 'server filesystem' });

    const after = samples.filter((x) => x.start >= killAnswered);
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((x) => x.code === 'KILL_SWITCH')).toBe(true);
    const firstDeny = samples.find((x) => x.code === 'KILL_SWITCH')!;
    expect(firstDeny.message).toContain('INC-1 agent deleting files');
    expect(firstDeny.message).toContain(kill.id);
    const fromKillStart = firstDeny.end - killStart;
    const fromKillAnswer = firstDeny.end - killAnswered;
    // The one-off sequential measure: answer of POST on A, then one decision on B.
    const s2 = performance.now();
    const d2 = await gwB.decide(tok.raw, { ...read('b.md'), session_id: s.session_id });
    const oneDecisionMs = performance.now() - s2;
    console.log(
      `[kills] kill→deny on replica B: ${fromKillStart.toFixed(1)} ms from POST /v1/kills start (POST took ${(killAnswered - killStart).toFixed(1)} ms), ` +
        `${fromKillAnswer.toFixed(1)} ms after its answer; ${samples.length} decisions polled on B; one denied decision on B: ${oneDecisionMs.toFixed(1)} ms`,
    );
    expect(d2.code).toBe('KILL_SWITCH');
    // How fast is measured and logged above, not asserted (speed is checked by benchmarks, never by a
    // timed assertion: on a loaded machine it failed at 102 ms). What must hold is asserted: every
    // decision B started after the kill was answered denied.

    // Same on A; another server is untouched.
    expect((await gwA.decide(tok.raw, { ...write('c.md'), session_id: s.session_id })).code).toBe('KILL_SWITCH');
    expect((await gwB.decide(tok.raw, { ...memoryRead, session_id: s.session_id })).code).toBe('OK');

    // Lift restores on both replicas.
    const lifted = await lift(b, kill.id, 'INC-1 contained, agent token revoked');
    expect(lifted.statusCode).toBe(200);
    expect(lifted.json().kill).toMatchObject({ state: 'lifted', lift_reason: 'INC-1 contained, agent token revoked' });
    expect((await gwA.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');
    expect((await gwB.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('OK');
    // Lifting twice is a conflict.
    expect((await lift(a, kill.id)).statusCode).toBe(409);

    // Audited and alerted, both ways.
    await a.ctx.audit.writer.flush();
    await b.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT action, actor_type, details->>'reason' AS reason FROM audit_events WHERE target = $1 ORDER BY ts`, [`kill:${kill.id}`]);
    expect(rows).toEqual([
      { action: 'kill.created', actor_type: 'operator', reason: 'INC-1 agent deleting files' },
      { action: 'kill.lifted', actor_type: 'operator', reason: 'INC-1 contained, agent token revoked' },
    ]);
    const alerts = await t.pool().query(`SELECT kind, severity FROM alerts WHERE details->>'kill_id' = $1 ORDER BY kind`, [kill.id]);
    expect(alerts.rows).toEqual([
      { kind: 'KILL_CREATED', severity: 'critical' },
      { kind: 'KILL_LIFTED', severity: 'info' },
      // The calls it denied: one alert of the kill (and project), counted up (docs/alerts.md).
      { kind: 'KILL_SWITCH', severity: 'warning' },
    ]);
    // The denials are in the audit trail as INTENT rows with KILL_SWITCH.
    const denials = await t.pool().query(`SELECT count(*)::int AS n FROM audit_events WHERE kind = 'INTENT' AND code = 'KILL_SWITCH' AND token_id = $1`, [tok.id]);
    expect(denials.rows[0].n).toBeGreaterThanOrEqual(3);
  });

  it('every target stops exactly its calls', async () => {
    const rw = await gwA.token('rw', { project: 'blue', role: 'code_agent' });
    const other = await gwA.token('rw', { project: 'green', role: 'code_agent' });
    const reader = await gwA.token('ro', { project: 'green', role: 'reader' });
    const sRw = (await gwA.session(rw.raw)).session_id;
    const sOther = (await gwA.session(other.raw)).session_id;
    const sReader = (await gwA.session(reader.raw)).session_id;
    const sRw2 = (await gwA.session(rw.raw)).session_id;
    const cases: Array<{ body: Record<string, unknown>; denied: Array<[string, string, Record<string, unknown>]>; allowed: Array<[string, string, Record<string, unknown>]> }> = [
      { body: { target: 'capability', capability: 'write' }, denied: [[rw.raw, sRw, write('a')]], allowed: [[rw.raw, sRw, read('a')]] },
      { body: { target: 'capability', capability: 'write', server: 'memory' }, denied: [[rw.raw, sRw, { server: 'memory', tool: 'create_entities', arguments: { entities: [] } }]], allowed: [[rw.raw, sRw, write('a')]] },
      { body: { target: 'token', token_id: rw.id }, denied: [[rw.raw, sRw, read('a')]], allowed: [[other.raw, sOther, read('a')]] },
      { body: { target: 'project', project_id: 'green' }, denied: [[other.raw, sOther, read('a')], [reader.raw, sReader, read('a')]], allowed: [[rw.raw, sRw, read('a')]] },
      { body: { target: 'role', role: 'reader' }, denied: [[reader.raw, sReader, read('a')]], allowed: [[other.raw, sOther, read('a')]] },
      { body: { target: 'environment', environment: 'development' }, denied: [[rw.raw, sRw, read('a')], [reader.raw, sReader, read('a')]], allowed: [] },
      { body: { target: 'session', session_id: sRw }, denied: [[rw.raw, sRw, read('a')]], allowed: [[rw.raw, sRw2, read('a')]] },
      { body: { target: 'everything' }, denied: [[rw.raw, sRw, read('a')], [other.raw, sOther, memoryRead]], allowed: [] },
    ];
    for (const c of cases) {
      const res = await killOn(a, { ...c.body, reason: `test ${c.body['target']}` });
      expect(res.statusCode, res.body).toBe(201);
      const id = res.json().kill.id;
      for (const [raw, sid, call] of c.denied) expect((await gwB.decide(raw, { ...call, session_id: sid })).code, JSON.stringify(c.body)).toBe('KILL_SWITCH');
      for (const [raw, sid, call] of c.allowed) expect((await gwB.decide(raw, { ...call, session_id: sid })).code, JSON.stringify(c.body)).toBe('OK');
      expect((await lift(a, id)).statusCode).toBe(200);
      for (const [raw, sid, call] of c.denied) expect((await gwB.decide(raw, { ...call, session_id: sid })).code, `after lift ${JSON.stringify(c.body)}`).not.toBe('KILL_SWITCH');
    }
  });

  it('two kills of one target: lifting one leaves the other in force, and the denial names it', async () => {
    const tok = await gwA.token('rw');
    const s = (await gwA.session(tok.raw)).session_id;
    const first = (await killOn(a, { target: 'server', server: 'memory', reason: 'first operator' })).json().kill;
    const secondAnswer = (await killOn(b, { target: 'server', server: 'memory', reason: 'second operator' })).json();
    const second = secondAnswer.kill;
    // Not refused (a second operator's record), but the answer says the target was killed already.
    expect(secondAnswer.message).toContain(`Kill ${first.id} of the same target was already in force (by operator:`);
    expect(secondAnswer.message).toContain(': first operator); both are, and lifting one leaves the other.');
    // Another target's kill too: the answer names the kill that still holds this target and the others.
    const elsewhere = (await killOn(a, { target: 'server', server: 'filesystem', reason: 'third operator' })).json().kill;
    const lifted = await lift(a, first.id);
    expect(lifted.json().message).toContain(`another kill of server memory is still in force: kill ${second.id} (second operator) (killswitch kills, GET /v1/kills).`);
    expect(lifted.json().message).toContain(`Another kill is still in force and may stop some of them: server filesystem (kill ${elsewhere.id})`);
    await lift(a, elsewhere.id);
    const d = await gwA.decide(tok.raw, { ...memoryRead, session_id: s });
    expect(d.code).toBe('KILL_SWITCH');
    expect(d.message).toContain(second.id);
    const list = (await a.inject({ method: 'GET', url: '/v1/kills', headers: bearer(operatorKey) })).json();
    expect(list.kills.map((k: { id: string }) => k.id)).toContain(second.id);
    expect(list.kills.map((k: { id: string }) => k.id)).not.toContain(first.id);
    await lift(b, second.id);
    expect((await gwA.decide(tok.raw, { ...memoryRead, session_id: s })).code).toBe('OK');
  });

  it('a kill of a revoked token is made, and says the token is refused anyway', async () => {
    const tok = await gwA.token('rw');
    expect((await a.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(operatorKey), payload: { reason: 'leaked' } })).statusCode).toBe(200);
    const answer = (await killOn(a, { target: 'token', token_id: tok.id, reason: 'INC-10 belt and braces' })).json();
    expect(answer.message).toMatch(/The token was revoked at \d{4}-\d\d-\d\dT[\d:.]+Z: its calls are refused \(401\) whatever the kill says\./);
    expect((await lift(a, answer.kill.id)).statusCode).toBe(200);
  });

  it('lifting a kill while a wider one covers the same calls says so; it said they were decided normally again', async () => {
    const tok = await gwA.token('rw', { project: 'teal' });
    const s = (await gwA.session(tok.raw)).session_id;
    const wide = (await killOn(a, { target: 'project', project_id: 'teal', reason: 'INC-9 whole project' })).json().kill;
    const narrow = (await killOn(a, { target: 'token', token_id: tok.id, reason: 'INC-9 this agent' })).json().kill;
    const lifted = (await lift(a, narrow.id)).json().message as string;
    expect(lifted).toContain(`Lifted: this kill no longer stops calls made with token ${tok.id} on any replica.`);
    expect(lifted).toMatch(/(Another kill is|\d+ other kills are) still in force and may stop some of them: /);
    expect(lifted).toContain(`project teal (kill ${wide.id})`);
    expect(lifted).not.toContain('decided normally again');
    const d = await gwA.decide(tok.raw, { ...memoryRead, session_id: s });
    expect(d.code).toBe('KILL_SWITCH');
    expect(d.message).toContain(wide.id);
    // The last one lifted: nothing else in force, so the calls are back.
    expect((await lift(a, wide.id)).json().message).toBe('Lifted: calls made with the tokens of project teal are decided normally again on every replica.');
    expect((await gwA.decide(tok.raw, { ...memoryRead, session_id: s })).code).toBe('OK');
  });

  it("the denial says what is killed in the product's words (target, reason, kill id, until when, who lifts it), never the Redis key", async () => {
    const tok = await gwA.token('rw');
    const s = (await gwA.session(tok.raw)).session_id;
    const timed = (await killOn(a, { target: 'capability', server: 'filesystem', capability: 'write', reason: 'INC-2 writes paused', expires_in: 3600 })).json().kill;
    const d = await gwB.decide(tok.raw, { ...write('a.md'), session_id: s });
    expect(d.code).toBe('KILL_SWITCH');
    for (const part of ['write calls on server filesystem', 'INC-2 writes paused', timed.id, `ends at ${timed.expires_at}`, 'unless an operator lifts it sooner', `DELETE /v1/kills/${timed.id}`]) expect(d.message).toContain(part);
    // An expiring kill is not one "an operator must lift"; and no internal key names.
    for (const internal of [t.redisPrefix, 'kill:', 'cap:filesystem', 'must lift']) expect(d.message).not.toContain(internal);

    const forever = (await killOn(a, { target: 'server', server: 'memory', reason: 'INC-2 memory too' })).json().kill;
    const m = await gwB.decide(tok.raw, { ...memoryRead, session_id: s });
    expect(m.code).toBe('KILL_SWITCH');
    expect(m.message).toContain(`Stopped by an operator kill of server memory: INC-2 memory too (kill ${forever.id}).`);
    expect(m.message).toContain(`It stays in force until an operator lifts it (DELETE /v1/kills/${forever.id})`);
    expect(m.message).not.toContain('ends at');
    expect(m.message).not.toContain(t.redisPrefix);

    // The audit row names the kill by its id (GET /v1/kills/:id), not by the key either.
    await b.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT decision_id, details FROM audit_events WHERE decision_id = ANY($1) AND kind = 'INTENT'`, [[d.decision_id, m.decision_id]]);
    const byDecision = new Map(rows.map((r) => [r.decision_id, r.details]));
    expect(byDecision.get(d.decision_id).extra).toEqual({ kill_id: timed.id });
    expect(byDecision.get(m.decision_id).extra).toEqual({ kill_id: forever.id });
    expect(JSON.stringify(rows)).not.toContain(t.redisPrefix);
    expect((await lift(a, timed.id)).statusCode).toBe(200);
    expect((await lift(a, forever.id)).statusCode).toBe(200);
  });

  it('an expiring kill lifts itself (Redis TTL); the expiry is recorded once, audited and alerted', async () => {
    const tok = await gwA.token('rw');
    const s = (await gwA.session(tok.raw)).session_id;
    const res = await killOn(a, { target: 'token', token_id: tok.id, reason: 'cool down', expires_in: 2 });
    const kill = res.json().kill;
    expect(new Date(kill.expires_at).getTime() - new Date(kill.created_at).getTime()).toBe(2_000);
    expect((await gwB.decide(tok.raw, { ...read('a'), session_id: s })).code).toBe('KILL_SWITCH');
    const killKey = a.ctx.redis.key('kill', `token:${tok.id}`);
    const ttl = await a.ctx.redis.redis.pttl(killKey);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(2_000);
    // Allowed again once the TTL runs out, and not before: every denial is a KILL_SWITCH, and the first
    // allow comes only when Redis has expired the key (it is gone when we look right after the allow).
    let code = 'KILL_SWITCH';
    const deadline = Date.now() + 15_000;
    while (code === 'KILL_SWITCH' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      code = (await gwB.decide(tok.raw, { ...read('a'), session_id: s })).code;
    }
    expect(code).toBe('OK');
    expect(await a.ctx.redis.redis.pttl(killKey)).toBe(-2);
    // Both replicas try to record it; at most one does (their 5 s background tick may have recorded it
    // already: the single audit row and alert below are what "recorded once" means).
    const [ra, rb] = await Promise.all([a.ctx.kills.recordExpiries(), b.ctx.kills.recordExpiries()]);
    expect(ra + rb).toBeLessThanOrEqual(1);
    const got = (await a.inject({ method: 'GET', url: `/v1/kills/${kill.id}`, headers: bearer(operatorKey) })).json();
    expect(got.state).toBe('expired');
    expect((await lift(a, kill.id)).statusCode).toBe(409);
    await a.ctx.audit.writer.flush();
    await b.ctx.audit.writer.flush();
    const audit = await t.pool().query(`SELECT action, actor_type FROM audit_events WHERE target = $1 AND action = 'kill.expired'`, [`kill:${kill.id}`]);
    expect(audit.rows).toEqual([{ action: 'kill.expired', actor_type: 'system' }]);
    const alerts = await t.pool().query(`SELECT kind FROM alerts WHERE details->>'kill_id' = $1 AND kind = 'KILL_LIFTED'`, [kill.id]);
    expect(alerts.rows).toHaveLength(1);
  });

  it('a credential pasted into a kill or lift reason is masked where it is stored and shown: kills table, API, denial, Redis, alerts', async () => {
    const tok = await gwA.token('rw');
    const s = (await gwA.session(tok.raw)).session_id;
    const secrets = [gwA.gatewayKey, tok.raw, 'hunter2'];
    const clear = (text: unknown) => {
      for (const secret of secrets) expect(JSON.stringify(text)).not.toContain(secret);
      expect(JSON.stringify(text)).toContain('[REDACTED]');
    };
    const res = await killOn(a, { target: 'token', token_id: tok.id, reason: `INC-9 key ${gwA.gatewayKey} leaked with ${tok.raw}, db password=hunter2` });
    expect(res.statusCode).toBe(201);
    const kill = res.json().kill;
    clear(kill.reason);
    expect(kill.reason).toMatch(/^INC-9 key ksgw_\[REDACTED\] leaked with mcp_rw_\[REDACTED\], db password=\[REDACTED\]$/);
    const db = t.pool();
    clear((await db.query('SELECT reason FROM kills WHERE id = $1', [kill.id])).rows[0].reason);
    clear((await b.inject({ method: 'GET', url: `/v1/kills/${kill.id}`, headers: bearer(operatorKey) })).json().reason);
    clear(await a.ctx.redis.redis.get(a.ctx.redis.key('kill', `token:${tok.id}`)));
    const denied = await gwB.decide(tok.raw, { ...read('a.md'), session_id: s });
    expect(denied.code).toBe('KILL_SWITCH');
    clear(denied.message);

    const lifted = await lift(a, kill.id, `fixed; rotated ${gwA.gatewayKey}`);
    expect(lifted.statusCode).toBe(200);
    clear(lifted.json().kill.lift_reason);
    clear((await db.query('SELECT lift_reason FROM kills WHERE id = $1', [kill.id])).rows[0].lift_reason);
    const alertsOf = () => db.query(`SELECT kind, message FROM alerts WHERE details->>'kill_id' = $1 ORDER BY kind`, [kill.id]);
    // Alerts are raised without waiting for them.
    await until(async () => (await alertsOf()).rows.length === 3, 5_000, 'the kill alerts stored');
    const alerts = await alertsOf();
    expect(alerts.rows.map((r) => r.kind)).toEqual(['KILL_CREATED', 'KILL_LIFTED', 'KILL_SWITCH']);
    for (const r of alerts.rows) clear(r.message);

    // A kill recorded in clear before reasons were stored masked is masked where it is shown.
    await db.query('UPDATE kills SET reason = $2, lifted_at = NULL, lifted_by = NULL, lift_reason = NULL WHERE id = $1', [kill.id, `old ${tok.raw}`]);
    await a.ctx.kills.mirror.sync(`token:${tok.id}`);
    clear((await a.inject({ method: 'GET', url: `/v1/kills/${kill.id}`, headers: bearer(operatorKey) })).json().reason);
    const again = await gwB.decide(tok.raw, { ...read('a.md'), session_id: s });
    expect(again.code).toBe('KILL_SWITCH');
    clear(again.message);
    expect((await lift(a, kill.id)).statusCode).toBe(200);
  });

  it('refuses what is not a kill: unknown server or role, fields of another target, missing fields; operators only', async () => {
    const bad = async (body: Record<string, unknown>, field: string) => {
      const res = await killOn(a, { reason: 'x', ...body });
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().error.details[0].field).toBe(field);
    };
    await bad({ target: 'server', server: 'filesytem' }, 'server');
    await bad({ target: 'role', role: 'no_such_role' }, 'role');
    await bad({ target: 'server', server: 'filesystem', token_id: '0190aaaa-0000-7000-8000-000000000000' }, 'token_id');
    await bad({ target: 'capability' }, 'capability');
    await bad({ target: 'token' }, 'token_id');
    // A display prefix (what the Tokens page and alerts show) is not an id: the 400 says where the id is.
    const prefix = await killOn(a, { target: 'token', token_id: 'mcp_rw_XFuj', reason: 'x' });
    expect(prefix.statusCode).toBe(400);
    expect(prefix.json().error).toMatchObject({ code: 'INVALID_REQUEST', details: [{ field: 'token_id' }] });
    expect(prefix.json().error.message).toMatch(/^token_id: .*Tokens page.*GET \/v1\/keys/);
    const session = await killOn(a, { target: 'session', session_id: 'sess-1', reason: 'x' });
    expect(session.statusCode).toBe(400);
    expect(session.json().error.message).toMatch(/^session_id: .*Sessions page.*GET \/v1\/sessions\?token=/);
    // Upper case is still the same id (x-lowercase), not refused by the pattern.
    expect((await killOn(a, { target: 'token', token_id: '0190AAAA-0000-7000-8000-000000000000', reason: 'x' })).statusCode).toBe(404);
    expect((await killOn(a, { target: 'everything' })).statusCode).toBe(400); // no reason
    expect((await killOn(a, { target: 'token', token_id: '0190aaaa-0000-7000-8000-000000000000', reason: 'x' })).statusCode).toBe(404);

    const viewer = await t.operatorKey(a, 'viewer');
    expect((await killOn(a, { target: 'everything', reason: 'x' }, viewer)).statusCode).toBe(403);
    expect((await a.inject({ method: 'GET', url: '/v1/kills', headers: bearer(viewer) })).statusCode).toBe(200);
    const agent = await gwA.token('ro');
    const asAgent = await killOn(a, { target: 'everything', reason: 'x' }, agent.raw);
    expect(asAgent.statusCode).toBe(403);
    expect(asAgent.json().error.code).toBe('MCP_TOKEN_FORBIDDEN');

    // A project-limited operator kills inside its projects only.
    const limited = await t.operatorKey(a, 'operator', ['blue']);
    const everything = await killOn(a, { target: 'everything', reason: 'x' }, limited);
    expect(everything.statusCode).toBe(403);
    expect(everything.json().error.message).toBe('This operator key is limited to projects blue; a kill of everything stops other projects too. Kill the project, a token or a session instead.');
    expect((await killOn(a, { target: 'server', server: 'filesystem', reason: 'x' }, limited)).json().error.message).toContain('; a server kill stops other projects too.');
    expect((await killOn(a, { target: 'project', project_id: 'green', reason: 'x' }, limited)).statusCode).toBe(403);
    const own = await killOn(a, { target: 'project', project_id: 'blue', reason: 'x' }, limited);
    expect(own.statusCode).toBe(201);
    await lift(a, own.json().kill.id);
  });

  it('a project kill names a project some token has: a typo is 400 naming project_id; the answer counts the active tokens it covers', async () => {
    const typo = await killOn(a, { target: 'project', project_id: 'paymnets', reason: 'INC-9 typo' });
    expect(typo.statusCode, typo.body).toBe(400);
    expect(typo.json().error.details[0]).toMatchObject({ field: 'project_id' });
    expect(typo.json().error.details[0].problem).toContain('no agent token has project paymnets');
    expect((await a.inject({ method: 'GET', url: '/v1/kills?state=all', headers: bearer(operatorKey) })).json().kills.some((k: { project_id: string | null }) => k.project_id === 'paymnets')).toBe(false);

    await gwA.token('ro', { project: 'payments' });
    await gwA.token('rw', { project: 'payments' });
    const gone = await gwA.token('ro', { project: 'payments' });
    await a.inject({ method: 'POST', url: `/v1/keys/${gone.id}/revoke`, headers: bearer(gwA.owner), payload: { reason: 'left' } });
    const res = await killOn(a, { target: 'project', project_id: 'payments', reason: 'INC-9 payments agents' });
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json().active_tokens).toBe(2);
    expect(res.json().message).toContain('covers 2 active agent token(s)');
    await lift(a, res.json().kill.id);

    // Only revoked tokens: still a real project (a token issued to it later is stopped), covering none now.
    const old = await gwA.token('ro', { project: 'retired' });
    await a.inject({ method: 'POST', url: `/v1/keys/${old.id}/revoke`, headers: bearer(gwA.owner), payload: { reason: 'retired' } });
    const retired = await killOn(a, { target: 'project', project_id: 'retired', reason: 'INC-9 keep it off' });
    expect(retired.statusCode, retired.body).toBe(201);
    expect(retired.json().active_tokens).toBe(0);
    await lift(a, retired.json().kill.id);

    // Other targets carry no count.
    const tok = await gwA.token('ro', { project: 'payments' });
    const byToken = await killOn(a, { target: 'token', token_id: tok.id, reason: 'INC-9' });
    expect(byToken.statusCode).toBe(201);
    expect(byToken.json().active_tokens).toBeUndefined();
    await lift(a, byToken.json().kill.id);
  });

  it('a kill denies even where every flag allows the call, and explain shows it', async () => {
    const tok = await gwA.token('rw');
    const s = (await gwA.session(tok.raw)).session_id;
    const res = await killOn(a, { target: 'capability', server: 'filesystem', capability: 'write', reason: 'INC-2 writes stopped' });
    const kill = res.json().kill;
    const d = await gwB.decide(tok.raw, { ...write('x.md'), session_id: s });
    expect(d.code).toBe('KILL_SWITCH');
    // The flag step passed: the denial came from the Redis step, not from Unleash.
    await b.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT flags FROM audit_events WHERE decision_id = $1 AND kind = 'INTENT'`, [d.decision_id]);
    const flags = rows[0].flags as Record<string, boolean>;
    expect(flags['mcp.enabled']).toBe(true);
    expect(flags['mcp.filesystem.write']).toBe(true);
    const explained = await a.inject({
      method: 'POST',
      url: '/v1/decisions/explain',
      headers: bearer(operatorKey),
      // As in the runbook: no session needed, the kill is checked before the session.
      payload: { token_id: tok.id, ...write('x.md') },
    });
    expect(explained.statusCode, explained.body).toBe(200);
    expect(explained.json()).toMatchObject({ decision: 'deny', code: 'KILL_SWITCH' });
    await lift(a, kill.id);
  });
});

describe('a killed call on the session', () => {
  it("GET /v1/sessions/:id lists a KILL_SWITCH denial in last_calls, newest first; not on another token's session named by id", async () => {
    const tok = await gwA.token('rw');
    const other = await gwA.token('rw');
    const s = (await gwA.session(tok.raw)).session_id;
    expect((await gwA.decide(tok.raw, { ...read('before.md'), session_id: s })).code).toBe('OK');
    const bySession = (await killOn(a, { target: 'session', session_id: s, reason: 'INC-13 session looks wrong' })).json().kill;
    const byToken = (await killOn(a, { target: 'token', token_id: other.id, reason: 'INC-13 other agent' })).json().kill;
    const denied = await gwB.decide(tok.raw, { ...write('killed.md'), session_id: s });
    expect(denied.code).toBe('KILL_SWITCH');
    // The other token is killed too: its call naming this session is denied, and is not this session's call.
    expect((await gwB.decide(other.raw, { ...read('not-mine.md'), session_id: s })).code).toBe('KILL_SWITCH');

    const card = (await a.inject({ method: 'GET', url: `/v1/sessions/${s}`, headers: bearer(operatorKey) })).json();
    expect(card.last_calls.map((c: { id: string; args: string; decision: string; code: string }) => [c.args, c.decision, c.code])).toEqual([
      ['{"path":"killed.md","content":"x"}', 'deny', 'KILL_SWITCH'],
      ['{"path":"before.md"}', 'allow', 'OK'],
    ]);
    expect(card.last_calls[0].id).toBe(denied.decision_id);
    await lift(a, bySession.id);
    await lift(a, byToken.id);
  });
});
