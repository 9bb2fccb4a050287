import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { api, childEnv, killChildren, runCli, startChild, withTimeout } from '../helpers/control-plane.js';
import { freePort } from '../helpers/unleash.js';

// Graceful shutdown of a real `killswitch start` process: SIGTERM in the middle of a decision load must
// lose no INTENT row of an allowed decision (nor of a denial), finish the requests in flight and exit 0;
// a second signal exits at once; SHUTDOWN_TIMEOUT_MS bounds the wait for a request that never ends.
// The child runs the flags sync against the run's shared Unleash: it finds every flag and the webhook as
// the run left them and changes nothing, so the file runs beside the others (no shared flag is toggled there).

const unleash = inject('unleash');
const t = new TestContext();
const children: ChildProcess[] = [];
let owner = '';

const start = (extra: Record<string, string> = {}) => startChild(t, unleash, extra, children);

/** A request whose body never finishes arriving: in flight until its connection is cut. */
async function hangingRequest(base: string): Promise<Socket> {
  const { port } = new URL(base);
  const socket = connect(Number(port), '127.0.0.1');
  await once(socket, 'connect');
  socket.on('error', () => {});
  socket.write(`POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"server":`);
  return socket;
}

/**
 * `npm start` (`--ignore-scripts`: without the prestart UI build) in a session of its own, so that a test
 * can send a signal to its whole process group as a terminal's Ctrl-C does. Resolves once /readyz answers.
 */
