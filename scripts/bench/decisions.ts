// Benchmark of the decision API against a running control plane, side by side with a Fastify hello
// world measured in the same run (DESIGN.md §9: compare ratios, not absolute times).
//
//   npm run bench:decisions -- [--seconds 10] [--rate 2000] [--connections 50] [--inproc 20000]
//
// 1. Starts a control plane (`killswitch start`, embedded Unleash, policy/bench.yaml: limits high,
//    halting triggers off) and a hello-world Fastify, each in its own process.
// 2. Closed loop (autocannon, N connections): hello world; decisions allow-only; the realistic mix
//    (1/3 allow, 1/3 deny by scope, 1/3 deny by flag). req/s and p50/p99.
// 3. Open loop at a fixed rate with a smooth generator (1 ms ticks, latency measured from each request's
//    scheduled time so queueing is not hidden): allow-only (durable audit INTENT) and the mix.
// 4. In process, without HTTP: DecisionService.decide() in a loop; p50/p99 per decision and per step.
// Prints tables, writes bench-results/decisions-<ts>.json, and the section of docs/performance.md.

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import pg from 'pg';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { newCallContext } from '../../src/decisions/service.js';
import { UnleashAdmin } from '../../src/flags/admin-client.js';
import { generateCredential } from '../../src/tokens/format.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rate: { type: 'string', default: '2000' },
    connections: { type: 'string', default: '50' },
    inproc: { type: 'string', default: '20000' },
  },
});
const SECONDS = Number(args.seconds);
const RATE = Number(args.rate);
const CONNECTIONS = Number(args.connections);
const INPROC = Number(args.inproc);

const PG = 'postgres://postgres@127.0.0.1:5432';
const DB = 'killswitch_bench';
const UNLEASH_DB = 'killswitch_bench_unleash';
const CP_PORT = 18080;
const HELLO_PORT = 18081;
const UNLEASH_PORT = 14242;
const OWNER = generateCredential('ksop_');
const SECRET = 'bench-secret-bench-secret-bench-secret-123';
const ADMIN_TOKEN = '*:*.bench-admin-token';
const API_TOKEN = 'default:development.bench-backend-token';

const env = {
  ...process.env,
  PORT: String(CP_PORT),
  DATABASE_URL: `${PG}/${DB}`,
  UNLEASH_DATABASE_URL: `${PG}/${UNLEASH_DB}`,
  UNLEASH_PORT: String(UNLEASH_PORT),
  UNLEASH_URL: '',
  UNLEASH_ADMIN_TOKEN: ADMIN_TOKEN,
  UNLEASH_API_TOKEN: API_TOKEN,
  REDIS_PREFIX: 'ksbench:',
  POLICY_FILE: 'policy/bench.yaml',
  LOG_LEVEL: 'warn',
  BOOTSTRAP_OWNER_KEY: OWNER,
  TOKEN_HASH_SECRET: SECRET,
  DATA_DIR: os.tmpdir() + '/ks-bench-data',
};

async function resetDatabases(): Promise<void> {
  const c = new pg.Client({ connectionString: `${PG}/postgres` });
  await c.connect();
  for (const db of [DB, UNLEASH_DB]) await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await c.end();
}

function startProcess(args: string[], extraEnv: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, args, { env: { ...env, ...extraEnv }, stdio: ['ignore', 'ignore', 'inherit'] });
  return child;
}

