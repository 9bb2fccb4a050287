// Benchmark of the decision API against a running control plane, side by side with a Fastify hello
// world measured in the same run (DESIGN.md §9: compare ratios, not absolute times).
//
//   npm run bench:decisions -- [--seconds 10] [--open-seconds 60] [--rate 2000] [--connections 50] [--inproc 20000] [--workers 1]
//   npm run bench:decisions -- --quick [--only hello|minimal|allow|deny|open|open-allow|inproc] [--profile DIR]
//     [--rate N] [--cp-node-flags "--trace-gc"] [--cp-stdout FILE] [--timeline DIR] [--metrics FILE] [--disk-dir DIR]
//
// 1. Starts a control plane (`killswitch start`, embedded Unleash, policy/bench.yaml: limits high,
//    halting triggers off), a hello-world Fastify and the minimal route of DESIGN.md §9 (minimal.ts: one
//    EVALSHA and an awaited group-committed INSERT, the floor of an allowed decision), each in its own process.
// 2. Closed loop (autocannon, N connections, in a process of its own: closed-loop.ts): hello world; the
//    minimal route; decisions allow-only; the realistic mix (1/3 allow, 1/3 deny by scope, 1/3 deny by
//    flag). req/s and p50/p99.
// 3. Open loop at a fixed rate (open-loop.ts, also in a process of its own: a request never waits for an
//    earlier answer, so queueing in the server is not hidden): hello world, the minimal route, allow-only
//    (durable audit INTENT), the mix.
//    Every workload also reports the server process's CPU time per request (/proc), the figure that
//    stays comparable between runs when req/s moves with the machine's noise. Beside each open-loop run
//    a disk probe (disk-probe.ts) times fdatasync on --disk-dir: the row says how many of its answers over
//    the target were in flight while the disk stalled (every Postgres commit waits out such a stall).
// 4. In process, without HTTP: DecisionService.decide() in a loop; p50/p99 per decision and per step.
// Prints tables, writes bench-results/decisions-<ts>.json, and the section of docs/performance.md.
// BENCH_NAME, BENCH_PORT, BENCH_UNLEASH_PORT: see below (two runs on one machine).

import { type ChildProcess, spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import { parseArgs } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import pg from 'pg';
import { buildApp } from '../../src/app.js';
import { intentRow } from '../../src/audit/rows.js';
import { loadConfig } from '../../src/config.js';
import { newCallContext } from '../../src/decisions/service.js';
import { UnleashAdmin } from '../../src/flags/admin-client.js';
import { fromPolicyLimitsShared } from '../../src/limits/limits.js';
import { limitsFor } from '../../src/policy/index.js';
import type { AgentPrincipal, GatewayPrincipal } from '../../src/tokens/authenticator.js';
import { generateCredential } from '../../src/tokens/format.js';
import { closedLoopInChild } from './closed-loop.js';
import { answersDuringStalls, DISK_STALL_MS, type DiskProbeResult, startDiskProbe } from './disk-probe.js';
import { openLoopInChild, openLoop as runOpenLoop } from './open-loop.js';
import { percentile } from './percentile.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    // The open loop runs longer: the embedded Unleash runs its one-minute jobs together (a burst of a few
    // hundred ms of CPU on these two cores once a minute); a window shorter than that period weighs the
    // burst by chance, 0 or 6 times too much.
    'open-seconds': { type: 'string', default: '60' },
    rate: { type: 'string', default: '2000' },
    connections: { type: 'string', default: '50' },
    inproc: { type: 'string', default: '20000' },
    // Development aids (nothing saved, docs untouched): --quick runs the closed-loop hello world, minimal
    // route, allow and deny-by-scope workloads and the open-loop hello world, minimal route, allow and mix,
    // then prints step, audit and dependency timings from /metrics; --only picks one of them (`open-allow`:
    // the open-loop minimal route and allow only), or `inproc` (CPU per gate check, audit row and decision
    // in this process, 50 in flight, no HTTP); --profile DIR also writes a V8 CPU profile of the control
    // plane to DIR.
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    profile: { type: 'string' },
    // Extra node flags for the control plane (e.g. "--trace-gc"; the embedded Unleash's process inherits
    // them too), and a file its stdout is appended to.
    'cp-node-flags': { type: 'string' },
    'cp-stdout': { type: 'string' },
    // Writes each open-loop answer's schedule time and latency (ms) to DIR/<workload>.tsv, to look for periodic
    // stalls, and the disk probe's stalls to DIR/<workload>.disk-stalls.tsv.
    timeline: { type: 'string' },
    // Writes the control plane's whole GET /metrics text at the end of a --quick run to FILE.
    metrics: { type: 'string' },
    // WORKERS of the control plane (src/cluster.ts); its CPU figures then add up the primary and its workers.
    workers: { type: 'string', default: '1' },
    // Where the disk probe (disk-probe.ts) writes during each open-loop run: a directory on the disk that
    // holds Postgres's WAL (the default is on the same disk on this machine; the run says whether it is).
    'disk-dir': { type: 'string', default: os.tmpdir() },
  },
});
const SECONDS = Number(args.seconds);
const OPEN_SECONDS = Number(args['open-seconds']);
/** The node flags of `npm start` (package.json), so the benchmark measures what it runs. */
const START_NODE_FLAGS = ['--no-allocation-site-pretenuring'];
const RATE = Number(args.rate);
const CONNECTIONS = Number(args.connections);
const INPROC = Number(args.inproc);

