// Benchmark of the audit writer (src/audit/writer.ts): group commit, leader/follower, one JSON INSERT
// (json_populate_recordset) per batch, into a freshly migrated database on the local Postgres.
//
//   npm run bench:audit -- [--rows 200000] [--batch 500] [--seconds 5] [--rates 1000,5000,10000]
//
// 1. Sustained: rows/s when callers enqueue as fast as they can (the writer is the only limit).
// 2. Closed loop: 256 callers each awaiting recordIntent (as allows do): rows/s, p50/p99.
// 3. Fixed rate: a smooth open-loop generator calls recordIntent at R rows/s; p50/p99/p99.9 latency of
//    each call, i.e. what a durable INTENT adds to a decision at that load.
// 4. Spool: Postgres unreachable, rows appended and fsynced to the local spool instead.
// Prints a table and writes JSON to bench-results/audit-<timestamp>.json.

import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { pino } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import type { AuditEvent } from '../../src/audit/record.js';
import { intentRow } from '../../src/audit/rows.js';
import { createWriterPool } from '../../src/audit/service.js';
import { AuditWriter } from '../../src/audit/writer.js';
import { migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import type { CallContext } from '../../src/decisions/types.js';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '200000' },
    batch: { type: 'string', default: '500' },
    seconds: { type: 'string', default: '5' },
    rates: { type: 'string', default: '1000,5000,10000' },
    concurrency: { type: 'string', default: '256' },
    'pg-url': { type: 'string', default: process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
  },
});
const ROWS = Number(args.rows);
const BATCH = Number(args.batch);
const SECONDS = Number(args.seconds);
const RATES = args.rates.split(',').map(Number);
const CONCURRENCY = Number(args.concurrency);

interface Result {
  name: string;
  rows: number;
  rows_per_s: number;
  rows_per_insert: number | null;
  p50_us: number | null;
  p99_us: number | null;
  p999_us: number | null;
  max_us: number | null;
}

const log = pino({ level: 'silent' });

function sampleEvent(i: number): AuditEvent {
  const ctx: CallContext = {
    decisionId: uuidv7(),
    receivedAt: Date.now(),
    gateway: { kind: 'gateway', id: '01a20000-0000-7000-8000-000000000001', name: 'gw', expiresAt: null },
    agent: { kind: 'agent', id: `01a20000-0000-7000-8000-0000000000${(i % 90) + 10}`, tokenType: 'rw', scopes: [], role: 'code_agent', projectId: 'bench', environment: 'development', displayPrefix: 'mcp_rw_x', expiresAt: null },
    input: {
      server: 'filesystem',
      tool: 'write_file',
      arguments: { path: `docs/page-${i}.md`, content: 'A paragraph of documentation text that an agent writes. '.repeat(3) },
      session_id: `s-${i % 500}`,
      client: { name: 'claude-ai', version: '0.9.2', user_agent: 'Claude/0.9.2' },
    },
    ip: '127.0.0.1',
    call: { server: 'filesystem', serverClass: 'storage', tool: 'write_file', requiredScope: 'storage:write', capability: 'write', scopeSource: 'map', extraFlags: [], resourceIds: [], networkIdentities: [] },
    flagsEvaluated: [
      { name: 'mcp.enabled', enabled: true },
      { name: 'mcp.tokens.rw', enabled: true },
      { name: 'mcp.filesystem.write', enabled: true },
    ],
    session: { id: `s-${i % 500}`, state: 'active', read_only: false, servers: null, purpose: 'benchmark' },
    limits: { session_calls: { used: i % 200, max: 200 } },
    warnings: [],
    dryRun: false,
    trace: [],
  };
  return intentRow(ctx, { decision: 'allow', code: 'OK', message: 'filesystem/write_file allowed' });
}

function pct(sorted: Float64Array, p: number): number {
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0);
}

function latencyStats(lat: Float64Array): Pick<Result, 'p50_us' | 'p99_us' | 'p999_us' | 'max_us'> {
  const sorted = lat.slice().sort();
  return { p50_us: pct(sorted, 50), p99_us: pct(sorted, 99), p999_us: pct(sorted, 99.9), max_us: Math.round(sorted[sorted.length - 1] ?? 0) };
}

async function openWriter(url: string, database: string, dataDir: string): Promise<{ writer: AuditWriter; close: () => Promise<void> }> {
  const pool = createWriterPool(url);
  const writer = await AuditWriter.open({ pool, database, dataDir, batchMax: BATCH, log, replayIntervalMs: 60_000 });
  return {
    writer,
    close: async () => {
      await writer.close();
      await pool.end();
    },
  };
}

async function sustained(writer: AuditWriter, events: AuditEvent[]): Promise<Result> {
  const w0 = writer.written;
  const b0 = writer.batches;
  const started = process.hrtime.bigint();
  for (let i = 0; i < ROWS; i++) {
    writer.enqueue(events[i % events.length]!);
    // Keep memory bounded: let the writer drain when far ahead.
    while (writer.queueDepth > 20_000) await new Promise((r) => setTimeout(r, 1));
  }
  await writer.flush();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const written = writer.written - w0;
  if (written !== ROWS || writer.lost > 0) throw new Error(`sustained run wrote ${written} of ${ROWS} rows (${writer.lost} lost)`);
  return { name: 'sustained (enqueue, writer-bound)', rows: written, rows_per_s: Math.round(written / seconds), rows_per_insert: +(written / (writer.batches - b0)).toFixed(1), p50_us: null, p99_us: null, p999_us: null, max_us: null };
}

