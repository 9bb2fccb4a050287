// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${env:NAME} is gateway config syntax, not a template string.
// One Streamable HTTP gateway, many agents: what each agent costs the gateway as their number grows.
//
//   npx tsx scripts/bench/gateway-agents.ts [--agents 50,200,500] [--tokens 1] [--calls 3]
//
// A real control plane (its own Postgres database and Redis prefix, an embedded Unleash) runs here with
// policy/bench.yaml's high limits; the gateway (filesystem and memory upstreams over stdio) runs in a
// child process, so its RSS is its own. For each N, N agents connect with the SDK's
// StreamableHTTPClientTransport, all at once, each: initialize, tools/list, `calls` read_text_file calls.
// Then one upstream says notifications/tools/list_changed (simulated in the child, its definitions changed)
// with the N agents connected. Measured: the gateway's RSS and heap per session, its event-loop delay
// (p99, max), control-plane requests and upstream tools/list calls per agent action, tools/list latency.
// Prints a table; JSON to bench-results/gateway-agents-<time>.json.

import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import pg from 'pg';
import { pino } from 'pino';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { parseGatewayConfig } from '../../src/gateway/config.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { startServer } from '../../src/server.js';
import { benchControlPlaneConfig } from './gateway-control-plane.js';
import { percentile } from './percentile.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FILESYSTEM_SERVER = join(ROOT, 'node_modules/@modelcontextprotocol/server-filesystem/dist/index.js');
const MEMORY_SERVER = join(ROOT, 'node_modules/@modelcontextprotocol/server-memory/dist/index.js');

interface Counts {
  [request: string]: number;
}
interface ChildStats {
  rss: number;
  heapUsed: number;
  sessions: number;
  controlPlane: Counts;
  upstreamToolLists: number;
  lagP99Ms: number;
  lagMaxMs: number;
}
type ToChild = { kind: 'start'; config: string; env: Record<string, string> } | { kind: 'stats'; reset: boolean } | { kind: 'list_changed' } | { kind: 'stop' };

// ---- the gateway's side (a child process) ----------------------------------------------------------------

async function gatewayChild(): Promise<void> {
  let gateway: Gateway | undefined;
  let front: { close(): Promise<void> } | undefined;
  const cp: Counts = {};
  let upstreamToolLists = 0;
  let changedOnce = false;
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  const send = (m: unknown) => process.send?.(m);
  process.on('message', async (m: ToChild) => {
    if (m.kind === 'start') {
      gateway = await Gateway.start(parseGatewayConfig(m.config, join(os.tmpdir(), 'gateway.json'), m.env), pino({ level: 'warn' }));
      for (const method of ['openSession', 'closeSession', 'reportTools', 'decide', 'reportResult'] as const) {
        const client = gateway.controlPlane as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
        const original = client[method]!.bind(client);
        client[method] = (...a: unknown[]) => {
          cp[method] = (cp[method] ?? 0) + 1;
          return original(...a);
        };
      }
      for (const name of gateway.serverNames) {
        const u = gateway.upstream(name) as unknown as { refreshTools(ms: number): Promise<boolean> };
        const original = u.refreshTools.bind(u);
        u.refreshTools = async (ms: number) => {
          upstreamToolLists++;
          const changed = await original(ms);
          // A list_changed whose definitions changed: what makes the gateway report and announce.
          if (changedOnce) {
            changedOnce = false;
            return true;
          }
          return changed;
        };
      }
      const http = await gateway.listenHttp({ port: 0 });
      front = http;
      send({ kind: 'url', url: http.url });
    } else if (m.kind === 'stats') {
      (globalThis as { gc?: () => void }).gc?.();
      const mem = process.memoryUsage();
      const stats: ChildStats = {
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        sessions: gateway?.agentCount ?? 0,
        controlPlane: { ...cp },
        upstreamToolLists,
        lagP99Ms: lag.percentile(99) / 1e6,
        lagMaxMs: lag.max / 1e6,
      };
      if (m.reset) {
        for (const k of Object.keys(cp)) delete cp[k];
        upstreamToolLists = 0;
        lag.reset();
      }
      send({ kind: 'stats', stats });
    } else if (m.kind === 'list_changed') {
      changedOnce = true;
      const memory = gateway?.upstream('memory') as unknown as { onListChanged?: (k: 'tools') => void };
      memory.onListChanged?.('tools');
      send({ kind: 'list_changed' });
    } else if (m.kind === 'stop') {
      await front?.close();
      await gateway?.close();
      process.exit(0);
    }
  });
}