const PG = 'postgres://postgres@127.0.0.1:5432';
// Two runs side by side (two worktrees, or another session's) need their own names: BENCH_NAME (default
// killswitch_bench) names the databases (dropped at each start), the Redis prefix and the data directory;
// BENCH_PORT (default 18080) the control plane's port, the hello world's (+1) and the minimal route's (+2);
// BENCH_UNLEASH_PORT (default 14242) the embedded Unleash's. Numbers are then only comparable within a run.
const NAME = process.env['BENCH_NAME'] ?? 'killswitch_bench';
if (!/^[a-z_][a-z0-9_]{0,50}$/.test(NAME)) throw new Error(`BENCH_NAME must be a plain database name (lower case, digits, _): ${NAME}`);
const DB = NAME;
const UNLEASH_DB = `${NAME}_unleash`;
const CP_PORT = Number(process.env['BENCH_PORT'] ?? 18080);
const HELLO_PORT = CP_PORT + 1;
const MINIMAL_PORT = CP_PORT + 2;
const MINIMAL = 'minimal route (one EVALSHA + awaited group-committed INSERT)';
const UNLEASH_PORT = Number(process.env['BENCH_UNLEASH_PORT'] ?? 14242);
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
  REDIS_PREFIX: NAME === 'killswitch_bench' ? 'ksbench:' : `${NAME}:`,
  POLICY_FILE: 'policy/bench.yaml',
  LOG_LEVEL: 'warn',
  BOOTSTRAP_OWNER_KEY: OWNER,
  TOKEN_HASH_SECRET: SECRET,
  DATA_DIR: `${os.tmpdir()}/${NAME === 'killswitch_bench' ? 'ks-bench-data' : `${NAME}-data`}`,
};

async function resetDatabases(): Promise<void> {
  const c = new pg.Client({ connectionString: `${PG}/postgres` });
  await c.connect();
  for (const db of [DB, UNLEASH_DB]) await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await c.end();
  // Earlier runs leave ~10^5 decision keys (1 h TTL) under the prefix; Redis expiring them in the
  // background would take CPU from this run.
  const redis = new Redis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379');
  const stream = redis.scanStream({ match: `${env.REDIS_PREFIX}*`, count: 1000 });
  for await (const keys of stream as AsyncIterable<string[]>) if (keys.length > 0) await redis.unlink(...keys);
  await redis.quit();
}

function startProcess(argv: string[], extraEnv: Record<string, string> = {}, stdoutFile?: string): ChildProcess {
  const child = spawn(process.execPath, argv, { env: { ...env, ...extraEnv }, stdio: ['ignore', stdoutFile ? openSync(stdoutFile, 'a') : 'ignore', 'inherit'] });
  return child;
}

/** Postgres backends serving the benchmark's database, and Redis's own pid (server processes on these cores). */
async function dependencyPids(): Promise<{ postgres: number[]; redis: number[] }> {
  const c = new pg.Client({ connectionString: `${PG}/postgres` });
  await c.connect();
  const { rows } = await c.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [DB]);
  await c.end();
  const redis = new Redis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379');
  const info = await redis.info('server');
  await redis.quit();
  const redisPid = Number(/process_id:(\d+)/.exec(info)?.[1] ?? 0);
  return { postgres: rows.map((r) => r.pid), redis: redisPid ? [redisPid] : [] };
}

async function ticksOf(pids: number[], which: 'all' | 'user' = 'all'): Promise<number> {
  let sum = 0;
  for (const pid of pids) sum += await cpuTicks(pid, which);
  return sum;
}