async function npmStart(groups: number[]) {
  const port = await freePort();
  const npm = spawn('npm', ['start', '--ignore-scripts'], { env: childEnv(t, unleash, port), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  groups.push(npm.pid!);
  // Apart: a chunk of npm's stderr landing inside one of node's stdout lines would break that line.
  let out = '';
  let err = '';
  npm.stdout!.on('data', (c: Buffer) => {
    out += c.toString('utf8');
  });
  npm.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  // npm dies by a signal (code null) when its script's process did: it sends itself the same one.
  const exited = once(npm, 'exit').then(([code, signal]) => (code as number | null) ?? `killed by ${String(signal)}`);
  // After npm's exit, what node wrote last may still be in the pipe: the output is complete once it closes.
  const closed = once(npm, 'close');
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (!(await fetch(`${base}/readyz`).then((r) => r.status === 200, () => false))) {
    if (npm.exitCode !== null || Date.now() > deadline) throw new Error(`npm start did not become ready (exit ${npm.exitCode}):\n${out.slice(-3000)}\n${err.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const logs = () =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const nodePid = logs().find((l) => String(l['msg']).startsWith('Server listening'))?.['pid'];
  if (typeof nodePid !== 'number') throw new Error(`no "Server listening" line naming node's pid:\n${out.slice(-3000)}`);
  /** What npm and node printed last, for an assertion's message (one CI run found no "stopped:" line). */
  const tail = () => `stdout:\n${out.slice(-2500)}\nstderr:\n${err.slice(-1500)}`;
  return { npm, base, logs, exited, closed, nodePid, tail };
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

beforeAll(async () => {
  await t.setup();
  owner = (await runCli(t, unleash, ['operators', 'create', '--role', 'owner', '--name', 'shutdown test'])).stdout.trim();
  expect(owner).toMatch(/^ksop_/);
});
afterEach(() => {
  killChildren(children);
});
afterAll(() => t.teardown());

describe('graceful shutdown of killswitch start', () => {
  it('SIGTERM during a decision load: in-flight decisions finish, every answered decision has its INTENT row, exit 0', { timeout: 240_000 }, async () => {
    const cp = await start();
    const admin = { authorization: `Bearer ${owner}` };
    const gw = await api(cp.base, 'POST', '/v1/gateway-keys', admin, { name: 'load gateway' });
    expect(gw.status).toBe(201);
    const WORKERS = 16;
    const SIGNAL_AFTER = 1_500;
    const tokens: string[] = [];
    for (let i = 0; i < WORKERS; i++) {
      const tok = await api(cp.base, 'POST', '/v1/keys', admin, { type: 'rw', role: 'code_agent', project_id: 'alpha', environment: 'development', acknowledge_write_risk: true });
      expect(tok.status).toBe(201);
      tokens.push(tok.body.token!);
    }

    const answers: Array<{ id: string; decision: string; code: string; afterSignal: boolean }> = [];
    let signalled = false;
    let signalAt = 0;
    let refused = 0;
    let failed = 0;
    let reachedLoad: () => void = () => {};
    const loaded = new Promise<void>((r) => {
      reachedLoad = r;
    });
    const stopBy = Date.now() + 150_000;

    async function worker(token: string): Promise<void> {
      const headers = { authorization: `Bearer ${gw.body.key}`, 'x-agent-token': token };
      let session = '';
      for (let calls = 0; Date.now() < stopBy; calls++) {
        try {
          if (calls % 150 === 0) {
            // A session allows 200 calls (fixture policy): open a new one well before.
            const s = await api(cp.base, 'POST', '/v1/sessions', headers, {});
            if (s.status !== 201) {
              refused++;
              return;
            }
            session = s.body.session_id!;
          }
          // Three reads (allowed) and one delete the token's scopes do not cover (denied, no halt).
          const body =
            calls % 4 === 3
              ? { server: 'memory', tool: 'delete_entities', arguments: { entityNames: [`e${calls}`] }, session_id: session }
              : { server: 'filesystem', tool: 'read_text_file', arguments: { path: `docs/${calls}.md` }, session_id: session };
          const d = await api(cp.base, 'POST', '/v1/decisions', headers, body);
          if (d.status !== 200) {
            refused++; // 503 while closing: the load balancer's cue to go elsewhere
            return;
          }
          answers.push({ id: String(d.body['decision_id']), decision: String(d.body['decision']), code: String(d.body['code']), afterSignal: signalled });
          if (answers.length === SIGNAL_AFTER) reachedLoad();
        } catch {
          failed++; // connection refused or closed: the server stopped accepting
          return;
        }
      }
    }

    const load = Promise.all(tokens.map((tok) => worker(tok)));
    await withTimeout(loaded, 90_000, `${SIGNAL_AFTER} decisions before the signal`);
    signalled = true;
    signalAt = Date.now();
    cp.child.kill('SIGTERM');
    await withTimeout(load, 60_000, 'the load to end after SIGTERM');
    const exit = await withTimeout(cp.exited, 60_000, 'the process to exit after SIGTERM');

    const allowed = answers.filter((a) => a.decision === 'allow');
    const denied = answers.filter((a) => a.decision === 'deny');
    const pool = t.pool();
    const { rows } = await pool.query<{ decision_id: string; decision: string }>(`SELECT decision_id, decision FROM audit_events WHERE kind = 'INTENT'`);
    const intents = new Map(rows.map((r) => [r.decision_id, r.decision]));
    const allowRows = rows.filter((r) => r.decision === 'allow').length;
    const denyRows = rows.filter((r) => r.decision === 'deny').length;
    const missingAllows = allowed.filter((a) => intents.get(a.id) !== 'allow');
    const missingDenials = denied.filter((a) => intents.get(a.id) !== 'deny');
    const stopped = cp.logs().find((l) => String(l['msg']).startsWith('stopped:'));
    const report = {
      answered: answers.length,
      allowed_answers: allowed.length,
      intent_allow_rows: allowRows,
      denied_answers: denied.length,
      intent_deny_rows: denyRows,
      answered_after_sigterm: answers.filter((a) => a.afterSignal).length,
      refused_503: refused,
      connection_errors: failed,
      exit_code: exit.code,
      exit_ms_after_sigterm: exit.at - signalAt,
      audit_rows_lost: stopped?.['audit_rows_lost'],
      audit_spool_rows: stopped?.['audit_spool_rows'],
    };
    console.log('shutdown under load:', JSON.stringify(report));

    expect(exit.code).toBe(0);
    expect(missingAllows).toEqual([]);
    expect(missingDenials).toEqual([]);
    // No INTENT for an allow the client never saw either: answers and rows match one to one.
    expect(allowRows).toBe(allowed.length);
    expect(allowed.length).toBeGreaterThan(1_000);
    expect(denied.length).toBeGreaterThan(300);
    expect(answers.every((a) => a.code === 'OK' || a.code === 'PERMISSION_DENIED')).toBe(true);
    expect(stopped).toMatchObject({ audit_rows_lost: 0, audit_spool_rows: 0 });
    expect(cp.logs().some((l) => l['msg'] === 'shutting down: no new connections, finishing in-flight requests, then flushing the audit trail (a second signal exits at once)')).toBe(true);
    // The answer of a request in flight at the signal still came (workers keep 16 requests in flight).
    expect(report.answered_after_sigterm).toBeGreaterThan(0);
    // And the hash chains the writer sealed before stopping are intact.
    expect((await runCli(t, unleash, ['audit', 'verify'])).code).toBe(0);
  });

  it('a first start on a Postgres without the database creates it, starts, and shuts down with its chain closed (the README\'s npm start on a clean machine)', { timeout: 120_000 }, async () => {
    const name = `${t.name}_fresh`;
    const url = new URL(t.databaseUrl);
    url.pathname = `/${name}`;
    try {
      const cp = await start({ DATABASE_URL: url.toString(), DATA_DIR: `${t.dataDir}/fresh` });
      expect((await t.pool().query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount).toBe(1);
      cp.child.kill('SIGTERM');
      expect((await withTimeout(cp.exited, 30_000, 'exit after SIGTERM')).code).toBe(0);
      const fresh = new pg.Client({ connectionString: url.toString() });
      await fresh.connect();
      try {
        const kinds = (await fresh.query<{ kind: string }>('SELECT kind FROM audit_events ORDER BY ts, seq')).rows.map((r) => r.kind);
        expect(kinds[0]).toBe('CHAIN_START');
        expect(kinds.at(-1)).toBe('CHAIN_END');
      } finally {
        await fresh.end();
      }
    } finally {
      await t.pool().query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await t.pool().query(`DROP DATABASE IF EXISTS "${name}_unleash" WITH (FORCE)`);
    }
  });

  it('a second signal exits at once while the first waits for a request in flight', { timeout: 120_000 }, async () => {
    // The longest SHUTDOWN_TIMEOUT_MS (10 min): the hanging request holds the first signal's drain for far
    // longer than this test may run, so only the second signal can end the process.
    const cp = await start({ SHUTDOWN_TIMEOUT_MS: '600000' });
    const socket = await hangingRequest(cp.base);
    await new Promise((r) => setTimeout(r, 200));
    cp.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 1_000));
    // Still draining.
    expect(cp.child.exitCode).toBeNull();
    cp.child.kill('SIGTERM');
    const exit = await withTimeout(cp.exited, 10_000, 'exit after the second signal');
    socket.destroy();
    expect(exit.code).toBe(143);
    expect(cp.logs().some((l) => String(l['msg']).startsWith('second signal: exiting now'))).toBe(true);
  });

  it('a signal the moment the port first answers is drained: the handlers are in place before the port accepts a connection', { timeout: 120_000 }, async () => {
    // The start's first readiness answer is where a supervisor (npm, a test, an orchestrator that saw the
    // probe pass) may send its signal. It once found no handler yet (the start loaded a module of the bundle
    // after listening): node died by the signal, undrained, and `npm start` with it (exit code null).
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const port = await freePort();
      const child = spawn('node', ['bin/killswitch.js', 'start'], { env: childEnv(t, unleash, port), stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      let out = '';
      child.stdout!.on('data', (c: Buffer) => {
        out += c.toString('utf8');
      });
      child.stderr!.on('data', (c: Buffer) => {
        out += c.toString('utf8');
      });
      // 'close': exited, and everything it wrote read.
      const closed = once(child, 'close');
      const deadline = Date.now() + 60_000;
      // As often as a request can be made: the signal follows the first 200 at once.
      while (!(await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false))) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`not ready (exit ${child.exitCode}):\n${out.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 2));
      }
      child.kill(signal);
      const [code, killedBy] = await withTimeout(closed, 30_000, `exit after ${signal}`);
      expect({ code, killedBy }, out.slice(-3000)).toEqual({ code: 0, killedBy: null });
      expect(out, out.slice(-3000)).toMatch(new RegExp(`"signal":"${signal}".*"msg":"shutting down`));
      expect(out).toContain('"msg":"stopped: ');
    }
  });

  it('SHUTDOWN_TIMEOUT_MS cuts a request that never ends, then the shutdown completes (exit 0)', { timeout: 120_000 }, async () => {
    const cp = await start({ SHUTDOWN_TIMEOUT_MS: '1000' });
    const socket = await hangingRequest(cp.base);
    await new Promise((r) => setTimeout(r, 200));
    cp.child.kill('SIGINT');
    const exit = await withTimeout(cp.exited, 20_000, 'exit after SHUTDOWN_TIMEOUT_MS');
    socket.destroy();
    expect(exit.code).toBe(0);
    // The cut is the SHUTDOWN_TIMEOUT_MS timer's (the line it logs, with the configured value), not a drain
    // that ended the request at once.
    const logs = cp.logs();
    expect(logs.find((l) => String(l['msg']).includes('cutting their connections'))).toMatchObject({ timeout_ms: 1000 });
    expect(logs.find((l) => String(l['msg']).startsWith('stopped:'))).toMatchObject({ audit_rows_lost: 0 });
  });

  describe('under npm start', () => {
    // npm runs the start script with `sh -c`, which does not exec its last command: unless the script
    // execs node, npm's SIGTERM ends npm and sh while node goes on serving, re-parented, never drained.
    const groups: number[] = [];
    afterEach(() => {
      for (const pgid of groups.splice(0)) {
        try {
          process.kill(-pgid, 'SIGKILL');
        } catch {
          // the group is gone: every process of it exited
        }
      }
    });

    it('SIGTERM to npm reaches node: it drains and exits, npm exits 0, nothing listens', { timeout: 120_000 }, async () => {
      const cp = await npmStart(groups);
      expect(cp.nodePid).not.toBe(cp.npm.pid);
      cp.npm.kill('SIGTERM');
      const code = await withTimeout(cp.exited, 60_000, 'npm to exit after SIGTERM');
      expect(running(cp.nodePid)).toBe(false);
      await withTimeout(cp.closed, 10_000, "npm's output to close");
      expect(code, cp.tail()).toBe(0);
      const logs = cp.logs().filter((l) => l['pid'] === cp.nodePid);
      expect(logs.find((l) => String(l['msg']).startsWith('shutting down')), cp.tail()).toMatchObject({ signal: 'SIGTERM' });
      expect(logs.find((l) => String(l['msg']).startsWith('stopped:')), cp.tail()).toMatchObject({ audit_rows_lost: 0 });
      await expect(fetch(`${cp.base}/healthz`)).rejects.toThrow();
    });

    it('a Ctrl-C (SIGINT to the process group) drains once: npm forwarding the same SIGINT is not a second signal', { timeout: 120_000 }, async () => {
      const cp = await npmStart(groups);
      process.kill(-cp.npm.pid!, 'SIGINT');
      const code = await withTimeout(cp.exited, 60_000, 'npm to exit after Ctrl-C');
      expect(running(cp.nodePid)).toBe(false);
      await withTimeout(cp.closed, 10_000, "npm's output to close");
      const logs = cp.logs().filter((l) => l['pid'] === cp.nodePid);
      expect(logs.some((l) => String(l['msg']).startsWith('second signal')), cp.tail()).toBe(false);
      expect(logs.find((l) => String(l['msg']).startsWith('stopped:')), cp.tail()).toMatchObject({ audit_rows_lost: 0 });
      expect(code, cp.tail()).toBe(0);
      await expect(fetch(`${cp.base}/healthz`)).rejects.toThrow();
    });
  });
});
