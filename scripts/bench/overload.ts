/**
 * What an overloaded control plane does (an experiment; not part of `bench:decisions`).
 *
 * Allowed decisions arrive at a fixed rate above what the control plane can answer, each abandoned by its
 * "gateway" after TIMEOUT_MS as the real gateway does (its socket closed, as an aborted fetch does). Every
 * 500 ms an operator's GET /readyz and GET /v1/kills are timed, and half-way through an operator kills
 * everything (POST /v1/kills). Reports: answers within the timeout (goodput), timeouts, how long the
 * operator waited, how long the kill took to answer and whether any decision sent after it was allowed,
 * and how many allows the audit trail holds against how many the "gateways" received.
 *
 *   npm run bench:overload -- --rate 8000 --seconds 16 [--timeout 2000] [--port 18090] [--env NAME=value ...]
 *
 * Its databases (killswitch_overload, killswitch_overload_unleash) are dropped and its Redis prefix
 * (ksoverload:) cleared at the start of each run. The load comes from a process of its own; above ~6,000/s
 * on a 2-core machine it cannot keep its schedule (`generator_max_lag_s`), and the numbers are then of the
 * whole machine. Prints one JSON line and the operator's probes (docs/performance.md, "Overload").
 */
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { generateCredential } from '../../src/tokens/format.js';

const { values: args } = parseArgs({
  options: {
    rate: { type: 'string', default: '6000' },
    seconds: { type: 'string', default: '20' },
    timeout: { type: 'string', default: '2000' },
    port: { type: 'string', default: '18090' },
    env: { type: 'string', multiple: true, default: [] },
    generator: { type: 'boolean', default: false },
  },
});
const RATE = Number(args.rate);
const SECONDS = Number(args.seconds);
const TIMEOUT_MS = Number(args.timeout);
const CP_PORT = Number(args.port);
const UNLEASH_PORT = CP_PORT + 1;
const PG = 'postgres://postgres@127.0.0.1:5432';
const DB = 'killswitch_overload';
const UNLEASH_DB = 'killswitch_overload_unleash';
const OWNER = generateCredential('ksop_');
const env: Record<string, string> = {
  ...(process.env as Record<string, string>),
  PORT: String(CP_PORT),
  DATABASE_URL: `${PG}/${DB}`,
  UNLEASH_DATABASE_URL: `${PG}/${UNLEASH_DB}`,
  UNLEASH_PORT: String(UNLEASH_PORT),
  UNLEASH_URL: '',
  UNLEASH_ADMIN_TOKEN: '*:*.ov-admin-token',
  UNLEASH_API_TOKEN: 'default:development.ov-backend-token',
  REDIS_PREFIX: 'ksoverload:',
  POLICY_FILE: 'policy/bench.yaml',
  LOG_LEVEL: 'warn',
  BOOTSTRAP_OWNER_KEY: OWNER,
  TOKEN_HASH_SECRET: 'overload-secret-overload-secret-overload-1',
  DATA_DIR: `${os.tmpdir()}/ks-overload-data`,
};
for (const kv of args.env ?? []) {
  const i = kv.indexOf('=');
  env[kv.slice(0, i)] = kv.slice(i + 1);
}

async function reset(): Promise<void> {
  const c = new pg.Client({ connectionString: `${PG}/postgres` });
  await c.connect();
  for (const db of [DB, UNLEASH_DB]) await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await c.end();
  const redis = new Redis();
  const stream = redis.scanStream({ match: `${env['REDIS_PREFIX']}*`, count: 1000 });
  for await (const keys of stream as AsyncIterable<string[]>) if (keys.length > 0) await redis.unlink(...keys);
  await redis.quit();
}

async function api(method: string, path: string, key: string, body?: unknown, agent?: string): Promise<{ status: number; json: Record<string, unknown>; ms: number }> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (agent) headers['x-agent-token'] = agent;
  const t0 = performance.now();
  const res = await fetch(`http://127.0.0.1:${CP_PORT}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  return { status: res.status, json, ms: performance.now() - t0 };
}

async function waitReady(): Promise<void> {
  for (let i = 0; i < 400; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${CP_PORT}/readyz`)).ok) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error('control plane not ready');
}

/** A keep-alive socket carrying one request at a time, as the gateway's HTTP pool does. */
class Conn {
  readonly socket: net.Socket;
  private buf = '';
  private pending: { at: number; wall: number; timer: NodeJS.Timeout; onAnswer: (ms: number, code: string, sentAt: number) => void } | undefined;
  dead = false;

