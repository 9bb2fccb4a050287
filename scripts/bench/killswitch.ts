// Kill-switch propagation: how long from an operator turning a flag off in Unleash (admin API) until
// the control plane's flag step denies, with the Unleash webhook and by polling alone; and what the flag
// step costs per decision.
//
//   npm run bench:killswitch -- [--toggles 20] [--replicas 3] [--refresh-ms <UNLEASH_REFRESH_MS>]
//
// Setup: an embedded unleash-server on a free port and its own database (or UNLEASH_URL), flags synced,
// and two groups of control-plane replicas built with buildApp (the real FlagService):
// - "webhook": the first replica listens where the Unleash webhook integration posts; the others get
//   the override through Redis pub/sub, as in production;
// - "poll only": replicas in another Redis namespace that no webhook reaches.
// While every replica runs the flag step in a loop (a load of decisions: rw writes on filesystem), the
// benchmark turns mcp.filesystem.write off through the admin API, records when each replica's first
// deny happens, turns the flag on again, waits a random 0-1 s (so toggles land at random poll phases)
// and repeats. "first deny" = the earliest replica of a group, "all deny" = the last one.
// Writes JSON to bench-results/killswitch-<timestamp>.json and the table to docs/performance.md.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { buildApp } from '../../src/app.js';
import { type Config, loadConfig } from '../../src/config.js';
import type { CallContext, StepResult } from '../../src/decisions/types.js';
import { UnleashAdmin } from '../../src/flags/admin-client.js';
import { type EmbeddedUnleash, startEmbeddedUnleash } from '../../src/flags/embedded.js';
import { flagNamesFromPolicyFile, syncFromConfig } from '../../src/flags/setup.js';
import { createFlagStep } from '../../src/flags/step.js';

const { values: args } = parseArgs({
  options: {
    toggles: { type: 'string', default: '20' },
    replicas: { type: 'string', default: '3' },
    'refresh-ms': { type: 'string' },
    flag: { type: 'string', default: 'mcp.filesystem.write' },
    'no-docs': { type: 'boolean', default: false },
  },
});
const TOGGLES = Number(args.toggles);
const REPLICAS = Number(args.replicas);
const FLAG = args.flag;

const base = loadConfig();
const refreshMs = args['refresh-ms'] ? Number(args['refresh-ms']) : base.unleashRefreshMs;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