/** Runs `load` and adds CPU per answered request of the server, Postgres and Redis to its result. */
async function withCpu(pid: number | undefined, load: () => Promise<Measured & { answered: number }>): Promise<Measured> {
  const deps = await dependencyPids();
  const server = await withWorkers(pid);
  const before = [await ticksOf(server), await ticksOf(deps.postgres), await ticksOf(deps.redis), await ticksOf(server, 'user')];
  const { answered, ...m } = await load();
  const after = [await ticksOf(server), await ticksOf(deps.postgres), await ticksOf(deps.redis), await ticksOf(server, 'user')];
  const per = (i: number) => (answered > 0 ? Math.max(0, Math.round(((after[i]! - before[i]!) * 10_000) / answered)) : 0);
  return { ...m, server_cpu_us: per(0), server_user_us: per(3), postgres_cpu_us: per(1), redis_cpu_us: per(2) };
}

/** `pid` and, for a control plane with WORKERS > 1, its worker processes (its children running bin/killswitch.js). */
async function withWorkers(pid: number | undefined): Promise<number[]> {
  if (pid === undefined) return [];
  const children: number[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid !== pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes('bin/killswitch.js')) children.push(Number(entry));
  }
  return [pid, ...children];
}

/** utime + stime (or utime alone) of a process in clock ticks (1/100 s), from /proc (Linux only; 0 elsewhere). */
async function cpuTicks(pid: number | undefined, which: 'all' | 'user' = 'all'): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11] ?? 0) + (which === 'all' ? Number(fields[12] ?? 0) : 0);
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

/** With WORKERS > 1, /readyz answers once the first worker is up: wait for the primary to count them all. */
async function allWorkersReady(timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await (await fetch(`http://127.0.0.1:${CP_PORT}/metrics`, { headers: { authorization: `Bearer ${OWNER}` } })).text();
    const wanted = /^killswitch_workers\{state="wanted"\} (\d+)/m.exec(text)?.[1];
    if (wanted !== undefined && new RegExp(`^killswitch_workers\\{state="ready"\\} ${wanted}$`, 'm').test(text)) return;
    if (Date.now() > deadline) throw new Error(`control plane workers not all ready after ${timeoutMs} ms`);
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
  /** Open loop: p99 of the generator's own lag between schedule and write (ms). */
  lag_p99_ms?: number;
  /** CPU time (user + system) of the server process per answered request, in µs (/proc; Linux only). */
  server_cpu_us?: number;
  /** Its user part: our JavaScript (and V8), without the kernel's share (socket writes, wake-ups), which moves most with the machine. */
  server_user_us?: number;
  /** The same for the Postgres backends of the benchmark's database and for Redis (they share the cores). */
  postgres_cpu_us?: number;
  redis_cpu_us?: number;
  req_per_s: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  codes?: Record<string, number>;
  /** Open loop: the 250 ms windows with an answer slower than 20 ms. */
  slow_windows?: string[];
  /** Open loop: the disk's fdatasync during the run (disk-probe.ts) and the slow answers in flight during its stalls. */
  disk?: DiskDuringRun;
}

interface DiskDuringRun {
  fsync_p50_ms: number;
  fsync_p99_ms: number;
  /** fdatasync calls of DISK_STALL_MS or more that overlapped the run, their longest and their sum. */
  stalls: number;
  longest_ms: number;
  stalled_ms: number;
  /** All answers of the run; those slower than the target p99, and how many of them were in flight during a stall. */
  answers: number;
  over_target: number;
  over_target_during_stall: number;
}

async function closedLoop(name: string, port: number, requests: Req[], pid?: number): Promise<Measured> {
  const options = {
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    duration: SECONDS,
    requests: requests.map((r) => ({ method: r.method, path: r.path, headers: r.headers, ...(r.body ? { body: r.body } : {}) })),
  };
  return withCpu(pid, async () => {
    const r = await closedLoopInChild(options);
    return { name, answered: r.total, req_per_s: Math.round(r.average), p50_ms: r.p50, p99_ms: r.p99, errors: r.errors };
  });
}

/**
 * Open loop at a fixed rate (scripts/bench/open-loop.ts), generated by a process of its own so its pauses
 * are not the server's latency; latency from each request's write. The same load runs for 2 s first,
 * unmeasured: the target is the steady state, and a control plane that sat idle for longer than
 * TOKEN_CACHE_TTL_MS starts with credential lookups and a cold heap (docs/performance.md).
 */