// ---- the agents' side ----------------------------------------------------------------------------------

const round = (n: number) => Math.round(n * 10) / 10;

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      agents: { type: 'string', default: '50,200,500' },
      tokens: { type: 'string', default: '1' },
      calls: { type: 'string', default: '3' },
      'pg-url': { type: 'string', default: process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
      'redis-url': { type: 'string', default: process.env['BENCH_REDIS_URL'] ?? 'redis://127.0.0.1:6379' },
    },
  });
  const sizes = args.agents.split(',').map(Number);
  const tokenCount = Number(args.tokens);
  const calls = Number(args.calls);
  const loadBefore = os.loadavg();
  const tag = randomBytes(4).toString('hex');
  const dir = realpathSync(mkdtempSync(join(os.tmpdir(), 'ks-bench-agents-')));
  writeFileSync(join(dir, 'bench.md'), 'a line of a small markdown file\n'.repeat(32));
  const policy = parseYaml(readFileSync(join(ROOT, 'policy/bench.yaml'), 'utf8')) as { servers: Record<string, { identity: unknown }>; rate_limits: { per_token: Record<string, unknown> } };
  policy.servers['filesystem'] = { ...policy.servers['filesystem'], identity: { command: process.execPath, args: [FILESYSTEM_SERVER, dir] } };
  policy.servers['memory'] = { ...policy.servers['memory'], identity: { command: process.execPath, args: [MEMORY_SERVER] } };
  policy.rate_limits.per_token['max_tool_reports_per_minute'] = 1_000_000;
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, stringifyYaml(policy));

  const { config, dbName } = benchControlPlaneConfig({ name: 'agents', tag, pgUrl: args['pg-url'], redisUrl: args['redis-url'], policyFile, dir, unleashPort: 19_000 + Math.floor(Math.random() * 900) });

  const child = fork(fileURLToPath(import.meta.url), ['--role=gateway'], { execArgv: ['--import', 'tsx', '--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const replies: Array<(m: { kind: string; url?: string; stats?: ChildStats }) => void> = [];
  child.on('message', (m: { kind: string }) => replies.shift()?.(m));
  const ask = <T>(m: ToChild) =>
    new Promise<T>((resolve) => {
      replies.push(resolve as (m: unknown) => void);
      child.send(m);
    });
  const stats = async (reset: boolean) => (await ask<{ stats: ChildStats }>({ kind: 'stats', reset })).stats;

  const rows: Array<Record<string, number | string>> = [];
  let app: FastifyInstance | undefined;
  try {
    app = await startServer(config);
    const addr = app.server.address();
    if (!addr || typeof addr !== 'object') throw new Error('control plane did not listen');
    const url = `http://127.0.0.1:${addr.port}`;
    const owner = (await app.ctx.credentials.createOperatorKey('bench', { name: 'bench owner', role: 'owner' })).key;
    const auth = { authorization: `Bearer ${owner}` };
    const gatewayKey = (await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: auth, payload: { name: 'bench gateway' } })).json().key as string;
    const tokens: string[] = [];
    for (let i = 0; i < tokenCount; i++) {
      const res = await app.inject({ method: 'POST', url: '/v1/keys', headers: auth, payload: { type: 'ro', role: 'bench_agent', project_id: 'bench', environment: 'development' } });
      if (res.statusCode !== 201) throw new Error(`token: ${res.body}`);
      tokens.push(res.json().token as string);
    }
    const gwConfig = {
      mcpServers: {
        filesystem: { command: process.execPath, args: [FILESYSTEM_SERVER, dir] },
        memory: { command: process.execPath, args: [MEMORY_SERVER], env: { MEMORY_FILE_PATH: join(dir, 'memory.jsonl') } },
      },
      killswitch: { url, gatewayKey: '${env:KILLSWITCH_GATEWAY_KEY}', timeoutMs: 30_000 },
    };
    const { url: gatewayUrl } = await ask<{ url: string }>({ kind: 'start', config: JSON.stringify(gwConfig), env: { KILLSWITCH_GATEWAY_KEY: gatewayKey } });
    const lag = monitorEventLoopDelay({ resolution: 10 });

    for (const n of sizes) {
      const base = await stats(true);
      const clients: Client[] = [];
      const listMs: number[] = [];
      let errors = 0;
      const started = performance.now();
      // Connect + initialize, all at once.
      await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const transport = new StreamableHTTPClientTransport(new URL(gatewayUrl), { requestInit: { headers: { authorization: `Bearer ${tokens[i % tokens.length]}` } } });
          const client = new Client({ name: `bench-agent-${i}`, version: '1' });
          await client.connect(transport);
          clients.push(client);
        }),
      );
      const connectS = (performance.now() - started) / 1000;
      const afterConnect = await stats(true);
      lag.reset();
      lag.enable();
      await Promise.all(
        clients.map(async (client) => {
          const t0 = performance.now();
          await client.listTools();
          listMs.push(performance.now() - t0);
        }),
      );
      const afterList = await stats(true);
      await Promise.all(
        clients.map(async (client) => {
          for (let c = 0; c < calls; c++) {
            const r = (await client.callTool({ name: 'read_text_file', arguments: { path: join(dir, 'bench.md') } })) as CallToolResult;
            if (r.isError) errors++;
          }
        }),
      );
      const afterCalls = await stats(true);
      await ask({ kind: 'list_changed' });
      // The refresh runs in the child: give it time to report and announce.
      await new Promise((r) => setTimeout(r, 3000));
      const afterChange = await stats(true);
      const sorted = listMs.sort((a, b) => a - b);
      const perSession = (afterConnect.rss - base.rss) / n;
      const heapPerSession = (afterConnect.heapUsed - base.heapUsed) / n;
      const row = {
        agents: n,
        tokens: tokens.length,
        connect_s: round(connectS),
        rss_kib_per_session: Math.round(perSession / 1024),
        heap_kib_per_session: Math.round(heapPerSession / 1024),
        cp_requests_per_initialize: round(Object.values(afterConnect.controlPlane).reduce((a, b) => a + b, 0) / n),
        tool_reports_for_n_lists: afterList.controlPlane['reportTools'] ?? 0,
        upstream_tool_lists_for_n_lists: afterList.upstreamToolLists,
        list_p50_ms: round(percentile(sorted, 50)),
        list_p99_ms: round(percentile(sorted, 99)),
        gateway_lag_p99_ms_lists: round(afterList.lagP99Ms),
        gateway_lag_max_ms_lists: round(afterList.lagMaxMs),
        cp_requests_per_call: round(Object.values(afterCalls.controlPlane).reduce((a, b) => a + b, 0) / (n * calls)),
        call_errors: errors,
        list_changed_tool_reports: afterChange.controlPlane['reportTools'] ?? 0,
        list_changed_upstream_lists: afterChange.upstreamToolLists,
        gateway_lag_max_ms_list_changed: round(afterChange.lagMaxMs),
      };
      rows.push(row);
      console.error(JSON.stringify(row));
      await Promise.all(clients.map((c) => c.close().catch(() => {})));
      // Let the closes reach the control plane.
      for (let i = 0; i < 100 && (await stats(false)).sessions > 0; i++) await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    // The child exits once its gateway is closed (its upstreams stopped); it sends no answer.
    const exited = new Promise((r) => child.once('exit', r));
    child.send({ kind: 'stop' } satisfies ToChild);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    child.kill();
    await app?.close();
    const redis = new Redis(args['redis-url']);
    for await (const keys of redis.scanStream({ match: `ksbench:agents:${tag}:*`, count: 1000 }) as AsyncIterable<string[]>) if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    rmSync(dir, { recursive: true, force: true });
    const admin = new pg.Client({ connectionString: args['pg-url'] });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ks_bench_agents_unleash_${tag} WITH (FORCE)`).catch(() => {});
    await admin.end();
  }
  const keys = Object.keys(rows[0] ?? {});
  console.log(`load average before: ${loadBefore.map((l) => l.toFixed(2)).join(' ')}; after: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`| ${keys.join(' | ')} |`);
  console.log(`|${keys.map(() => '---:').join('|')}|`);
  for (const r of rows) console.log(`| ${keys.map((k) => r[k]).join(' | ')} |`);
  const out = { bench: 'gateway-agents', at: new Date().toISOString(), machine: { cpus: os.cpus().length, node: process.version, load_before: loadBefore, load_after: os.loadavg() }, calls_per_agent: calls, rows };
  await mkdir('bench-results', { recursive: true });
  const file = `bench-results/gateway-agents-${out.at.replace(/[:.]/g, '-')}.json`;
  await writeFile(file, `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nwrote ${file}`);
  process.exit(0);
}

if (process.argv.includes('--role=gateway')) void gatewayChild();
else
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