  constructor(private readonly release: (c: Conn) => void) {
    this.socket = net.connect({ host: '127.0.0.1', port: CP_PORT, noDelay: true });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => this.read(chunk));
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.dead = true;
    });
  }

  send(bytes: Buffer, onAnswer: (ms: number, code: string, sentAt: number) => void, onTimeout: () => void): void {
    const at = performance.now();
    // An abandoned request closes its socket (an aborted fetch does), so its answer cannot be read by the next.
    const timer = setTimeout(() => {
      this.pending = undefined;
      this.dead = true;
      this.socket.destroy();
      onTimeout();
    }, TIMEOUT_MS);
    this.pending = { at, wall: Date.now(), timer, onAnswer };
    this.socket.write(bytes);
  }

  private read(chunk: string): void {
    this.buf += chunk;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0 || !this.pending) return;
    const len = Number(/content-length:\s*(\d+)/i.exec(this.buf.slice(0, end))?.[1] ?? 0);
    if (this.buf.length < end + 4 + len) return;
    const status = this.buf.slice(9, 12);
    const code = /"code":"([A-Z_]+)"/.exec(this.buf.slice(end + 4, end + 4 + len))?.[1] ?? `HTTP ${status}`;
    this.buf = this.buf.slice(end + 4 + len);
    const p = this.pending;
    this.pending = undefined;
    clearTimeout(p.timer);
    // The wall clock of the write: comparable with the operator's (another process, the same machine).
    p.onAnswer(performance.now() - p.at, code, p.wall);
    this.release(this);
  }
}

const idle: Conn[] = [];
function fire(bytes: Buffer, onAnswer: (latency: number, code: string | undefined, sentAt: number) => void, onTimeout: () => void, _onError: () => void): void {
  let c = idle.pop();
  while (c?.dead) c = idle.pop();
  c ??= new Conn((x) => idle.push(x));
  c.send(bytes, onAnswer, onTimeout);
}