async function recreateDatabase(url: string): Promise<void> {
  const u = new URL(url);
  const name = u.pathname.slice(1);
  u.pathname = '/postgres';
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  try {
    await c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
  } finally {
    await c.end();
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

function stats(values: number[]) {
  const s = [...values].sort((a, b) => a - b);
  return { n: s.length, p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1] ?? Number.NaN, min: s[0] ?? Number.NaN };
}

function writeCall(i: number): CallContext {
  return {
    decisionId: `d-${i}`,
    receivedAt: Date.now(),
    gateway: { kind: 'gateway', id: 'gw', name: 'bench', expiresAt: null },
    agent: { kind: 'agent', id: `tok-${i % 50}`, tokenType: 'rw', scopes: [], role: 'code_agent', projectId: 'bench', environment: 'development', displayPrefix: 'mcp_rw_x', expiresAt: null },
    input: { server: 'filesystem', tool: 'write_file', arguments: { path: `/tmp/ks-demo/${i}.md` }, session_id: `s-${i % 20}` },
    ip: '127.0.0.1',
    call: { server: 'filesystem', serverClass: 'storage', tool: 'write_file', requiredScope: 'storage:write', capability: 'write', scopeSource: 'map', extraFlags: [], resourceIds: [`filesystem:${i}`], networkIdentities: [] },
    flagsEvaluated: [],
    limits: {},
    warnings: [],
    dryRun: false,
    trace: [],
  };
}

async function main() {
  let embedded: EmbeddedUnleash | undefined;
  let unleashUrl = base.unleashUrl;
  const unleashDb = withDatabase(base.unleashDatabaseUrl, 'killswitch_bench_unleash');
  if (!unleashUrl) {
    await recreateDatabase(unleashDb);
    embedded = await startEmbeddedUnleash({
      port: await freePort(),
      host: '127.0.0.1',
      databaseUrl: unleashDb,
      adminPassword: base.unleashAdminPassword,
      adminToken: base.unleashAdminToken,
      backendTokens: [base.unleashApiToken],
      logLevel: 'error',
    });
    unleashUrl = embedded.apiUrl;
  }
  const webhookPort = await freePort();
  const common: Partial<Config> = {
    unleashUrl,
    unleashRefreshMs: refreshMs,
    databaseUrl: withDatabase(base.databaseUrl, 'killswitch_bench'),
    logLevel: 'warn',
    tokenHashSecret: base.tokenHashSecret ?? 'bench-secret-bench-secret-bench-secret-1234',
    // The replicas and the sync must agree on it; unset, each would otherwise need the bench database's stored one.
    unleashWebhookSecret: base.unleashWebhookSecret ?? `bench-${crypto.randomUUID()}`,
    dataDir: `${base.dataDir}/bench`,
    unleashBackupMaxAgeS: 0,
  };
  const cfg = (o: Partial<Config>) => loadConfig({}, { ...base, ...common, ...o });
  const names = await flagNamesFromPolicyFile(base.policyFile);
  const report = await syncFromConfig(cfg({}), { names, webhookUrl: `http://127.0.0.1:${webhookPort}/v1/flags/events` });
  const admin = new UnleashAdmin(unleashUrl, base.unleashAdminToken);
  const environment = base.unleashEnvironment;
  console.log(`Unleash ${unleashUrl}; flags: ${report.created.length} created, ${report.unchanged.length + report.updated.length} existing; refresh ${refreshMs} ms; ${REPLICAS} replicas per group`);
  await admin.setEnabled(FLAG, environment, true);

  const quiet = { write: () => true } as unknown as NodeJS.WritableStream;
  const groups: Record<'webhook' | 'poll', FastifyInstance[]> = { webhook: [], poll: [] };
  for (let i = 0; i < REPLICAS; i++) {
    groups.webhook.push(await buildApp(cfg({ redisPrefix: 'ks-bench-wh:', port: webhookPort }), { logStream: quiet }));
    groups.poll.push(await buildApp(cfg({ redisPrefix: 'ks-bench-poll:' }), { logStream: quiet, migrate: false }));
  }
  await groups.webhook[0]!.listen({ host: '127.0.0.1', port: webhookPort });
  const all = [...groups.webhook, ...groups.poll];
  const steps = all.map((app) => createFlagStep(app.ctx.flags));
  for (const app of all) if (!app.ctx.flags.isReady()) throw new Error('a replica is not ready');

  // --- in-process cost of the flag step (one replica) ---
  const step = steps[0]!;
  const calls = Array.from({ length: 1000 }, (_, i) => writeCall(i));
  const N = 200_000;
  const measure = () => {
    for (let i = 0; i < 20_000; i++) {
      const c = calls[i % calls.length]!;
      c.flagsEvaluated.length = 0;
      step.run(c);
    }
    const micros: number[] = new Array(N);
    for (let i = 0; i < N; i++) {
      const c = calls[i % calls.length]!;
      c.flagsEvaluated.length = 0;
      const t = process.hrtime.bigint();
      step.run(c);
      micros[i] = Number(process.hrtime.bigint() - t) / 1000;
    }
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) {
      const c = calls[i % calls.length]!;
      c.flagsEvaluated.length = 0;
      step.run(c);
    }
    return { ...stats(micros), mean: Number(process.hrtime.bigint() - t0) / 1000 / N, flags_per_call: 3 };
  };
  const stepFlags = ['mcp.enabled', 'mcp.tokens.rw', FLAG];
  const cost = measure();
  console.log(`flag step, flags on without constraints: p50 ${cost.p50.toFixed(2)} µs, p99 ${cost.p99.toFixed(2)} µs, mean ${cost.mean.toFixed(2)} µs`);
  // The same flags with a (always true) constraint each: every flag goes through the SDK's strategy evaluation.
  const constraint = { contextName: 'mcpEnvironment', operator: 'IN', values: ['development', 'staging', 'production'] };
  const original = new Map<string, Awaited<ReturnType<typeof admin.getStrategies>>>();
  for (const name of stepFlags) {
    const strategies = await admin.getStrategies(name, environment);
    original.set(name, strategies);
    for (const st of strategies) await admin.updateStrategy(name, environment, st.id!, { ...st, constraints: [constraint] });
  }
  await new Promise((r) => setTimeout(r, refreshMs * 2 + 1500));
  const costConstrained = measure();
  console.log(`flag step, flags with a constraint: p50 ${costConstrained.p50.toFixed(2)} µs, p99 ${costConstrained.p99.toFixed(2)} µs, mean ${costConstrained.mean.toFixed(2)} µs`);
  for (const [name, strategies] of original) for (const st of strategies) await admin.updateStrategy(name, environment, st.id!, st);
  await new Promise((r) => setTimeout(r, refreshMs * 2 + 1500));

  // --- propagation under a decision loop ---
  let running = true;
  let evaluations = 0;
  const deniedAt: Array<number | null> = all.map(() => null);
  let i = 0;
  const loop = () => {
    if (!running) return;
    for (let r = 0; r < all.length; r++) {
      for (let k = 0; k < 20; k++) {
        const c = calls[i++ % calls.length]!;
        c.flagsEvaluated.length = 0;
        // The flag step is synchronous (in-memory evaluation).
        const d = steps[r]!.run(c) as StepResult;
        evaluations++;
        if (d?.code === 'KILL_SWITCH' && deniedAt[r] === null) deniedAt[r] = performance.now();
      }
    }
    setImmediate(loop);
  };
  setImmediate(loop);
  const waitFor = async (cond: () => boolean, ms: number) => {
    const end = performance.now() + ms;
    while (!cond()) {
      if (performance.now() > end) return false;
      await new Promise((r) => setTimeout(r, 5));
    }
    return true;
  };
  const rows: Array<{ toggle: number; webhook_first_ms: number; webhook_all_ms: number; poll_first_ms: number; poll_all_ms: number }> = [];
  const isOn = (r: number) => all[r]!.ctx.flags.isEnabled(FLAG, { userId: 'x', properties: { tokenType: 'rw', mcpEnvironment: 'development' } });
  const evalStart = performance.now();
  for (let t = 0; t < TOGGLES; t++) {
    if (!(await waitFor(() => all.every((_a, r) => isOn(r)), 15_000))) throw new Error('flag did not come back on everywhere');
    await new Promise((r) => setTimeout(r, Math.random() * 1000));
    deniedAt.fill(null);
    const toggledAt = performance.now();
    await admin.setEnabled(FLAG, environment, false);
    if (!(await waitFor(() => deniedAt.every((d) => d !== null), 15_000))) throw new Error(`toggle ${t + 1}: not every replica denied within 15 s`);
    const rel = deniedAt.map((d) => d! - toggledAt);
    const wh = rel.slice(0, REPLICAS);
    const po = rel.slice(REPLICAS);
    const row = { toggle: t + 1, webhook_first_ms: Math.min(...wh), webhook_all_ms: Math.max(...wh), poll_first_ms: Math.min(...po), poll_all_ms: Math.max(...po) };
    rows.push(row);
    console.log(`toggle ${String(row.toggle).padStart(2)}: webhook first ${row.webhook_first_ms.toFixed(0)} ms, all ${row.webhook_all_ms.toFixed(0)} ms | poll only first ${row.poll_first_ms.toFixed(0)} ms, all ${row.poll_all_ms.toFixed(0)} ms`);
    await admin.setEnabled(FLAG, environment, true);
  }
  running = false;
  const evalRate = evaluations / ((performance.now() - evalStart) / 1000);
  const summary = {
    webhook_first: stats(rows.map((r) => r.webhook_first_ms)),
    webhook_all: stats(rows.map((r) => r.webhook_all_ms)),
    poll_first: stats(rows.map((r) => r.poll_first_ms)),
    poll_all: stats(rows.map((r) => r.poll_all_ms)),
  };
  const result = {
    benchmark: 'killswitch',
    at: new Date().toISOString(),
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
    unleash: embedded ? 'embedded unleash-server 7.5.1' : unleashUrl,
    refresh_ms: refreshMs,
    replicas_per_group: REPLICAS,
    toggles: TOGGLES,
    flag: FLAG,
    decisions_per_s_during_run: Math.round(evalRate),
    flag_step_us: { unconstrained: cost, constrained: costConstrained },
    propagation_ms: summary,
    rows,
  };
  await mkdir('bench-results', { recursive: true });
  const file = `bench-results/killswitch-${result.at.replace(/[:.]/g, '-')}.json`;
  await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);

  const f = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '-');
  const table = [
    `Measured ${result.at.slice(0, 10)} on this machine (${result.cpus} cores, Node ${process.version}), ${result.unleash}, UNLEASH_REFRESH_MS=${refreshMs}, ${REPLICAS} replicas per group, ${TOGGLES} toggles of \`${FLAG}\` through the Unleash admin API while every replica ran the flag step in a loop (${Math.round(evalRate).toLocaleString('en-US')} decisions/s in total). Time from the admin API call to the deny; "first" = the first replica, "all" = the last.`,
    '',
    '| path | first deny p50 | first deny p99 | all deny p50 | all deny p99 | max | target (p99) |',
    '|---|---|---|---|---|---|---|',
    `| webhook + Redis pub/sub | ${f(summary.webhook_first.p50)} ms | ${f(summary.webhook_first.p99)} ms | ${f(summary.webhook_all.p50)} ms | ${f(summary.webhook_all.p99)} ms | ${f(summary.webhook_all.max)} ms | ≤ 1500 ms |`,
    `| polling only | ${f(summary.poll_first.p50)} ms | ${f(summary.poll_first.p99)} ms | ${f(summary.poll_all.p50)} ms | ${f(summary.poll_all.p99)} ms | ${f(summary.poll_all.max)} ms | ≤ 2500 ms |`,
    '',
    `Flag step in process, 3 flags per call (\`mcp.enabled\`, \`mcp.tokens.rw\`, \`${FLAG}\`), ${N.toLocaleString('en-US')} calls, target ≤ 20 µs p99:`,
    '',
    '| flags | p50 | p99 | mean |',
    '|---|---|---|---|',
    `| on, no constraints (the defaults; answered from the flag index) | ${cost.p50.toFixed(1)} µs | ${cost.p99.toFixed(1)} µs | ${cost.mean.toFixed(1)} µs |`,
    `| each with a constraint (evaluated by unleash-client) | ${costConstrained.p50.toFixed(1)} µs | ${costConstrained.p99.toFixed(1)} µs | ${costConstrained.mean.toFixed(1)} µs |`,
    '',
    `Raw results: \`${file}\`.`,
  ].join('\n');
  console.log(`\n${table}\n`);
  if (!args['no-docs']) await writeSection(table);

  for (const app of all) await app.close();
  await embedded?.stop();
  if (embedded) await recreateDatabase(unleashDb);
  process.exit(0);
}

const START = '<!-- bench:killswitch:start -->';
const END = '<!-- bench:killswitch:end -->';

/** Replaces (or appends) the "Kill switch propagation" section of docs/performance.md. */
async function writeSection(table: string): Promise<void> {
  const path = 'docs/performance.md';
  let text = '';
  try {
    text = await readFile(path, 'utf8');
  } catch {
    text = '# Performance\n\nMeasured numbers of the benchmarks in scripts/bench/ (each writes raw JSON to bench-results/).\n';
  }
  const section = `${START}\n## Kill switch propagation\n\n\`npm run bench:killswitch\` (scripts/bench/killswitch.ts).\n\n${table}\n${END}`;
  const a = text.indexOf(START);
  const b = text.indexOf(END);
  text = a >= 0 && b > a ? text.slice(0, a) + section + text.slice(b + END.length) : `${text.trimEnd()}\n\n${section}\n`;
  await writeFile(path, text);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