async function openLoop(name: string, port: number, requests: Req[], rate: number, pid?: number): Promise<Measured> {
  const generator = await openLoopInChild(port, requests, rate, OPEN_SECONDS, 2);
  // Without the probe (a directory it cannot write, say) the run still measures; its rows just say nothing of the disk.
  const probe = await startDiskProbe(args['disk-dir']).catch((err: unknown) => {
    console.warn(`disk probe not started in ${args['disk-dir']}: ${(err as Error).message}`);
    return undefined;
  });
  return withCpu(pid, async () => {
    const { latencies, lags, errors, codes, windows, timeline, timelineStart } = await generator.run();
    const probed = await probe?.stop();
    const disk = probed && diskDuringRun(probed, timeline, timelineStart);
    if (args.timeline) {
      await mkdir(args.timeline, { recursive: true });
      const file = `${args.timeline}/${name.replace(/[^a-z0-9]+/gi, '-')}`;
      await writeFile(`${file}.tsv`, [`# start ${timelineStart.toFixed(3)} (ms since the epoch)`, ...timeline.map(([at, ms]) => `${at.toFixed(3)}\t${ms.toFixed(3)}`)].join('\n'));
      if (probed) await writeFile(`${file}.disk-stalls.tsv`, ['# fdatasync stalls: start (ms since the epoch), duration (ms)', ...probed.stalls.map(([at, ms]) => `${at}\t${ms}`)].join('\n'));
    }
    // The quarter-seconds whose worst answer took over 20 ms: is the tail spread out or bunched (a stall)?
    const slow = windows.filter((w) => w.max_ms > 20).map((w) => `${w.at_s}s: p50 ${w.p50_ms}, max ${w.max_ms} ms`);
    return { name, answered: latencies.length, lag_p99_ms: +percentile(lags, 99).toFixed(2), req_per_s: Math.round(latencies.length / OPEN_SECONDS), p50_ms: +percentile(latencies, 50).toFixed(2), p99_ms: +percentile(latencies, 99).toFixed(2), errors, codes, slow_windows: slow, ...(disk ? { disk } : {}) };
  });
}

/** The probe's stalls that overlapped the run (from its first write to its last answer), and the slow answers they explain. */
function diskDuringRun(probe: DiskProbeResult, timeline: Array<[number, number]>, start: number): DiskDuringRun {
  const end = timeline.reduce((m, [at, ms]) => Math.max(m, start + at + ms), start);
  const stalls = probe.stalls.filter(([s, d]) => s <= end && s + d >= start);
  const { over, overDuringStall } = answersDuringStalls(timeline, start, stalls, TARGET_P99_MS);
  return {
    fsync_p50_ms: probe.p50_ms,
    fsync_p99_ms: probe.p99_ms,
    stalls: stalls.length,
    longest_ms: stalls.reduce((m, [, d]) => Math.max(m, d), 0),
    stalled_ms: Math.round(stalls.reduce((sum, [, d]) => sum + d, 0)),
    answers: timeline.length,
    over_target: over,
    over_target_during_stall: overDuringStall,
  };
}

/** Whether `dir` is on the device of Postgres's data directory (its WAL); undefined when that cannot be read. */
async function sameDiskAsPostgres(dir: string): Promise<boolean | undefined> {
  const c = new pg.Client({ connectionString: `${PG}/postgres` });
  try {
    await c.connect();
    const { rows } = await c.query<{ data_directory: string }>('SHOW data_directory');
    const [a, b] = await Promise.all([stat(dir), stat(rows[0]!.data_directory)]);
    return a.dev === b.dev;
  } catch {
    return undefined;
  } finally {
    await c.end().catch(() => {});
  }
}

/** One line on the disk during an open-loop run. */
function diskLine(d: DiskDuringRun): string {
  return `disk: fdatasync p50 ${d.fsync_p50_ms} ms, p99 ${d.fsync_p99_ms} ms, ${d.stalls} stalls of ${DISK_STALL_MS} ms or more (longest ${d.longest_ms} ms, ${d.stalled_ms} ms in all); answers over ${TARGET_P99_MS} ms: ${d.over_target}, ${d.over_target_during_stall} of them in flight during a stall`;
}