async function main(): Promise<void> {
  await reset();
  const cp: ChildProcess = spawn(process.execPath, ['--no-allocation-site-pretenuring', 'bin/killswitch.js', 'start'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  process.on('exit', () => cp.kill('SIGTERM'));
  await waitReady();
  const gw = (await api('POST', '/v1/gateway-keys', OWNER, { name: 'ov' })).json['key'] as string;
  const rw = (await api('POST', '/v1/keys', OWNER, { type: 'rw', role: 'bench_agent', project_id: 'bench', environment: 'development', acknowledge_write_risk: true, scopes: ['storage:read', 'storage:write', 'db:select', 'net:read'] })).json['token'] as string;
  const session = (await api('POST', '/v1/sessions', gw, {}, rw)).json['session_id'] as string;
  const body = JSON.stringify({ server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/readme.md' }, session_id: session, resources: ['file:///tmp/ks-bench/docs/readme.md'] });
  const bytes = Buffer.from(`POST /v1/decisions HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\nauthorization: Bearer ${gw}\r\nx-agent-token: ${rw}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  // Warm up at a rate it can answer.
  await new Promise<void>((resolve) => {
    let n = 0;
    const iv = setInterval(() => {
      for (let i = 0; i < 10; i++) fire(bytes, () => {}, () => {}, () => {});
      if (++n >= 300) {
        clearInterval(iv);
        setTimeout(resolve, 3000);
      }
    }, 10);
  });

  const probes: Array<{ t: number; readyz: number; kills: number; lag: string }> = [];
  let kill: { status: number; ms: number; sentAt: number } | undefined;
  let killAnsweredAt = Number.POSITIVE_INFINITY;
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/bench/overload.ts', '--generator', '--rate', String(RATE), '--seconds', String(SECONDS), '--timeout', String(TIMEOUT_MS), '--port', String(CP_PORT)], { stdio: ['pipe', 'pipe', 'inherit'] });
  child.stdin!.end(bytes.toString('base64'));
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const startedAt = Date.now();
  const probe = setInterval(async () => {
    const t = (Date.now() - startedAt) / 1000;
    const [r, k, m] = await Promise.all([
      api('GET', '/readyz', OWNER).catch(() => ({ ms: -1 })),
      api('GET', '/v1/kills', OWNER).catch(() => ({ ms: -1 })),
      fetch(`http://127.0.0.1:${CP_PORT}/metrics`, { headers: { authorization: `Bearer ${OWNER}` } })
        .then((x) => x.text())
        .catch(() => ''),
    ]);
    const lag = (q: string) => Math.round(Number(new RegExp(`^nodejs_eventloop_lag_${q}_seconds (\\S+)`, 'm').exec(m)?.[1] ?? Number.NaN) * 1000);
    probes.push({ t: +t.toFixed(1), readyz: Math.round(r.ms), kills: Math.round(k.ms), lag: `${lag('mean')}|${lag('p99')}|${lag('max')}` });
  }, 500);
  const killTimer = setTimeout(async () => {
    const sentAt = Date.now();
    const r = await api('POST', '/v1/kills', OWNER, { target: 'everything', reason: 'overload experiment' });
    killAnsweredAt = Date.now();
    kill = { status: r.status, ms: Math.round(r.ms), sentAt: +((sentAt - startedAt) / 1000).toFixed(1) };
  }, (SECONDS * 1000) / 2);
  await new Promise((r) => child.once('exit', r));
  const loadEnded = new Date();
  clearInterval(probe);
  clearTimeout(killTimer);
  const { ok_sent_at: okSentAt, ...result } = JSON.parse(out) as Record<string, unknown> & { ok_sent_at: number[] };
  // Allowed although written after the operator had the kill's 201 (an INTENT's ts is when its answer was
  // read, which under overload can be long after its gate check ran, so the trail cannot say this).
  const okSentAfterKill = okSentAt.filter((at) => at > killAnsweredAt).length;
  // Give the audit writer a moment, then count what the trail says.
  await new Promise((r) => setTimeout(r, 3000));
  const c = new pg.Client({ connectionString: `${PG}/${DB}` });
  await c.connect();
  const { rows } = await c.query<{ decision: string; code: string; n: string }>("SELECT decision, code, count(*) AS n FROM audit_events WHERE kind = 'INTENT' AND tool = 'read_text_file' GROUP BY 1, 2 ORDER BY 1, 2");
  const last = await c.query<{ ms: number }>("SELECT extract(epoch FROM max(ts) - $1::timestamptz) * 1000 AS ms FROM audit_events WHERE kind = 'INTENT'", [loadEnded]);
  await c.end();
  console.log(JSON.stringify({ ...result, last_decision_after_load_ended_ms: Math.round(Number(last.rows[0]?.ms)), kill, allows_sent_after_the_kill_answered: okSentAfterKill, audit_intents: rows }));
  console.log('operator probes (s: readyz ms / GET kills ms, event loop lag mean|p99|max ms):', probes.map((p) => `${p.t}: ${p.readyz}/${p.kills} lag ${p.lag}`).join(', '));
  cp.kill('SIGTERM');
  await new Promise((r) => cp.once('exit', r));
}


/** The load, in a process of its own (its pauses and sockets are not the operator's). */
async function generator(): Promise<void> {
  let input = '';
  for await (const chunk of process.stdin) input += chunk;
  const bytes = Buffer.from(input, 'base64');
  const codes: Record<string, number> = {};
  let timeouts = 0;
  const latencies: number[] = [];
  /** When each allowed request was written (wall clock): one written after the kill was answered must not be allowed. */
  const okSentAt: number[] = [];
  const start = performance.now();
  const total = RATE * SECONDS;
  let sent = 0;
  let maxLag = 0;
  await new Promise<void>((resolve) => {
    let outstanding = 0;
    const finish = () => {
      outstanding--;
      if (sent >= total && outstanding === 0) resolve();
    };
    const tick = setInterval(() => {
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * RATE));
      maxLag = Math.max(maxLag, (due - sent) / RATE);
      while (sent < due) {
        sent++;
        outstanding++;
        fire(
          bytes,
          (ms, code, sentAt) => {
            latencies.push(ms);
            codes[code ?? '?'] = (codes[code ?? '?'] ?? 0) + 1;
            if (code === 'OK') okSentAt.push(sentAt);
            finish();
          },
          () => {
            timeouts++;
            finish();
          },
          finish,
        );
      }
      if (sent >= total) clearInterval(tick);
    }, 1);
  });
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))] ?? 0);
  // process.exit (below) would drop what a pipe has not taken yet: wait for the write.
  await new Promise<void>((resolve) => process.stdout.write(JSON.stringify({ rate: RATE, seconds: SECONDS, timeout_ms: TIMEOUT_MS, sent, answered: latencies.length, timeouts, codes, p50_ms: pct(50), p99_ms: pct(99), max_ms: pct(100), generator_max_lag_s: +maxLag.toFixed(3), ok_sent_at: okSentAt }), () => resolve()));
}

(args.generator ? generator() : main()).then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