async function waitFor(url: string, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function api(method: string, path: string, key: string, body?: unknown, agent?: string): Promise<Record<string, unknown>> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
  if (agent) headers['x-agent-token'] = agent;
  const res = await fetch(`http://127.0.0.1:${CP_PORT}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const json = (await res.json()) as Record<string, unknown>;
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

interface Req {
  method: 'POST' | 'GET';
  path: string;
  headers: Record<string, string>;
  body?: string;
  expect?: string;
}

interface Measured {
  name: string;
  req_per_s: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  codes?: Record<string, number>;
}

async function closedLoop(name: string, port: number, requests: Req[]): Promise<Measured> {
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    duration: SECONDS,
    requests: requests.map((r) => ({ method: r.method, path: r.path, headers: r.headers, ...(r.body ? { body: r.body } : {}) })),
  });
  return { name, req_per_s: Math.round(result.requests.average), p50_ms: result.latency.p50, p99_ms: result.latency.p99, errors: result.errors + result.non2xx };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Open loop: requests are scheduled at a fixed rate whatever the answers do; latency from schedule. */
async function openLoop(name: string, port: number, requests: Req[], rate: number): Promise<Measured> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  const latencies: number[] = [];
  const codes: Record<string, number> = {};
  let errors = 0;
  let sent = 0;
  const total = rate * SECONDS;
  const start = performance.now();
  const inFlight = new Set<Promise<void>>();
  const send = (scheduledAt: number, r: Req) => {
    const p = new Promise<void>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port, method: r.method, path: r.path, headers: r.headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          latencies.push(performance.now() - scheduledAt);
          if (res.statusCode !== 200) errors++;
          else if (r.expect !== undefined) {
            const code = (JSON.parse(Buffer.concat(chunks).toString()) as { code: string }).code;
            codes[code] = (codes[code] ?? 0) + 1;
          }
          resolve();
        });
      });
      req.on('error', () => {
        errors++;
        resolve();
      });
      if (r.body) req.end(r.body);
      else req.end();
    });
    inFlight.add(p);
    void p.then(() => inFlight.delete(p));
  };
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = performance.now() - start;
      const due = Math.min(total, Math.floor((elapsed / 1000) * rate));
      while (sent < due) {
        const scheduledAt = start + (sent / rate) * 1000;
        send(scheduledAt, requests[sent % requests.length]!);
        sent++;
      }
      if (sent >= total) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  await Promise.all(inFlight);
  agent.destroy();
  latencies.sort((a, b) => a - b);
  return { name, req_per_s: Math.round(latencies.length / SECONDS), p50_ms: +percentile(latencies, 50).toFixed(2), p99_ms: +percentile(latencies, 99).toFixed(2), errors, codes };
}

async function main(): Promise<void> {
  await resetDatabases();
  const hello = startProcess(['--import', 'tsx', 'scripts/bench/hello.ts', String(HELLO_PORT)]);
  const cp = startProcess(['bin/killswitch.js', 'start']);
  const stopAll = () => {
    hello.kill('SIGTERM');
    cp.kill('SIGTERM');
  };
  process.on('exit', stopAll);
  try {
    await waitFor(`http://127.0.0.1:${HELLO_PORT}/`);
    await waitFor(`http://127.0.0.1:${CP_PORT}/readyz`);

    // Credentials and sessions through the admin and gateway APIs.
    const gw = (await api('POST', '/v1/gateway-keys', OWNER, { name: 'bench' }))['key'] as string;
    const rw = (await api('POST', '/v1/keys', OWNER, { type: 'rw', role: 'bench_agent', project_id: 'bench', environment: 'development', acknowledge_write_risk: true, scopes: ['storage:read', 'storage:write', 'db:select', 'net:read'] }))['token'] as string;
    const session = (await api('POST', '/v1/sessions', gw, {}, rw))['session_id'] as string;
    // Deny by flag: the fetch server's read capability is switched off in Unleash.
    const admin = new UnleashAdmin(`http://127.0.0.1:${UNLEASH_PORT}/api`, ADMIN_TOKEN);
    await admin.setEnabled('mcp.fetch.read', 'development', false);
    await new Promise((r) => setTimeout(r, 2_500));

    const headers = { authorization: `Bearer ${gw}`, 'x-agent-token': rw, 'content-type': 'application/json' };
    const decision = (server: string, tool: string, args: Record<string, unknown>, expect: string): Req => ({
      method: 'POST',
      path: '/v1/decisions',
      headers,
      body: JSON.stringify({ server, tool, arguments: args, session_id: session, resources: args['path'] ? [`file:///tmp/ks-bench/${String(args['path'])}`] : [], client: { name: 'claude-desktop', version: '1.2' } }),
      expect,
    });
    const allow = decision('filesystem', 'read_text_file', { path: 'docs/readme.md' }, 'OK');
    const denyScope = decision('memory', 'delete_entities', { entityNames: ['alice'] }, 'PERMISSION_DENIED');
    const denyFlag = decision('fetch', 'fetch', { url: 'https://example.com' }, 'KILL_SWITCH');
    const mix = [allow, denyScope, denyFlag];
    for (const r of mix) {
      const res = await fetch(`http://127.0.0.1:${CP_PORT}${r.path}`, { method: 'POST', headers: r.headers, body: r.body! });
      const code = ((await res.json()) as { code: string }).code;
      if (code !== r.expect) throw new Error(`warm-up: expected ${r.expect}, got ${code}`);
    }
    const helloReq: Req = { method: 'GET', path: '/', headers: {} };

    console.log(`closed loop, ${CONNECTIONS} connections, ${SECONDS} s each ...`);
    const closed = [
      await closedLoop('hello world', HELLO_PORT, [helloReq]),
      await closedLoop('decisions: allow only (durable INTENT)', CP_PORT, [allow]),
      await closedLoop('decisions: deny by scope only', CP_PORT, [denyScope]),
      await closedLoop('decisions: mix (allow / deny scope / deny flag)', CP_PORT, mix),
    ];
    console.log(`open loop at ${RATE} req/s, ${SECONDS} s each ...`);
    const open = [
      await openLoop('hello world', HELLO_PORT, [helloReq], RATE),
      await openLoop('decisions: allow only (durable INTENT)', CP_PORT, [allow], RATE),
      await openLoop('decisions: mix', CP_PORT, mix, RATE),
    ];

    // In process: the pipeline without HTTP, against the same Postgres, Redis and Unleash.
    const inproc = await inProcess(gw, rw, session);

    const helloRps = closed[0]!.req_per_s;
    const report = {
      at: new Date().toISOString(),
      machine: { cpus: os.cpus().length, node: process.version, load: os.loadavg() },
      params: { seconds: SECONDS, rate: RATE, connections: CONNECTIONS },
      closed_loop: closed.map((m) => ({ ...m, vs_hello: +(m.req_per_s / helloRps).toFixed(3) })),
      open_loop: open,
      in_process: inproc,
    };
    await mkdir('bench-results', { recursive: true });
    const file = `bench-results/decisions-${report.at.replace(/[:.]/g, '-')}.json`;
    await writeFile(file, JSON.stringify(report, null, 2));
    const table = renderTable(report, file);
    console.log(table);
    await updatePerformanceDoc(table);
  } finally {
    stopAll();
  }
}