async function closedLoop(name: string, writer: AuditWriter, events: AuditEvent[], seconds: number): Promise<Result> {
  const lat: number[] = [];
  const w0 = writer.written;
  const b0 = writer.batches;
  const end = Date.now() + seconds * 1000;
  let i = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < end) {
        const t0 = process.hrtime.bigint();
        await writer.recordIntent(events[i++ % events.length]!);
        lat.push(Number(process.hrtime.bigint() - t0) / 1000);
      }
    }),
  );
  const s = Number(process.hrtime.bigint() - started) / 1e9;
  const batches = writer.batches - b0;
  return { name, rows: lat.length, rows_per_s: Math.round(lat.length / s), rows_per_insert: batches > 0 ? +((writer.written - w0) / batches).toFixed(1) : null, ...latencyStats(Float64Array.from(lat)) };
}

/** Smooth open loop: every millisecond issues the calls that are due, never waits for answers. */
async function fixedRate(writer: AuditWriter, events: AuditEvent[], rate: number): Promise<Result> {
  const total = rate * SECONDS;
  const lat = new Float64Array(total);
  const pending: Promise<void>[] = [];
  const w0 = writer.written;
  const b0 = writer.batches;
  const t0 = process.hrtime.bigint();
  let issued = 0;
  while (issued < total) {
    const elapsedS = Number(process.hrtime.bigint() - t0) / 1e9;
    const due = Math.min(total, Math.floor(elapsedS * rate));
    for (; issued < due; issued++) {
      const i = issued;
      const start = process.hrtime.bigint();
      pending.push(writer.recordIntent(events[i % events.length]!).then(() => {
        lat[i] = Number(process.hrtime.bigint() - start) / 1000;
      }));
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(pending);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const batches = writer.batches - b0;
  return { name: `fixed rate ${rate}/s`, rows: total, rows_per_s: Math.round(total / s), rows_per_insert: batches > 0 ? +((writer.written - w0) / batches).toFixed(1) : null, ...latencyStats(lat) };
}

async function main(): Promise<void> {
  const database = `ks_bench_audit_${randomBytes(4).toString('hex')}`;
  const adminUrl = new URL(args['pg-url']);
  const dbUrl = new URL(args['pg-url']);
  dbUrl.pathname = `/${database}`;
  const admin = new pg.Client({ connectionString: adminUrl.toString() });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  const owner = createPool(dbUrl.toString(), { max: 1 });
  const dataDir = await mkdtemp(join(os.tmpdir(), 'ks-bench-audit-'));
  const results: Result[] = [];
  try {
    await migrate(owner);
    const events = Array.from({ length: 5_000 }, (_, i) => sampleEvent(i));
    const { writer, close } = await openWriter(dbUrl.toString(), database, dataDir);
    try {
      // Warm-up: connections, JIT, the first partition pages.
      for (let i = 0; i < 5_000; i++) writer.enqueue(events[i]!);
      await writer.flush();
      results.push(await sustained(writer, events));
      results.push(await closedLoop(`closed loop, ${CONCURRENCY} callers awaiting recordIntent`, writer, events, SECONDS));
      for (const rate of RATES) results.push(await fixedRate(writer, events, rate));
    } finally {
      await close();
    }
    // Postgres unreachable (a closed port): every batch goes to the fsynced spool.
    const down = await openWriter('postgres://postgres@127.0.0.1:1/none', database, join(dataDir, 'down'));
    try {
      await down.writer.recordIntent(events[0]!);
      results.push(await closedLoop(`spool (Postgres down), ${CONCURRENCY} callers`, down.writer, events, Math.min(SECONDS, 3)));
    } finally {
      await down.close();
    }
    const { rows } = await owner.query('SELECT count(*)::int AS n, pg_size_pretty(pg_total_relation_size($1::regclass)) AS size FROM audit_events', ['audit_events']);
    console.log(`\nAudit writer, batch max ${BATCH}, ${os.cpus().length} CPUs, Node ${process.version}; ${rows[0].n} rows written\n`);
  } finally {
    await owner.end();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.end();
    await rm(dataDir, { recursive: true, force: true });
  }

  const head = ['scenario', 'rows', 'rows/s', 'rows/INSERT', 'p50 µs', 'p99 µs', 'p99.9 µs', 'max µs'];
  const table = results.map((r) => [r.name, r.rows, r.rows_per_s, r.rows_per_insert ?? '-', r.p50_us ?? '-', r.p99_us ?? '-', r.p999_us ?? '-', r.max_us ?? '-'].map(String));
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  console.log(line(head));
  console.log(`|${widths.map((w, i) => (i === 0 ? `${'-'.repeat(w + 1)}-` : `${'-'.repeat(w + 1)}:`)).join('|')}|`);
  for (const row of table) console.log(line(row));

  await mkdir('bench-results', { recursive: true });
  const at = new Date().toISOString();
  const file = `bench-results/audit-${at.replace(/[:.]/g, '-')}.json`;
  await writeFile(file, `${JSON.stringify({ bench: 'audit', at, machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version }, batch_max: BATCH, results }, null, 2)}\n`);
  console.log(`\nwrote ${file}`);
}

await main();
