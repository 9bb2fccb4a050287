// Benchmark of the Redis step (DESIGN.md §4 step 7) and the comparison behind docs/adr/0001-redis-gate-lua.md.
//
//   npx tsx scripts/bench/gate.ts [--calls 20000] [--concurrency 50]
//
// 1. The gate step in-process (CallContext in, Denial or nothing out) with the full set of counters a
//    filesystem read carries, sequentially and at 50 calls in flight: p50/p99 per call.
// 2. Same run, same Redis: a bare Lua script checking and incrementing 4 counters; our gate script with
//    4 counters (plus session binding, halts and the call records); one rate-limiter-flexible limiter;
//    4 limiters awaited one after another; RateLimiterUnion of 4; and a PING as the floor.
// 3. Whether RateLimiterUnion is atomic: a call rejected by one limiter still consumes the others.
// 4. How long the state-epoch reload takes (10,000 sessions in Postgres, Redis keys deleted).
// Prints a table and writes JSON to bench-results/gate-<timestamp>.json.

import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { pino } from 'pino';
import { RateLimiterRedis, RateLimiterUnion } from 'rate-limiter-flexible';
import { v7 as uuidv7 } from 'uuid';
import { migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import type { CallContext, PipelineStep } from '../../src/decisions/types.js';
import { RedisGate } from '../../src/limits/gate.js';
import type { GateLimits } from '../../src/limits/limits.js';
import { createGateStep } from '../../src/limits/step.js';
import { createRedis, waitForRedis } from '../../src/redis/client.js';
import { SessionService } from '../../src/sessions/service.js';
import type { AgentPrincipal, GatewayPrincipal } from '../../src/tokens/authenticator.js';
import { credentialStore } from '../../src/tokens/store.js';

const { values: args } = parseArgs({
  options: {
    calls: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '50' },
    'pg-url': { type: 'string', default: process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
    'redis-url': { type: 'string', default: process.env['BENCH_REDIS_URL'] ?? 'redis://127.0.0.1:6379' },
  },
});
const CALLS = Number(args.calls);
const CONCURRENCY = Number(args.concurrency);

interface Stats {
  name: string;
  concurrency: number;
  ops: number;
  ops_per_s: number;
  p50_us: number;
  p99_us: number;
  round_trips_per_call: number | string;
  atomic: boolean | string;
  /** Redis CPU per call from INFO commandstats (approximate: the Redis is shared with anything else running). */
  redis_us_per_call: number | null;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;
}

type RedisUsage = () => Promise<{ calls: number; usec: number }>;

/** Closed loop: `concurrency` workers, each awaiting one op at a time, `ops` in total. */
async function measure(
  name: string,
  concurrency: number,
  ops: number,
  op: (i: number) => Promise<unknown>,
  meta: Pick<Stats, 'round_trips_per_call' | 'atomic'> & { usage: RedisUsage; perOp: number },
): Promise<Stats> {
  const lat = new Float64Array(ops);
  let next = 0;
  // warm-up (script cache, JIT, connection)
  for (let i = 0; i < Math.min(500, ops); i++) await op(-1 - i);
  const before = await meta.usage();
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const i = next++;
        if (i >= ops) return;
        const t0 = process.hrtime.bigint();
        await op(i);
        lat[i] = Number(process.hrtime.bigint() - t0) / 1000;
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const after = await meta.usage();
  const sorted = Array.from(lat).sort((a, b) => a - b);
  const calls = after.calls - before.calls;
  return {
    name,
    concurrency,
    ops,
    ops_per_s: Math.round(ops / seconds),
    p50_us: Math.round(pct(sorted, 50)),
    p99_us: Math.round(pct(sorted, 99)),
    round_trips_per_call: meta.round_trips_per_call,
    atomic: meta.atomic,
    redis_us_per_call: calls > 0 ? Math.round(((after.usec - before.usec) / calls) * meta.perOp * 10) / 10 : null,
  };
}

async function main(): Promise<void> {
  const loadBefore = os.loadavg();
  const tag = randomBytes(4).toString('hex');
  const dbName = `ks_bench_gate_${tag}`;
  const admin = new pg.Client({ connectionString: args['pg-url'] });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  const dbUrl = new URL(args['pg-url']!);
  dbUrl.pathname = `/${dbName}`;
  const pool = createPool(dbUrl.toString(), { max: 4 });
  const prefix = `ksbench:${tag}:`;
  const redis = createRedis(args['redis-url']!, prefix, 2_000);
  await waitForRedis(redis);
  const results: Stats[] = [];
  let unionCheck: Record<string, unknown> = {};
  let reload: Record<string, unknown> = {};
  try {
    await migrate(pool);
    const log = pino({ level: 'silent' });
    const sessions = new SessionService(pool, redis, log, { idleTimeoutMs: 3_600_000, maxOpenPerToken: 0, maxNewPerHour: 0 });
    await sessions.ensureState();
    const gateway: GatewayPrincipal = { kind: 'gateway', id: uuidv7(), name: 'bench', expiresAt: null };
    const agents: AgentPrincipal[] = [];
    const sids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const row = await credentialStore.insertAgentToken(pool, {
        id: uuidv7(),
        type: 'rw',
        key_prefix: 'mcp_rw_',
        display_prefix: 'mcp_rw_bench',
        key_hash: randomBytes(32),
        scopes: ['storage:read', 'storage:write'],
        role: 'code_agent',
        project_id: 'bench',
        environment: 'development',
        description: 'bench',
        created_by: 'bench',
        expires_at: null,
      });
      const agent: AgentPrincipal = { kind: 'agent', id: row.id, tokenType: 'rw', scopes: row.scopes, role: row.role, projectId: 'bench', environment: 'development', displayPrefix: row.display_prefix, expiresAt: null };
      agents.push(agent);
      for (let j = 0; j < 5; j++) sids.push((await sessions.open(agent, null, {})).session_id);
    }
    const big = 1_000_000_000;
    // Every counter a filesystem read carries in production, numbers high enough that nothing denies.
    const fullLimits: GateLimits = {
      sessionCalls: big,
      sessionCallsPerMinute: big,
      serverReads: big,
      serverWrites: big,
      tokenServerCallsPerMinute: big,
      tokenCallsPerMinute: big,
      tokenCallsPerDay: big,
      pauseAtPercent: 80,
      cascade: { threshold: 3, windowCalls: 5 },
    };
    const fourCounters: GateLimits = { sessionCalls: big, sessionCallsPerMinute: big, tokenCallsPerMinute: big, tokenCallsPerDay: big, pauseAtPercent: 0, cascade: { threshold: 0, windowCalls: 0 } };
    const gate = new RedisGate(redis, { sessionIdleMs: 3_600_000, decisionTtlMs: 3_600_000 });
    const step: PipelineStep = createGateStep({ gate, sessions, limitsFor: () => fullLimits, haltTokenOn: () => [] });
    const ctxFor = (i: number): CallContext => {
      const k = Math.abs(i) % sids.length;
      const agent = agents[Math.floor(k / 5)]!;
      return {
        decisionId: uuidv7(),
        receivedAt: Date.now(),
        gateway,
        agent,
        input: { server: 'filesystem', tool: 'read_file', arguments: { path: `docs/file-${k}.md` }, session_id: sids[k]! },
        ip: '127.0.0.1',
        call: { server: 'filesystem', serverClass: 'storage', tool: 'read_file', requiredScope: 'storage:read', capability: 'read', scopeSource: 'map', extraFlags: [], resourceIds: [`file:///repo/docs/file-${k}.md`], networkIdentities: [] },
        flagsEvaluated: [],
        limits: {},
        warnings: [],
        dryRun: false,
        trace: [],
      };
    };
    const runStep = async (i: number) => {
      const d = await step.run(ctxFor(i));
      if (d) throw new Error(`bench call denied: ${d.code} ${d.message}`);
    };
    const checkFour = async (i: number) => {
      const k = Math.abs(i) % sids.length;
      const o = await gate.check({
        decisionId: `b${i}`,
        tokenId: agents[Math.floor(k / 5)]!.id,
        sessionId: sids[k]!,
        server: 'filesystem',
        tool: 'read_file',
        capability: 'read',
        resourceIds: ['x'],
        arguments: {},
        limits: fourCounters,
        haltTokenOn: [],
      });
      if (!o.allowed) throw new Error(`denied: ${o.reason}`);
    };
    // The counters alone, as DESIGN.md §9 measured them: 4 windowed counters checked, then incremented.
    const BARE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keys, used = {}, {}
for i = 1, #KEYS do
  keys[i] = KEYS[i] .. ':' .. math.floor(now / tonumber(ARGV[2 * i]))
  used[i] = tonumber(redis.call('GET', keys[i])) or 0
  if used[i] + 1 > tonumber(ARGV[2 * i - 1]) then return 0 end
end
for i = 1, #KEYS do
  if redis.call('INCR', keys[i]) == 1 then redis.call('PEXPIRE', keys[i], ARGV[2 * i]) end
end
return 1`;
    redis.redis.defineCommand('ksBenchBare4', { numberOfKeys: 4, lua: BARE_LUA });
    const bare = redis.redis as unknown as { ksBenchBare4(...a: Array<string | number>): Promise<number> };
    const bare4 = (i: number) => {
      const sid = keyOf(i);
      return bare.ksBenchBare4(`${prefix}b:s:${sid}`, `${prefix}b:m:${sid}`, `${prefix}b:tm:${sid}`, `${prefix}b:td:${sid}`, big, 3_600_000, big, 60_000, big, 60_000, big, 86_400_000);
    };
    const limiter = (name: string, points: number) => new RateLimiterRedis({ storeClient: redis.redis, keyPrefix: `${prefix}rlf:${name}`, points, duration: 60 });
    const four = [limiter('session', big), limiter('sessionMinute', big), limiter('tokenMinute', big), limiter('tokenDay', big)];
    const union = new RateLimiterUnion(...four);
    const keyOf = (i: number) => sids[Math.abs(i) % sids.length]!;
    const usageOf =
      (command: string): RedisUsage =>
      async () => {
        const m = new RegExp(`cmdstat_${command}:calls=(\\d+),usec=(\\d+)`).exec(await redis.redis.info('commandstats'));
        return { calls: Number(m?.[1] ?? 0), usec: Number(m?.[2] ?? 0) };
      };
    const evalsha = usageOf('evalsha');
    const ping = usageOf('ping');

    for (const c of [1, CONCURRENCY]) {
      const n = c === 1 ? Math.min(CALLS, 10_000) : CALLS;
      results.push(await measure('PING (floor: one round trip)', c, n, () => redis.redis.ping(), { round_trips_per_call: 1, atomic: '-', usage: ping, perOp: 1 }));
      results.push(await measure('gate step, full (7 counters + binding + cascade + records)', c, n, runStep, { round_trips_per_call: 1, atomic: true, usage: evalsha, perOp: 1 }));
      results.push(await measure('bare Lua: 4 counters only (check, then increment)', c, n, bare4, { round_trips_per_call: 1, atomic: true, usage: evalsha, perOp: 1 }));
      results.push(await measure('Lua gate, 4 counters', c, n, checkFour, { round_trips_per_call: 1, atomic: true, usage: evalsha, perOp: 1 }));
      results.push(await measure('rate-limiter-flexible: 1 limiter', c, n, (i) => four[0]!.consume(keyOf(i)), { round_trips_per_call: 1, atomic: 'one counter only', usage: evalsha, perOp: 1 }));
      results.push(
        await measure('rate-limiter-flexible: 4 limiters in sequence', c, n, async (i) => {
          for (const l of four) await l.consume(keyOf(i));
        }, { round_trips_per_call: 4, atomic: false, usage: evalsha, perOp: 4 }),
      );
      results.push(await measure('rate-limiter-flexible: RateLimiterUnion of 4', c, n, (i) => union.consume(keyOf(i)), { round_trips_per_call: 4, atomic: false, usage: evalsha, perOp: 4 }));
    }

    // Reload after Redis lost this installation's keys: 10,000 live sessions (1% halted) and their token halts.
    const RELOAD_SESSIONS = 10_000;
    await pool.query(
      `INSERT INTO sessions (id, token_id, read_only, servers, purpose, state, trigger, halted_at)
       SELECT gen_random_uuid(), (ARRAY[${agents.map((_, i) => `$${i + 1}::uuid`).join(',')}])[1 + g % ${agents.length}], g % 3 = 0, NULL, 'bench',
              CASE WHEN g % 100 = 0 THEN 'halted' ELSE 'active' END, CASE WHEN g % 100 = 0 THEN 'CASCADE_WRITE' END, CASE WHEN g % 100 = 0 THEN now() END
       FROM generate_series(1, ${RELOAD_SESSIONS}) g`,
      agents.map((a) => a.id),
    );
    await sessions.halt({ tokenId: agents[0]!.id, trigger: 'CASCADE_WRITE', haltToken: true, summary: {} });
    let flushCursor = '0';
    do {
      const [nextCursor, keys] = await redis.redis.scan(flushCursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      flushCursor = nextCursor;
      if (keys.length) await redis.redis.del(...keys);
    } while (flushCursor !== '0');
    const reloadStarted = process.hrtime.bigint();
    const reloadResult = await sessions.ensureState();
    reload = { sessions: RELOAD_SESSIONS + sids.length, result: reloadResult, ms: Math.round(Number(process.hrtime.bigint() - reloadStarted) / 1e5) / 10 };

    // Atomicity: a limit of 5 beside a limit of 1000, 10 calls through the union.
    const small = limiter('atomic-small', 5);
    const large = limiter('atomic-large', 1000);
    const u = new RateLimiterUnion(small, large);
    let admitted = 0;
    for (let i = 0; i < 10; i++) {
      try {
        await u.consume('k');
        admitted++;
      } catch {
        // rejected by the small limiter
      }
    }
    const largeUsed = (await large.get('k'))?.consumedPoints ?? 0;
    unionCheck = { calls: 10, admitted, large_limiter_consumed: largeUsed, consumed_by_rejected_calls: largeUsed - admitted };
  } finally {
    let cursor = '0';
    do {
      const [nextCursor, keys] = await redis.redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = nextCursor;
      if (keys.length) await redis.redis.del(...keys);
    } while (cursor !== '0');
    await redis.close();
    await pool.end();
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
  }

  const rows = results.map(
    (r) => `| ${r.name} | ${r.concurrency} | ${r.ops_per_s.toLocaleString('en-US')} | ${r.p50_us} | ${r.p99_us} | ${r.round_trips_per_call} | ${r.redis_us_per_call ?? '-'} | ${r.atomic} |`,
  );
  console.log(`load average before: ${loadBefore.map((l) => l.toFixed(2)).join(' ')}; after: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log('| what | in flight | ops/s | p50 µs | p99 µs | Redis trips/call | Redis µs/call | atomic |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---|');
  for (const line of rows) console.log(line);
  console.log(`\nRateLimiterUnion atomicity: ${JSON.stringify(unionCheck)}`);
  console.log(`Reload from Postgres after losing Redis: ${JSON.stringify(reload)}`);
  const out = {
    bench: 'gate',
    at: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? '', node: process.version, load_before: loadBefore, load_after: os.loadavg() },
    calls: CALLS,
    concurrency: CONCURRENCY,
    results,
    union_atomicity: unionCheck,
    reload,
  };
  await mkdir('bench-results', { recursive: true });
  const file = `bench-results/gate-${out.at.replace(/[:.]/g, '-')}.json`;
  await writeFile(file, `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nwrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