async function inProcess(gw: string, rw: string, session: string) {
  const config = loadConfig(env as Record<string, string>, { unleashUrl: `http://127.0.0.1:${UNLEASH_PORT}/api`, port: 0, logLevel: 'silent' });
  const app = await buildApp(config, { migrate: false });
  try {
    const gateway = await app.ctx.auth.authenticate(gw);
    const agent = await app.ctx.auth.authenticate(rw);
    if (gateway.kind !== 'gateway' || agent.kind !== 'agent') throw new Error('credentials');
    const totals: number[] = [];
    const steps = new Map<string, number[]>();
    for (let i = 0; i < INPROC; i++) {
      const ctx = newCallContext({ gateway, agent, ip: '127.0.0.1', input: { server: 'filesystem', tool: 'read_text_file', arguments: { path: `docs/${i % 50}.md` }, session_id: session } });
      const t0 = performance.now();
      const answer = await app.ctx.decisions.decide(ctx);
      totals.push((performance.now() - t0) * 1000);
      if (answer.code !== 'OK') throw new Error(`in-process decision: ${answer.code} ${answer.message}`);
      for (const s of ctx.trace) {
        const list = steps.get(s.step) ?? [];
        list.push(s.micros);
        steps.set(s.step, list);
      }
    }
    totals.sort((a, b) => a - b);
    const out: Record<string, { p50_us: number; p99_us: number }> = { 'decide (total, durable INTENT)': { p50_us: +percentile(totals, 50).toFixed(1), p99_us: +percentile(totals, 99).toFixed(1) } };
    for (const [name, list] of steps) {
      list.sort((a, b) => a - b);
      out[`step ${name}`] = { p50_us: +percentile(list, 50).toFixed(1), p99_us: +percentile(list, 99).toFixed(1) };
    }
    return { decisions: INPROC, sequential: true, timings: out };
  } finally {
    await app.close();
  }
}