async function main(): Promise<void> {
  await resetDatabases();
  const hello = startProcess(['--import', 'tsx', 'scripts/bench/hello.ts', String(HELLO_PORT)]);
  const cp = startProcess([...(args['cp-node-flags'] ?? '').split(' ').filter(Boolean), ...(args.profile ? ['--cpu-prof', `--cpu-prof-dir=${args.profile}`] : []), ...START_NODE_FLAGS, 'bin/killswitch.js', 'start'], { WORKERS: args.workers }, args['cp-stdout']);
  let minimal: ChildProcess | undefined;
  const stopAll = () => {
    hello.kill('SIGTERM');
    cp.kill('SIGTERM');
    minimal?.kill('SIGTERM');
  };
  process.on('exit', stopAll);
  try {
    await waitFor(`http://127.0.0.1:${HELLO_PORT}/`);
    await waitFor(`http://127.0.0.1:${CP_PORT}/readyz`);
    if (Number(args.workers) !== 1) await allWorkersReady();
    // The floor (DESIGN.md §9): one EVALSHA and a group-committed INSERT, in the benchmark's database.
    minimal = startProcess(['--import', 'tsx', 'scripts/bench/minimal.ts', String(MINIMAL_PORT), `${PG}/${DB}`, process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379', `${env.REDIS_PREFIX}minimal:`]);
    await waitFor(`http://127.0.0.1:${MINIMAL_PORT}/healthz`);

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
    const minimalReq: Req = { method: 'POST', path: '/', headers: { 'content-type': 'application/json' }, body: allow.body!, expect: 'OK' };
    for (const r of mix) {
      const res = await fetch(`http://127.0.0.1:${CP_PORT}${r.path}`, { method: 'POST', headers: r.headers, body: r.body! });
      const code = ((await res.json()) as { code: string }).code;
      if (code !== r.expect) throw new Error(`warm-up: expected ${r.expect}, got ${code}`);
    }

    const helloReq: Req = { method: 'GET', path: '/', headers: {} };
    if (args.quick || args.profile) {
      const show = (m: Measured) =>
        console.log(`${m.name}: ${m.req_per_s} req/s, p50 ${m.p50_ms} ms, p99 ${m.p99_ms} ms, errors ${m.errors}${m.lag_p99_ms !== undefined ? `, generator lag p99 ${m.lag_p99_ms} ms` : ''}; CPU per request: server ${m.server_cpu_us} µs (user ${m.server_user_us}), Postgres ${m.postgres_cpu_us} µs, Redis ${m.redis_cpu_us} µs${m.slow_windows?.length ? `\n  windows with an answer over 20 ms: ${m.slow_windows.join('; ')}` : ''}${m.disk ? `\n  ${diskLine(m.disk)}` : ''}`);
      const want = (name: string) => !args.only || args.only === name;
      if (want('hello')) show(await closedLoop('hello world', HELLO_PORT, [helloReq], hello.pid));
      if (want('minimal')) show(await closedLoop(MINIMAL, MINIMAL_PORT, [minimalReq], minimal.pid));
      if (want('allow')) show(await closedLoop('allow', CP_PORT, [allow], cp.pid));
      if (want('deny')) show(await closedLoop('deny by scope', CP_PORT, [denyScope], cp.pid));
      if (args.only === 'inproc') {
        await inProcessCpu(gw, rw, session);
      }
      const openAll = want('open');
      if (openAll || args.only === 'open-allow') {
        // A cold control plane (code not yet optimised) cannot keep up with the rate at first: warm it.
        await runOpenLoop(CP_PORT, [allow, denyScope], RATE / 2, 3);
        if (openAll) show(await openLoop(`open loop hello world at ${RATE}/s`, HELLO_PORT, [helloReq], RATE, hello.pid));
        show(await openLoop(`open loop ${MINIMAL} at ${RATE}/s`, MINIMAL_PORT, [minimalReq], RATE, minimal.pid));
        show(await openLoop(`open loop allow at ${RATE}/s`, CP_PORT, [allow], RATE, cp.pid));
        if (openAll) show(await openLoop(`open loop mix at ${RATE}/s`, CP_PORT, mix, RATE, cp.pid));
      }
      // Where the time goes inside: step timings, audit batches and query times from GET /metrics.
      const metrics = await (await fetch(`http://127.0.0.1:${CP_PORT}/metrics`, { headers: { authorization: `Bearer ${OWNER}` } })).text();
      if (args.metrics) await writeFile(args.metrics, metrics);
      for (const line of metrics.split('\n')) if (/^(killswitch_(decision_step_duration_seconds|audit_batch_rows|postgres_query_duration_seconds|redis_command_duration_seconds)_(sum|count)|nodejs_gc_duration_seconds_(sum|count)|nodejs_eventloop_lag_(p50|p99|max)_seconds)/.test(line)) console.log(line);
      cp.kill('SIGTERM');
      await new Promise((r) => cp.once('exit', r));
      if (args.profile) console.log(`CPU profile written to ${args.profile}`);
      return;
    }
    console.log(`closed loop, ${CONNECTIONS} connections, ${SECONDS} s each ...`);
    const closed = [
      await closedLoop('hello world', HELLO_PORT, [helloReq], hello.pid),
      await closedLoop(MINIMAL, MINIMAL_PORT, [minimalReq], minimal.pid),
      await closedLoop('decisions: allow only (durable INTENT)', CP_PORT, [allow], cp.pid),
      await closedLoop('decisions: deny by scope only', CP_PORT, [denyScope], cp.pid),
      await closedLoop('decisions: mix (allow / deny scope / deny flag)', CP_PORT, mix, cp.pid),
    ];
    console.log(`open loop at ${RATE} req/s, ${OPEN_SECONDS} s each ...`);
    const open = [
      await openLoop('hello world', HELLO_PORT, [helloReq], RATE, hello.pid),
      await openLoop(MINIMAL, MINIMAL_PORT, [minimalReq], RATE, minimal.pid),
      await openLoop('decisions: allow only (durable INTENT)', CP_PORT, [allow], RATE, cp.pid),
      await openLoop('decisions: mix', CP_PORT, mix, RATE, cp.pid),
    ];

    // In process: the pipeline without HTTP, against the same Postgres, Redis and Unleash.
    const inproc = await inProcess(gw, rw, session);

    const helloRps = closed[0]!.req_per_s;
    const report = {
      at: new Date().toISOString(),
      machine: { cpus: os.cpus().length, node: process.version, load: os.loadavg(), disk_dir: args['disk-dir'], disk_same_as_postgres: await sameDiskAsPostgres(args['disk-dir']) },
      params: { seconds: SECONDS, open_seconds: OPEN_SECONDS, rate: RATE, connections: CONNECTIONS, workers: Number(args.workers) },
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

/** An in-process control plane on the benchmark's databases, with the two credentials resolved. */
async function withBenchApp<T>(gw: string, rw: string, fn: (app: FastifyInstance, gateway: GatewayPrincipal, agent: AgentPrincipal) => Promise<T>): Promise<T> {
  const config = loadConfig(env as Record<string, string>, { unleashUrl: `http://127.0.0.1:${UNLEASH_PORT}/api`, port: 0, logLevel: 'silent' });
  const app = await buildApp(config, { migrate: false });
  try {
    const gateway = await app.ctx.auth.authenticate(gw);
    const agent = await app.ctx.auth.authenticate(rw);
    if (gateway.kind !== 'gateway' || agent.kind !== 'agent') throw new Error('credentials');
    return await fn(app, gateway, agent);
  } finally {
    await app.close();
  }
}

async function inProcess(gw: string, rw: string, session: string) {
  return withBenchApp(gw, rw, async (app, gateway, agent) => {
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
  });
}

/** Bytes allocated while `work` runs, collected or not (V8's sampling heap profiler, one sample per 4 KB on average). */
async function allocatedBytes(work: () => Promise<unknown>): Promise<number> {
  const session = new Session();
  session.connect();
  try {
    await session.post('HeapProfiler.enable');
    await session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    await work();
    const { profile } = await session.post('HeapProfiler.stopSampling');
    let total = 0;
    const walk = (node: { selfSize: number; children: unknown[] }) => {
      total += node.selfSize;
      for (const child of node.children) walk(child as typeof node);
    };
    walk(profile.head as unknown as { selfSize: number; children: unknown[] });
    return total;
  } finally {
    session.disconnect();
  }
}

/** CPU (and bytes allocated) per operation in this process, 50 in flight (no HTTP): what the pipeline and its parts cost. */
async function inProcessCpu(gw: string, rw: string, session: string): Promise<void> {
  await withBenchApp(gw, rw, async (app, gateway, agent) => {
    const run = (n: number, op: (i: number) => Promise<unknown>) => {
      let next = 0;
      return Promise.all(Array.from({ length: 50 }, async () => { while (next < n) await op(next++); }));
    };
    const measure = async (label: string, n: number, op: (i: number) => Promise<unknown>) => {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await run(n, op);
      const cpu = process.cpuUsage(cpu0);
      const perSecond = Math.round((n / (performance.now() - t0)) * 1000);
      // Then bytes allocated per operation (everything of this process: the audit writer, pg, ioredis), from
      // a sampling heap profile that keeps collected objects, in a shorter second pass (sampling costs CPU).
      const kb = (await allocatedBytes(() => run(n / 4, op))) / (n / 4) / 1024;
      console.log(`in process, ${label}: ${perSecond}/s, CPU ${((cpu.user + cpu.system) / n).toFixed(1)} µs each (user ${(cpu.user / n).toFixed(1)}, system ${(cpu.system / n).toFixed(1)}), ${kb.toFixed(1)} KB allocated each`);
    };
    const call = (server: string, tool: string) => newCallContext({ gateway, agent, ip: '127.0.0.1', input: { server, tool, arguments: { path: 'docs/readme.md' }, session_id: session } });
    // The same objects on every call, as the decision path passes them (the gate keeps its encoded arguments).
    const limits = fromPolicyLimitsShared(limitsFor(app.ctx.policy.current(), agent.role, 'filesystem'));
    const haltTokenOn = app.ctx.policy.current().haltTokenOn;
    const killKeys = [`${env.REDIS_PREFIX}kill:a`, `${env.REDIS_PREFIX}kill:b`];
    await measure('redis PING', 20_000, () => app.ctx.redis.redis.ping());
    await measure('gate.check', 20_000, (i) => app.ctx.gate.check({ decisionId: `d${i}`, tokenId: agent.id, sessionId: session, server: 'filesystem', tool: 'read_text_file', capability: 'read', resourceIds: ['file:///tmp/x'], arguments: { path: 'docs/readme.md' }, limits, haltTokenOn, killKeys }));
    await measure('audit.recordIntent', 20_000, () => app.ctx.audit.recordIntent(intentRow(call('filesystem', 'read_text_file'), { decision: 'allow', code: 'OK', message: 'ok' })));
    for (const [label, server, tool] of [['allow', 'filesystem', 'read_text_file'], ['deny by scope', 'memory', 'delete_entities'], ['allow', 'filesystem', 'read_text_file']] as const) {
      await measure(`decision, ${label}`, 20_000, () => app.ctx.decisions.decide(call(server, tool)));
    }
  });
}

function renderTable(r: { at: string; machine: { cpus: number; node: string; load: number[]; disk_dir?: string; disk_same_as_postgres?: boolean | undefined }; closed_loop: Array<Measured & { vs_hello: number }>; open_loop: Measured[]; in_process: { decisions: number; timings: Record<string, { p50_us: number; p99_us: number }> } }, file: string): string {
  const lines = [
    '## Decisions',
    '',
    '`npm run bench:decisions` (scripts/bench/decisions.ts): a control plane started by `killswitch start`',
    '(embedded Unleash, `policy/bench.yaml`: limits far above the load, halting triggers off), a Fastify',
    'hello world and the minimal route of DESIGN.md §9 (scripts/bench/minimal.ts: one Redis EVALSHA and an',
    'awaited group-committed Postgres INSERT, nothing else: the floor any allowed decision stands on), each in',
    'its own process and measured in the same run. The load generator runs in another process.',
    '',
    `Measured ${r.at.slice(0, 10)} on this machine (${r.machine.cpus} cores, Node ${r.machine.node}, load average at the end ${r.machine.load.map((l) => l.toFixed(1)).join(' / ')}). Raw: \`${file}\`.`,
    '',
    `Closed loop (autocannon, ${CONNECTIONS} connections, ${SECONDS} s; target: decisions ≥ ${TARGET_VS_HELLO * 100}% of hello world):`,
    '',
    '| workload | req/s | vs hello world | p50 | p99 | errors | CPU per request: server / Postgres / Redis |',
    '|---|---|---|---|---|---|---|',
    ...r.closed_loop.map((m) => `| ${m.name} | ${m.req_per_s} | ${(m.vs_hello * 100).toFixed(0)}% | ${m.p50_ms} ms | ${m.p99_ms} ms | ${m.errors} | ${m.server_cpu_us} / ${m.postgres_cpu_us} / ${m.redis_cpu_us} µs |`),
    '',
    `Open loop at ${RATE} req/s for ${OPEN_SECONDS} s (scripts/bench/open-loop.ts: keep-alive sockets, a request never waits for an earlier answer; latency from each request's write, the generator's own lag behind its schedule shown apart; target: allow p99 ≤ ${TARGET_P99_MS} ms):`,
    '',
    `| workload | answered/s | p50 | p99 | errors | CPU per request: server / Postgres / Redis | generator lag p99 | disk stalls: count, longest / answers over ${TARGET_P99_MS} ms: all, during a stall | codes |`,
    '|---|---|---|---|---|---|---|---|---|',
    ...r.open_loop.map((m) => `| ${m.name} | ${m.req_per_s} | ${m.p50_ms} ms | ${m.p99_ms} ms | ${m.errors} | ${m.server_cpu_us} / ${m.postgres_cpu_us} / ${m.redis_cpu_us} µs | ${m.lag_p99_ms} ms | ${m.disk ? `${m.disk.stalls}, ${m.disk.longest_ms} ms / ${m.disk.over_target}, ${m.disk.over_target_during_stall}` : ''} | ${m.codes ? Object.entries(m.codes).map(([k, v]) => `${k} ${v}`).join(', ') : ''} |`),
    '',
    `Disk stalls: the disk probe (scripts/bench/disk-probe.ts) wrote 8 KB and called fdatasync every ~10 ms during each open-loop run, in ${r.machine.disk_dir}${r.machine.disk_same_as_postgres === undefined ? '' : r.machine.disk_same_as_postgres ? " (the disk of Postgres's data directory)" : " (not the disk of Postgres's data directory)"}; a stall is an fdatasync of ${DISK_STALL_MS} ms or more. Every commit Postgres makes during a stall waits for it, so an allow (which waits for its durable INTENT) does too.`,
    '',
    ...verdict(r),
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

/** A generator that falls this far behind its schedule (p99) no longer offers a fixed rate. */
const LAG_LIMIT_MS = 10;
/** Issue 4's targets: closed-loop allows at this share of hello world or more; open-loop allow p99 at most this. */
const TARGET_VS_HELLO = 0.25;
const TARGET_P99_MS = 4;

/**
 * The two targets of issue 4 as this run measured them, and which open-loop rows are not fixed-rate
 * measurements (the generator itself could not keep up: those latencies measure the machine).
 */
function verdict(r: { closed_loop: Array<Measured & { vs_hello: number }>; open_loop: Measured[] }): string[] {
  const lagging = r.open_loop.filter((m) => (m.lag_p99_ms ?? 0) > LAG_LIMIT_MS);
  const allowClosed = r.closed_loop.find((m) => m.name.startsWith('decisions: allow'));
  const allowOpen = r.open_loop.find((m) => m.name.startsWith('decisions: allow'));
  const floorOpen = r.open_loop.find((m) => m.name === MINIMAL);
  const out: string[] = [];
  if (lagging.length > 0) {
    out.push(`**Not fixed-rate:** the load generator fell behind its schedule by more than ${LAG_LIMIT_MS} ms (p99) in ${lagging.map((m) => `"${m.name}" (${m.lag_p99_ms} ms)`).join(', ')}; the machine could not keep up with the generator itself, so those rows measure the machine.`, '');
  }
  const closed = allowClosed ? `${(allowClosed.vs_hello * 100).toFixed(0)}% of hello world (target ≥ ${TARGET_VS_HELLO * 100}%): ${allowClosed.vs_hello >= TARGET_VS_HELLO ? 'met' : 'not met'}` : 'not measured';
  let open = 'not measured';
  if (allowOpen) {
    const valid = !lagging.includes(allowOpen);
    const met = allowOpen.p99_ms <= TARGET_P99_MS;
    open = `p99 ${allowOpen.p99_ms} ms (target ≤ ${TARGET_P99_MS} ms): ${met ? (valid ? 'met' : 'not judged, not fixed-rate') : valid ? 'not met' : 'not met, and not fixed-rate'}`;
    if (floorOpen) open += `; the floor's p99 in the same run: ${floorOpen.p99_ms} ms`;
    const d = allowOpen.disk;
    if (d) open += `. During the allow's run the disk stalled ${d.stalls} times (fdatasync ≥ ${DISK_STALL_MS} ms, longest ${d.longest_ms} ms, ${d.stalled_ms} ms in all); ${d.over_target_during_stall} of its ${d.over_target} answers over ${TARGET_P99_MS} ms were in flight during a stall (a p99 lets ${Math.floor(d.answers / 100)} of ${d.answers} answers be slower)`;
  }
  out.push(`Targets in this run: closed-loop allow ${closed}; open-loop allow ${open}.`);
  return out;
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
