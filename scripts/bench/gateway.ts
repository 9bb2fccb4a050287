// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${env:NAME} is gateway config syntax, not a template string.
// Gateway overhead per tools/call: the same read_text_file call made directly to server-filesystem over
// stdio, and through the reference gateway (control plane decision + result report + upstream).
//
//   npm run bench:gateway -- [--calls 2000] [--concurrency 8]
//
// Starts a real control plane (its own Postgres database and Redis prefix, an embedded Unleash unless
// UNLEASH_URL is set) with policy/bench.yaml's high limits and its filesystem server pointed at a temp
// directory. Three paths, each a fresh MCP session, sequential and with `concurrency` calls in flight:
//   direct          SDK Client → server-filesystem (stdio)
//   gateway         SDK Client → gateway in-process (in-memory transport) → control plane → server-filesystem
//   gateway-stdio   SDK Client → `killswitch gateway` child process (stdio) → control plane → server-filesystem
// Overhead = gateway p50/p99 minus direct p50/p99. Prints a table; JSON to bench-results/gateway-<time>.json.

import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { pino } from 'pino';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { parseGatewayConfig } from '../../src/gateway/config.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { startServer } from '../../src/server.js';
import { benchControlPlaneConfig } from './gateway-control-plane.js';

const { values: args } = parseArgs({
  options: {
    calls: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '8' },
    'pg-url': { type: 'string', default: process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
    'redis-url': { type: 'string', default: process.env['BENCH_REDIS_URL'] ?? 'redis://127.0.0.1:6379' },
  },
});
const CALLS = Number(args.calls);
const CONCURRENCY = Number(args.concurrency);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FILESYSTEM_SERVER = join(ROOT, 'node_modules/@modelcontextprotocol/server-filesystem/dist/index.js');
const BIN = join(ROOT, 'bin/killswitch.js');

interface Stats {
  path: string;
  concurrency: number;
  calls: number;
  calls_per_s: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;
}

const round = (n: number) => Math.round(n * 1000) / 1000;

/** Closed loop: `concurrency` callers, each awaiting one call at a time; latencies recorded per call. */
async function measure(path: string, client: Client, concurrency: number, calls: number): Promise<Stats> {
  const call = async () => (await client.callTool({ name: 'read_text_file', arguments: { path: 'bench.md' } })) as CallToolResult;
  for (let i = 0; i < 100; i++) {
    const r = await call();
    if (r.isError) throw new Error(`${path}: warm-up call failed: ${JSON.stringify(r.content)}`);
  }
  const lat = new Float64Array(calls);
  let next = 0;
  let errors = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const i = next++;
        if (i >= calls) return;
        const t0 = process.hrtime.bigint();
        const r = await call();
        lat[i] = Number(process.hrtime.bigint() - t0) / 1e6;
        if (r.isError) errors++;
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const sorted = Array.from(lat).sort((a, b) => a - b);
  return { path, concurrency, calls, calls_per_s: Math.round(calls / seconds), p50_ms: round(pct(sorted, 50)), p99_ms: round(pct(sorted, 99)), errors };
}

