import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeEvent } from '../../src/audit/record.js';
import { intentRow } from '../../src/audit/rows.js';
import { createWriterPool } from '../../src/audit/service.js';
import { AuditWriter } from '../../src/audit/writer.js';
import { countingServer, killswitch, listenUrl } from '../helpers/cli.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';
import { agentPrincipal, callContext, PgProxy } from './audit-fixtures.js';

// `killswitch audit search` as the on-call operator runs it: real decisions made through the API as a
// gateway makes them, then a child process reads the trail through the admin API with the operator key
// from the environment (as kills-cli.test.ts and status-cli.test.ts).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let url = '';
let operatorKey = '';
let opId = '';
// A KILLSWITCH_URL that counts what reaches it: the usage errors must send nothing.
let counter: Awaited<ReturnType<typeof countingServer>>;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  await app.ctx.sessions.ensureState();
  url = await listenUrl(app);
  gw = await new GatewayDriver(t, app).init();
  operatorKey = await t.operatorKey(app, 'operator');
  opId = (await app.ctx.auth.authenticate(operatorKey)).id;
  counter = await countingServer();
});
afterAll(async () => {
  await counter?.close();
  await t.teardown();
});

const env = (extra: Record<string, string> = {}) => ({ KILLSWITCH_URL: url, KILLSWITCH_OPERATOR_KEY: operatorKey, LOG_LEVEL: 'warn', ...extra });
const cli = (args: string[], extra: Record<string, string> = {}) => killswitch(['audit', 'search', ...args], { env: env(extra) });
const read = (session_id: string, path = 'a.md') => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path }, session_id });
const displayOf = (raw: string) => raw.slice(0, raw.indexOf('_', 4) + 1 + 4);
/** The table's rows (after the control plane, Searched and header lines). */
const rowsOf = (stdout: string) => stdout.trimEnd().split('\n').slice(3);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const quiet = { info: () => {}, warn: () => {}, error: () => {} };

/** `audit search --follow <args>` as a child process, its output gathered as it comes. */
function followChild(args: string[]) {
  const child = spawn('node', [resolve('bin/killswitch.js'), 'audit', 'search', '--follow', ...args], { env: { ...process.env, ...env() } });
  const io = { stdout: '', stderr: '', child };
  child.stdout.on('data', (c: Buffer) => {
    io.stdout += c.toString();
  });
  child.stderr.on('data', (c: Buffer) => {
    io.stderr += c.toString();
  });
  return io;
}