function renderTable(r: { at: string; machine: { cpus: number; node: string; load: number[] }; closed_loop: Array<Measured & { vs_hello: number }>; open_loop: Measured[]; in_process: { decisions: number; timings: Record<string, { p50_us: number; p99_us: number }> } }, file: string): string {
  const lines = [
    '## Decisions',
    '',
    '`npm run bench:decisions` (scripts/bench/decisions.ts): a control plane started by `killswitch start`',
    '(embedded Unleash, `policy/bench.yaml`: limits far above the load, halting triggers off) and a Fastify',
    'hello world in separate processes, measured in the same run. The load generator runs in a third process.',
    '',
    `Measured ${r.at.slice(0, 10)} on this machine (${r.machine.cpus} cores, Node ${r.machine.node}, load average at the end ${r.machine.load.map((l) => l.toFixed(1)).join(' / ')}). Raw: \`${file}\`.`,
    '',
    `Closed loop (autocannon, ${CONNECTIONS} connections, ${SECONDS} s; target: decisions ≥ 25% of hello world):`,
    '',
    '| workload | req/s | vs hello world | p50 | p99 | errors |',
    '|---|---|---|---|---|---|',
    ...r.closed_loop.map((m) => `| ${m.name} | ${m.req_per_s} | ${(m.vs_hello * 100).toFixed(0)}% | ${m.p50_ms} ms | ${m.p99_ms} ms | ${m.errors} |`),
    '',
    `Open loop at ${RATE} req/s (smooth generator, latency from each request's scheduled time; target: allow p99 ≤ 4 ms):`,
    '',
    '| workload | answered/s | p50 | p99 | errors | codes |',
    '|---|---|---|---|---|---|',
    ...r.open_loop.map((m) => `| ${m.name} | ${m.req_per_s} | ${m.p50_ms} ms | ${m.p99_ms} ms | ${m.errors} | ${m.codes ? Object.entries(m.codes).map(([k, v]) => `${k} ${v}`).join(', ') : ''} |`),
    '',
    `In process, without HTTP (${r.in_process.decisions} sequential allowed decisions; per-step times from the pipeline trace):`,
    '',
    '| what | p50 | p99 |',
    '|---|---|---|',
    ...Object.entries(r.in_process.timings).map(([k, v]) => `| ${k} | ${v.p50_us} µs | ${v.p99_us} µs |`),
    '',
  ];
  return lines.join('\n');
}

async function updatePerformanceDoc(table: string): Promise<void> {
  const path = 'docs/performance.md';
  let doc = await readFile(path, 'utf8').catch(() => '# Performance\n\nMeasured numbers of the benchmarks in scripts/bench/ (each writes raw JSON to bench-results/).\n');
  const start = '<!-- bench:decisions:start -->';
  const end = '<!-- bench:decisions:end -->';
  const block = `${start}\n${table}${end}`;
  if (doc.includes(start)) doc = doc.slice(0, doc.indexOf(start)) + block + doc.slice(doc.indexOf(end) + end.length);
  else doc = doc.replace(/\n(<!-- bench:)/, `\n${block}\n\n$1`);
  if (!doc.includes(start)) doc += `\n${block}\n`;
  await writeFile(path, doc);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