async function main(): Promise<void> {
  const loadBefore = os.loadavg();
  const tag = randomBytes(4).toString('hex');
  const dir = realpathSync(mkdtempSync(join(os.tmpdir(), 'ks-bench-gw-')));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'bench.md'), `${'a line of a small markdown file\n'.repeat(32)}`);

  // policy/bench.yaml (limits far above what the benchmark reaches), filesystem on our directory.
  const policy = parseYaml(readFileSync(join(ROOT, 'policy/bench.yaml'), 'utf8')) as { servers: Record<string, { identity: unknown }> };
  policy.servers['filesystem'] = { ...policy.servers['filesystem'], identity: { command: process.execPath, args: [FILESYSTEM_SERVER, dir] } };
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, stringifyYaml(policy));

  const { config, dbName } = benchControlPlaneConfig({ name: 'gateway', tag, pgUrl: args['pg-url'], redisUrl: args['redis-url'], policyFile, dir, unleashPort: 42_000 + Math.floor(Math.random() * 2000) });

  const results: Stats[] = [];
  const phases: Record<'decide' | 'reportResult', number[]> = { decide: [], reportResult: [] };
  const phaseStats: Array<{ phase: string; concurrency: number; p50_ms: number; p99_ms: number }> = [];
  let app: FastifyInstance | undefined;
  const closers: Array<() => Promise<unknown>> = [];
  try {
    app = await startServer(config);
    const addr = app.server.address();
    if (!addr || typeof addr !== 'object') throw new Error('control plane did not listen');
    const url = `http://127.0.0.1:${addr.port}`;
    const owner = (await app.ctx.credentials.createOperatorKey('bench', { name: 'bench owner', role: 'owner' })).key;
    const auth = { authorization: `Bearer ${owner}` };
    const gatewayKey = (await app.inject({ method: 'POST', url: '/v1/gateway-keys', headers: auth, payload: { name: 'bench gateway' } })).json().key as string;
    const token = async () => {
      const res = await app!.inject({ method: 'POST', url: '/v1/keys', headers: auth, payload: { type: 'ro', role: 'bench_agent', project_id: 'bench', environment: 'development' } });
      if (res.statusCode !== 201) throw new Error(`token: ${res.body}`);
      return res.json().token as string;
    };

    // direct: the upstream alone.
    const direct = new Client({ name: 'bench-direct', version: '1' });
    await direct.connect(new StdioClientTransport({ command: process.execPath, args: [FILESYSTEM_SERVER, dir], stderr: 'ignore' }));
    closers.push(() => direct.close());

    // gateway in-process: the decision path without an extra stdio hop to the agent.
    const gwConfig = { mcpServers: { filesystem: { command: process.execPath, args: [FILESYSTEM_SERVER, dir] } }, killswitch: { url, gatewayKey: '${env:KILLSWITCH_GATEWAY_KEY}', agentToken: '${env:KILLSWITCH_AGENT_TOKEN}' } };
    const inProcessToken = await token();
    const gateway = await Gateway.start(parseGatewayConfig(JSON.stringify(gwConfig), join(dir, 'gateway.json'), { KILLSWITCH_GATEWAY_KEY: gatewayKey, KILLSWITCH_AGENT_TOKEN: inProcessToken }), pino({ level: 'warn' }));
    closers.push(() => gateway.close());
    // Where the in-process gateway's time goes: the two control-plane requests of every call.
    const cp = gateway.controlPlane;
    for (const method of ['decide', 'reportResult'] as const) {
      const original = cp[method].bind(cp) as (...a: unknown[]) => Promise<unknown>;
      (cp as unknown as Record<string, unknown>)[method] = async (...a: unknown[]) => {
        const t0 = process.hrtime.bigint();
        try {
          return await original(...a);
        } finally {
          phases[method].push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
      };
    }
    const [a, b] = InMemoryTransport.createLinkedPair();
    await gateway.attach(b, { agentToken: inProcessToken });
    const viaGateway = new Client({ name: 'bench-gateway', version: '1' });
    await viaGateway.connect(a);
    closers.push(() => viaGateway.close());

    // gateway as Claude Desktop runs it: a child process on stdio.
    const gwFile = join(dir, 'gateway.json');
    writeFileSync(gwFile, JSON.stringify(gwConfig));
    const viaStdio = new Client({ name: 'bench-gateway-stdio', version: '1' });
    await viaStdio.connect(
      new StdioClientTransport({ command: process.execPath, args: [BIN, 'gateway', '--config', gwFile, '--log-level', 'warn'], env: { KILLSWITCH_GATEWAY_KEY: gatewayKey, KILLSWITCH_AGENT_TOKEN: await token() }, stderr: 'inherit' }),
      { timeout: 60_000 },
    );
    closers.push(() => viaStdio.close());

    for (const c of [1, CONCURRENCY]) {
      results.push(await measure('direct', direct, c, CALLS));
      phases.decide.length = 0;
      phases.reportResult.length = 0;
      results.push(await measure('gateway', viaGateway, c, CALLS));
      for (const [phase, lat] of Object.entries(phases)) {
        const sorted = lat.slice(100).sort((x, y) => x - y);
        phaseStats.push({ phase: `POST ${phase === 'decide' ? '/v1/decisions' : '/v1/decisions/:id/result'} (from the gateway)`, concurrency: c, p50_ms: round(pct(sorted, 50)), p99_ms: round(pct(sorted, 99)) });
      }
      results.push(await measure('gateway-stdio', viaStdio, c, CALLS));
    }
  } finally {
    for (const close of closers.reverse()) await close().catch(() => {});
    await app?.close();
    const admin = new pg.Client({ connectionString: args['pg-url'] });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ks_bench_gateway_unleash_${tag} WITH (FORCE)`).catch(() => {});
    await admin.end();
  }

  const overhead = [1, CONCURRENCY].flatMap((c) => {
    const d = results.find((r) => r.path === 'direct' && r.concurrency === c);
    return results
      .filter((r) => r.path !== 'direct' && r.concurrency === c)
      .map((r) => ({ path: r.path, concurrency: c, p50_ms: round(r.p50_ms - (d?.p50_ms ?? 0)), p99_ms: round(r.p99_ms - (d?.p99_ms ?? 0)) }));
  });
  console.log(`load average before: ${loadBefore.map((l) => l.toFixed(2)).join(' ')}; after: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log('| path | in flight | calls | calls/s | p50 ms | p99 ms | errors |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of results) console.log(`| ${r.path} | ${r.concurrency} | ${r.calls} | ${r.calls_per_s} | ${r.p50_ms} | ${r.p99_ms} | ${r.errors} |`);
  console.log('\n| control-plane request (in-process gateway) | in flight | p50 ms | p99 ms |');
  console.log('|---|---:|---:|---:|');
  for (const p of phaseStats) console.log(`| ${p.phase} | ${p.concurrency} | ${p.p50_ms} | ${p.p99_ms} |`);
  console.log('\n| overhead vs direct | in flight | p50 ms | p99 ms |');
  console.log('|---|---:|---:|---:|');
  for (const o of overhead) console.log(`| ${o.path} | ${o.concurrency} | ${o.p50_ms} | ${o.p99_ms} |`);
  const out = {
    bench: 'gateway',
    at: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? '', node: process.version, load_before: loadBefore, load_after: os.loadavg() },
    tool: 'filesystem/read_text_file (1 KB file)',
    calls: CALLS,
    concurrency: CONCURRENCY,
    results,
    control_plane_requests: phaseStats,
    overhead,
  };
  await mkdir('bench-results', { recursive: true });
  const file = `bench-results/gateway-${out.at.replace(/[:.]/g, '-')}.json`;
  await writeFile(file, `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nwrote ${file}`);
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