/** Another replica's audit writer (the limited role, its own spool), on `url`, with its own clock. */
async function otherReplicaWriter(url: string, clock: () => number = Date.now) {
  const dataDir = await mkdtemp(join(tmpdir(), 'ks-writer-'));
  const pool = createWriterPool(url);
  const writer = await AuditWriter.open({ pool, database: t.name, dataDir, batchMax: 50, log: quiet as never, replayIntervalMs: 100, clock });
  return {
    writer,
    close: async () => {
      await writer.close();
      await pool.end();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** An allowed INTENT of the token, as a replica's decision writes it (memory/read_graph). */
const graphIntent = (tokenId: string) =>
  intentRow(callContext({ agent: agentPrincipal({ id: tokenId }), server: 'memory', tool: 'read_graph', capability: 'read' }), { decision: 'allow', code: 'OK', message: 'allowed' });

describe('killswitch audit search', () => {
  it("finds what a token did, what was denied and why, and the kill that stopped it: a table oldest first, --json as the API gives the rows; a viewer key is enough", async () => {
    const tok = await gw.token('rw');
    const other = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    const so = (await gw.session(other.raw)).session_id;
    const allowed = await gw.decide(tok.raw, read(s));
    expect(allowed.code).toBe('OK');
    expect((await gw.decide(other.raw, read(so))).code).toBe('OK');
    const killed = await killswitch(['kill', '--token', tok.id, '--reason', 'INC-41 runaway agent', '--json'], { env: env() });
    expect(killed.code, killed.stderr).toBe(0);
    const kill = JSON.parse(killed.stdout).kill as { id: string };
    const denied = await gw.decide(tok.raw, read(s, 'b.md'));
    expect(denied).toMatchObject({ decision: 'deny', code: 'KILL_SWITCH' });
    await app.ctx.audit.writer.flush();

    const display = displayOf(tok.raw);
    const res = await cli(['--token', display]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toBe('');
    const lines = res.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(`Control plane: ${url} (KILLSWITCH_URL)`);
    expect(lines[1]).toBe(`Searched: token ${tok.id} (${display}…), any time`);
    expect(lines[2]).toMatch(/^TIME \(UTC\) +KIND +DECISION +CODE +WHO +SESSION +SERVER\/TOOL OR ACTION +MESSAGE$/);
    const rows = rowsOf(res.stdout);
    // Its calls, oldest first, each on one line with its token's display prefix and session; never the other token's.
    const allow = rows.findIndex((l) => / INTENT +allow +OK /.test(l));
    const deny = rows.findIndex((l) => / INTENT +deny +KILL_SWITCH /.test(l));
    expect(allow).toBeGreaterThanOrEqual(0);
    expect(deny).toBeGreaterThan(allow);
    for (const i of [allow, deny]) {
      expect(rows[i]).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z /);
      expect(rows[i]).toContain(`  ${display}…  `);
      expect(rows[i]).toContain(`  ${s}  filesystem/read_text_file  `);
    }
    expect(rows[deny]).toContain(denied.message.slice(0, 60));
    // The ADMIN rows about the token are listed with its calls: the kill, by the operator, with its reason.
    const killRow = rows.find((l) => l.includes('kill.created'));
    expect(killRow).toMatch(/ ADMIN +- +- +operator:/);
    expect(killRow).toContain(`kill:${kill.id} — INC-41 runaway agent`);
    expect(res.stdout).not.toContain(other.id);
    expect(res.stdout).not.toContain(displayOf(other.raw));
    expect(res.stdout).not.toContain(so);
    // No secret: the raw token is nowhere.
    expect(res.stdout).not.toContain(tok.raw);

    // Which calls were denied and why: --json, the rows as the API gives them.
    const json = await cli(['--token', tok.id, '--decision', 'deny', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const report = JSON.parse(json.stdout);
    expect(Object.keys(report)).toEqual(['control_plane', 'query', 'count', 'complete', 'events']);
    expect(report).toMatchObject({ control_plane: url, query: { token: tok.id, decision: 'deny' }, count: 1, complete: true });
    expect(report.events).toHaveLength(1);
    expect(report.events[0]).toMatchObject({ kind: 'INTENT', decision_id: denied.decision_id, token_id: tok.id, session_id: s, code: 'KILL_SWITCH', message: denied.message });
    expect(report.events[0].arguments).toEqual({ path: 'b.md' });
    const api = await app.inject({ url: `/v1/audit?token=${tok.id}&decision=deny`, headers: bearer(operatorKey) });
    expect(report.events).toEqual(api.json().events);

    // What the kill switch stopped: by code (any case), in a window, with a viewer key.
    const viewer = await t.operatorKey(app, 'viewer');
    const byCode = await cli(['--code', 'kill_switch', '--since', '1h', '--json'], { KILLSWITCH_OPERATOR_KEY: viewer });
    expect(byCode.code, byCode.stderr).toBe(0);
    const stopped = JSON.parse(byCode.stdout);
    expect(stopped.query.code).toBe('KILL_SWITCH');
    expect(Date.now() - Date.parse(stopped.query.from)).toBeGreaterThanOrEqual(3_600_000);
    expect(stopped.events.map((e: { decision_id: string }) => e.decision_id)).toEqual([denied.decision_id]);

    // What this operator did: the ADMIN rows of its key.
    const admin = await cli(['--kind', 'admin', '--actor', opId, '--json']);
    expect(admin.code, admin.stderr).toBe(0);
    expect(JSON.parse(admin.stdout).events.map((e: { action: string; target: string }) => `${e.action} ${e.target}`)).toEqual([`kill.created kill:${kill.id}`]);

    // One session's rows, and one decision's.
    const bySession = await cli(['--session', s.toUpperCase(), '--kind', 'INTENT', '--json']);
    expect(bySession.code, bySession.stderr).toBe(0);
    expect(JSON.parse(bySession.stdout).events.map((e: { decision_id: string }) => e.decision_id)).toEqual([denied.decision_id, allowed.decision_id]);
    const one = await cli(['--decision-id', allowed.decision_id, '--json']);
    expect(JSON.parse(one.stdout).events.map((e: { kind: string }) => e.kind)).toEqual(['INTENT']);

    // Revoked during the incident, it is still found by its display prefix: its trail is what the review needs.
    expect((await app.inject({ method: 'POST', url: `/v1/keys/${tok.id}/revoke`, headers: bearer(operatorKey), payload: { reason: 'INC-41' } })).statusCode).toBe(200);
    await app.ctx.audit.writer.flush();
    const afterRevoke = await cli(['--token', `${display}…`, '--kind', 'ADMIN']);
    expect(afterRevoke.code, afterRevoke.stderr).toBe(0);
    expect(afterRevoke.stdout).toContain(`Searched: token ${tok.id} (${display}…), kind ADMIN, any time`);
    expect(afterRevoke.stdout).toMatch(/ ADMIN +- +- +operator:test operator +- +key\.revoked +agent_token:\S+ — INC-41/);
  }, 180_000);

  it('reads only the newest --limit rows and says on stderr that older ones match and how to narrow; none found is exit 0', async () => {
    const tok = await gw.token('ro');
    const s = (await gw.session(tok.raw)).session_id;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await gw.decide(tok.raw, read(s, `f${i}.md`))).decision_id);
    await app.ctx.audit.writer.flush();

    const three = await cli(['--token', tok.id, '--kind', 'INTENT', '--limit', '3']);
    expect(three.code, three.stderr).toBe(0);
    // Given by id, the token is named by its display prefix too.
    expect(three.stdout).toContain(`Searched: token ${tok.id} (${displayOf(tok.raw)}…), kind INTENT, any time`);
    const rows = rowsOf(three.stdout);
    expect(rows).toHaveLength(3);
    expect(three.stderr).toContain('killswitch: audit search: the newest 3 matching rows are shown; older rows match too (not read). Narrow with --since/--from/--to');
    expect(three.stderr).toContain('or raise --limit (at most 5000)');
    const json3 = JSON.parse((await cli(['--token', tok.id, '--kind', 'INTENT', '--limit', '3', '--json'])).stdout);
    expect(json3).toMatchObject({ count: 3, complete: false });
    // The newest three, newest first as the API gives them.
    expect(json3.events.map((e: { decision_id: string }) => e.decision_id)).toEqual(ids.slice(2).reverse());

    // Exactly as many as match: complete, nothing said.
    const all = await cli(['--token', tok.id, '--kind', 'INTENT', '--limit', '5']);
    expect(all.code).toBe(0);
    expect(rowsOf(all.stdout)).toHaveLength(5);
    expect(all.stderr).toBe('');

    // Nothing matches: said, exit 0.
    const none = await cli(['--session', '0190aaaa-0000-7000-8000-000000000000']);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout).toBe(`Control plane: ${url} (KILLSWITCH_URL)\nSearched: session 0190aaaa-0000-7000-8000-000000000000, any time\nNo audit rows match.\n`);
    expect(none.stderr).toBe('');
    const noneJson = JSON.parse((await cli(['--token', tok.id, '--from', '2020-01-01', '--to', '2020-01-02T00:00:00+02:00', '--json'])).stdout);
    expect(noneJson).toMatchObject({ count: 0, complete: true, events: [], query: { from: '2020-01-01T00:00:00.000Z', to: '2020-01-01T22:00:00.000Z' } });
  }, 120_000);

  it('shows control characters, line breaks and bidirectional marks in what the API answers escaped', async () => {
    // A row written by the real writer, with a message that would clear the screen and forge a line.
    app.ctx.audit.enqueue(
      makeEvent({ kind: 'ADMIN', actor_type: 'system', actor_id: 'cli-escape-test', action: 'test.escape', target: 'x\u001b[2Jforged\nline\u202eevil', message: null }),
    );
    await app.ctx.audit.writer.flush();
    const res = await cli(['--actor', 'cli-escape-test']);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain('x\\u001b[2Jforged\\u000aline\\u202eevil');
    expect(res.stdout).not.toContain('\u001b');
    expect(res.stdout).not.toContain('\u202e');
    expect(rowsOf(res.stdout)).toHaveLength(1);
    const json = await cli(['--actor', 'cli-escape-test', '--json']);
    expect(json.stdout).not.toContain('\u202e');
    expect(JSON.parse(json.stdout).events[0].target).toBe('x\u001b[2Jforged\nline\u202eevil');
  }, 60_000);

  it('usage errors exit 2 and send nothing', async () => {
    const tok = await gw.token('rw');
    const before = counter.received;
    for (const [args, message] of [
      [['--session', 'not-a-session'], '--session not-a-session is not an id (a UUID)'],
      [['--decision-id', 'x'], '--decision-id x is not an id (a UUID)'],
      [['--code', 'KILLSWITCH'], '--code KILLSWITCH is not a decision code or a halt trigger: one of OK, PERMISSION_DENIED, KILL_SWITCH'],
      [['--kind', 'in tent'], '--kind in tent is not a row kind'],
      [['--from', '2026-12-07T03:00'], '--from 2026-12-07T03:00: has no time zone: add Z for UTC (2026-12-07T03:00Z)'],
      [['--to', 'yesterday'], '--to yesterday: expected a time with its zone'],
      [['--from', '30'], '30 has no unit'],
      [['--from', '1h', '--to', '2h'], 'is not before --to'],
      [['--since', '1h', '--from', '2h'], "option '--since <duration>' cannot be used with option '--from <time>'"],
      [['--since', '30'], '30 has no unit: write 30s, 30m, 30h or 30d'],
      [['--limit', '0'], '--limit 0: expected a whole number from 1 to 5000'],
      [['--limit', '5001'], '--limit 5001: expected a whole number from 1 to 5000'],
      [['--follow', '--to', '1h'], "option '--follow' cannot be used with option '--to <time>'"],
      [['--decision', 'maybe'], "argument 'maybe' is invalid. Allowed choices are allow, deny."],
      [['--tool', 'a', '--tool', 'b'], "option '--tool <name>' was given more than once"],
      [['--server', ' '], '--server is empty'],
      [['--token', tok.raw], 'not the token itself: a token is a secret, so it was not sent anywhere'],
      [['--token', 'whoever'], '--token whoever is neither a token id (a UUID) nor a display prefix'],
      [['--bogus'], "unknown option '--bogus'"],
    ] as const) {
      const res = await cli([...args], { KILLSWITCH_URL: counter.url });
      expect(res.code, `${args.join(' ')}: ${res.stderr}`).toBe(2);
      expect(res.stderr).toContain(message);
      expect(res.stdout).toBe('');
      expect(res.stderr).not.toContain(tok.raw);
    }
    // A raw token given twice is refused without printing it either.
    const twice = await cli(['--token', tok.id, '--token', tok.raw], { KILLSWITCH_URL: counter.url });
    expect(twice.code).toBe(2);
    expect(twice.stderr + twice.stdout).not.toContain(tok.raw);
    const noKey = await cli([], { KILLSWITCH_URL: counter.url, KILLSWITCH_OPERATOR_KEY: '' });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain('set KILLSWITCH_OPERATOR_KEY');
    expect(counter.received).toBe(before);
  }, 180_000);

  it('unreachable, a refused key (401) and a key the admin API refuses (403) are exit 1 with what to check, nothing on stdout', async () => {
    const down = await cli([], { KILLSWITCH_URL: 'http://127.0.0.1:9' });
    expect(down.code).toBe(1);
    expect(down.stdout).toBe('');
    expect(down.stderr).toContain('cannot reach the control plane at http://127.0.0.1:9 (KILLSWITCH_URL)');
    expect(down.stderr).toContain('Nothing accepts connections at 127.0.0.1:9: check that the control plane runs there');

    const gone = await t.operatorKey(app, 'viewer');
    const goneId = (await app.ctx.auth.authenticate(gone)).id;
    expect((await app.inject({ method: 'POST', url: `/v1/operator-keys/${goneId}/revoke`, headers: bearer(gw.owner) })).statusCode).toBe(204);
    const revoked = await cli(['--since', '1h'], { KILLSWITCH_OPERATOR_KEY: gone });
    expect(revoked.code).toBe(1);
    expect(revoked.stdout).toBe('');
    expect(revoked.stderr).toContain('401 UNAUTHENTICATED');
    expect(revoked.stderr).toContain(`The control plane at ${url} (KILLSWITCH_URL) refused KILLSWITCH_OPERATOR_KEY`);

    // A gateway key where the operator key goes: the admin API refuses it, and the hint says what it is.
    const forbidden = await cli(['--since', '1h'], { KILLSWITCH_OPERATOR_KEY: gw.gatewayKey });
    expect(forbidden.code).toBe(1);
    expect(forbidden.stdout).toBe('');
    expect(forbidden.stderr).toContain('403 MCP_TOKEN_FORBIDDEN');
    expect(forbidden.stderr).toContain('KILLSWITCH_OPERATOR_KEY holds an agent token or a gateway key, which the admin API refuses: set it to an operator key (ksop_...');
    expect(forbidden.stderr).not.toContain(gw.gatewayKey);
  }, 120_000);

  it("a read the control plane takes longer than 15 s to answer is waited for (its own query limit is 30 s): its answer is shown, not 'cannot reach the control plane'", async () => {
    // The control plane behind a proxy that holds GET /v1/audit 16 s, then answers as the API does when
    // Postgres passed its query limit (a filter without an index on a large trail).
    let held = 0;
    const proxy: Server = createServer((req, res) => {
      if (req.url?.startsWith('/v1/audit')) {
        held++;
        setTimeout(() => {
          res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'SERVICE_UNAVAILABLE', message: 'Postgres did not answer within 30 s: narrow it with from/to' } }));
        }, 16_000);
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((done) => proxy.listen(0, '127.0.0.1', done));
    try {
      const res = await killswitch(['audit', 'search', '--server', 'filesystem'], { env: env({ KILLSWITCH_URL: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}` }), timeoutMs: 60_000 });
      expect(res.code).toBe(1);
      expect(res.stdout).toBe('');
      expect(res.stderr).toContain('503 SERVICE_UNAVAILABLE: Postgres did not answer within 30 s: narrow it with from/to');
      expect(res.stderr).not.toContain('cannot reach the control plane');
      expect(held).toBe(1);
    } finally {
      proxy.closeAllConnections();
      await new Promise((done) => proxy.close(done));
    }
  }, 90_000);

  it('--follow prints each new matching row once, as it is written', async () => {
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    const child = spawn('node', [resolve('bin/killswitch.js'), 'audit', 'search', '--follow', '--token', tok.id, '--kind', 'INTENT'], { env: { ...process.env, ...env() } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    try {
      await until(async () => stdout.includes('No audit rows match yet; waiting for new ones'), 30_000, 'the follow to start');
      const first = await gw.decide(tok.raw, read(s, 'first.md'));
      await until(async () => / INTENT +allow +OK .*filesystem\/read_text_file/.test(stdout), 30_000, 'the first row');
      // A second row comes with a later poll, which reads the first again (its overlap): still printed once.
      const second = await gw.decide(tok.raw, { server: 'memory', tool: 'read_graph', arguments: {}, session_id: s });
      await until(async () => stdout.includes('memory/read_graph'), 30_000, 'the second row');
      const rows = stdout.split('\n').filter((l) => / INTENT /.test(l));
      expect(rows).toHaveLength(2);
      expect(rows[0]).toContain('filesystem/read_text_file');
      expect(rows[1]).toContain('memory/read_graph');
      expect(rows[1]).toContain(second.code);
      expect(first.code).toBe('OK');
      expect(stderr).toBe('');
    } finally {
      child.kill('SIGTERM');
    }
  }, 120_000);

  it('--follow says on stderr when a poll fails, and prints the rows written meanwhile once the control plane answers again', async () => {
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    // The control plane behind a proxy whose GET /v1/audit fails, while `failing`, as a control plane's 503 does.
    const target = new URL(url);
    let failing = false;
    const proxy: Server = createServer((req, res) => {
      if (failing && req.url?.startsWith('/v1/audit')) {
        res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'SERVICE_UNAVAILABLE', message: 'the database is unavailable' } }));
        return;
      }
      const up = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      req.pipe(up);
    });
    await new Promise<void>((done) => proxy.listen(0, '127.0.0.1', done));
    const proxied = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    const child = spawn('node', [resolve('bin/killswitch.js'), 'audit', 'search', '--follow', '--token', tok.id, '--kind', 'INTENT'], { env: { ...process.env, ...env({ KILLSWITCH_URL: proxied }) } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    try {
      await until(async () => stdout.includes('No audit rows match yet'), 30_000, 'the follow to start');
      failing = true;
      await until(async () => stderr.includes('could not read'), 30_000, 'the failed poll to be said');
      expect(stderr).toBe(
        'killswitch: audit search --follow: could not read (503 SERVICE_UNAVAILABLE: the database is unavailable); trying again every 2 s\n',
      );
      // Written while the reads fail: shown once they answer again, not lost.
      await gw.decide(tok.raw, read(s, 'during.md'));
      failing = false;
      await until(async () => / INTENT +allow +OK .*filesystem\/read_text_file/.test(stdout), 30_000, 'the row written during the outage');
      expect(stderr).toContain('killswitch: audit search --follow: reading again\n');
      // Said once per outage, not once per poll.
      expect(stderr.match(/could not read/g)).toHaveLength(1);
    } finally {
      child.kill('SIGTERM');
      proxy.closeAllConnections();
      await new Promise((done) => proxy.close(done));
    }
  }, 120_000);

  it('--follow shows the rows a replica spooled during a Postgres outage when they are replayed, once, though their time is older than rows shown since', async () => {
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    const proxy = new PgProxy();
    await proxy.reserve();
    await proxy.up();
    const other = await otherReplicaWriter(proxy.url(t.name));
    const io = followChild(['--token', tok.id, '--kind', 'INTENT']);
    try {
      await until(async () => io.stdout.includes('No audit rows match yet'), 30_000, 'the follow to start');
      // Postgres unreachable for the other replica: its allow is durable in its spool, with its time.
      await proxy.down();
      await other.writer.recordIntent(graphIntent(tok.id));
      expect(other.writer.spooling).toBe(true);
      // Minutes in an incident; here more than the 5 s a tail that reads by time looked back.
      await sleep(6_000);
      await gw.decide(tok.raw, read(s, 'after-the-outage.md'));
      await until(async () => / INTENT +allow +OK .*filesystem\/read_text_file/.test(io.stdout), 30_000, 'the row written directly');
      // Postgres is back: the spool is replayed, the row committed now with its ts of 6 s ago.
      await proxy.up();
      await until(async () => !other.writer.spooling, 30_000, 'the spool to be replayed');
      await until(async () => io.stdout.includes('memory/read_graph'), 30_000, 'the replayed row');
      // Two more polls: nothing is printed twice.
      await sleep(4_500);
      const rows = io.stdout.split('\n').filter((l) => / INTENT /.test(l));
      expect(rows).toHaveLength(2);
      // In the order they were committed, each with its own time.
      expect(rows[0]).toContain('filesystem/read_text_file');
      expect(rows[1]).toContain('memory/read_graph');
      expect(Date.parse(rows[1]!.slice(0, 24))).toBeLessThan(Date.parse(rows[0]!.slice(0, 24)) - 5_000);
      expect(io.stderr).toBe('');
    } finally {
      io.child.kill('SIGTERM');
      await other.close();
      await proxy.down();
    }
  }, 120_000);

  it('--follow shows a row of a replica whose clock is ten minutes behind, written after newer rows were shown', async () => {
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    const behind = await otherReplicaWriter(t.databaseUrl, () => Date.now() - 10 * 60_000);
    const io = followChild(['--token', tok.id, '--kind', 'INTENT']);
    try {
      await until(async () => io.stdout.includes('No audit rows match yet'), 30_000, 'the follow to start');
      await gw.decide(tok.raw, read(s, 'now.md'));
      await until(async () => / INTENT +allow +OK .*filesystem\/read_text_file/.test(io.stdout), 30_000, 'the row of this replica');
      await behind.writer.recordIntent(graphIntent(tok.id));
      await until(async () => io.stdout.includes('memory/read_graph'), 30_000, 'the row of the replica behind');
      await sleep(4_500);
      expect(io.stdout.split('\n').filter((l) => / INTENT /.test(l))).toHaveLength(2);
      expect(io.stderr).toBe('');
    } finally {
      io.child.kill('SIGTERM');
      await behind.close();
    }
  }, 120_000);
});
