import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENESIS, rowHash, verifyChain } from '../../src/audit/chain.js';
import { type AuditRecord, makeRecord } from '../../src/audit/record.js';
import { adminRow, intentRow } from '../../src/audit/rows.js';
import { createWriterPool } from '../../src/audit/service.js';
import { LOCK_LEASE_MS, Spool, spoolBaseName } from '../../src/audit/spool.js';
import { AuditUnavailable, AuditWriter, type SpoolSetAside } from '../../src/audit/writer.js';
import { TestContext } from '../helpers/context.js';
import { callContext, PgProxy } from './audit-fixtures.js';

const ctx = new TestContext();
const proxy = new PgProxy();
let db: pg.Pool;
const pools: pg.Pool[] = [];
const writers: AuditWriter[] = [];
const logs: string[] = [];
/** Every line with its fields, for the tests that read them. */
const lines: Array<{ level: string; msg: string | undefined; fields: Record<string, unknown> }> = [];
const logAt =
  (level: string) =>
  (o: unknown, m?: string): void => {
    logs.push(`${level} ${m}`);
    lines.push({ level, msg: m, fields: (o ?? {}) as Record<string, unknown> });
  };
const log = { info: logAt('info'), warn: logAt('warn'), error: logAt('error') };

const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;

async function openWriter(
  dataDir: string,
  url = proxy.url(ctx.name),
  onSpoolingChange?: (spooling: boolean, rows: number) => void,
  onSpoolSetAside?: (info: SpoolSetAside) => void,
): Promise<AuditWriter> {
  const pool = createWriterPool(url);
  pools.push(pool);
  const writer = await AuditWriter.open({
    pool,
    database: ctx.name,
    dataDir,
    batchMax: 50,
    log: log as never,
    replayIntervalMs: 100,
    ...(onSpoolingChange ? { onSpoolingChange } : {}),
    ...(onSpoolSetAside ? { onSpoolSetAside } : {}),
  });
  writers.push(writer);
  return writer;
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const chainRows = async (replicaId: string) =>
  (await db.query<AuditRecord>('SELECT * FROM audit_events WHERE replica_id = $1 ORDER BY seq', [replicaId])).rows;

beforeAll(async () => {
  await ctx.setup();
  db = ctx.pool();
  await proxy.reserve();
});
afterAll(async () => {
  for (const w of writers) await w.close().catch(() => {});
  for (const p of pools) await p.end().catch(() => {});
  await proxy.down();
  await ctx.teardown();
});

describe('spool', () => {
  it('with Postgres unreachable, recordIntent resolves once fsynced to the spool; the rows are replayed in order when it returns', async () => {
    await proxy.down();
    const dir = await mkdtemp(join(tmpdir(), 'ks-spool-'));
    const changes: Array<[boolean, number]> = [];
    const writer = await openWriter(dir, proxy.url(ctx.name), (spooling, rows) => changes.push([spooling, rows]));
    const calls = Array.from({ length: 120 }, () => callContext());
    await Promise.all(calls.map((c) => writer.recordIntent(intentRow(c, allow))));
    expect(writer.spooling).toBe(true);
    expect(writer.spoolSize).toBe(121); // CHAIN_START + 120
    const file = join(dir, `${spoolBaseName(ctx.name)}.jsonl`);
    expect((await readFile(file, 'utf8')).trim().split('\n')).toHaveLength(121);
    // Spooled rows carry call arguments: readable by the control plane's user only.
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const replicaId = writer.replicaId!;
    expect(await chainRows(replicaId)).toHaveLength(0);

    await proxy.up();
    // The change is told once the emptied spool file is cleared, a moment after spoolSize reads 0.
    await until('the spool to be replayed', () => writer.spoolSize === 0 && !writer.spooling && changes.length === 2);
    const rows = await chainRows(replicaId);
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 121 }, (_, i) => i + 1));
    expect(rows.slice(1).map((r) => r.decision_id)).toEqual(calls.map((c) => c.decisionId));
    expect(await readFile(file, 'utf8')).toBe('');
    expect(changes.map(([spooling]) => spooling)).toEqual([true, false]);
    expect(writer.failing).toBe(false);

    // Back to direct writes, same chain.
    const more = callContext();
    await writer.recordIntent(intentRow(more, allow));
    expect((await chainRows(replicaId)).at(-1)!.decision_id).toBe(more.decisionId);
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);
  });

  it('replaying a spool whose rows already reached Postgres adds no duplicates (exactly once)', async () => {
    await proxy.up();
    const [{ replica_id: replicaId } = { replica_id: '' }] = (await db.query<{ replica_id: string }>('SELECT replica_id FROM audit_events LIMIT 1')).rows;
    const before = await chainRows(replicaId);
    expect(before.length).toBeGreaterThan(100);
    // As if the INSERT had committed but its answer was lost: the same rows also sit in a spool.
    const dir = await mkdtemp(join(tmpdir(), 'ks-spool-'));
    const spool = await Spool.acquire(dir, ctx.name);
    await spool.append(before);
    await spool.release();
    const writer = await openWriter(dir);
    await until('the replay', () => writer.spoolSize === 0);
    expect(await chainRows(replicaId)).toHaveLength(before.length);
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);
  });

  it('rows recorded after Postgres returns, before the spool is replayed, follow the spooled rows there (never ahead of them into Postgres)', async () => {
    await proxy.down();
    const pool = createWriterPool(proxy.url(ctx.name));
    pools.push(pool);
    // No replay until close(): the moment between Postgres coming back and the replay, held open.
    const writer = await AuditWriter.open({ pool, database: ctx.name, dataDir: await mkdtemp(join(tmpdir(), 'ks-spool-')), batchMax: 50, log: log as never, replayIntervalMs: 3_600_000 });
    writers.push(writer);
    const spooled = callContext();
    await writer.recordIntent(intentRow(spooled, allow));
    expect(writer.spoolSize).toBe(2); // CHAIN_START and the row
    await proxy.up();
    const later = callContext();
    await writer.recordIntent(intentRow(later, allow));
    const replicaId = writer.replicaId!;
    // Postgres answers, but the row went behind the two in the spool: none of the chain is there yet.
    expect(writer.spoolSize).toBe(3);
    expect(await chainRows(replicaId)).toEqual([]);
    await writer.close();
    expect((await chainRows(replicaId)).map((r) => [r.seq, r.kind, r.decision_id])).toEqual([
      [1, 'CHAIN_START', null],
      [2, 'INTENT', spooled.decisionId],
      [3, 'INTENT', later.decisionId],
      [4, 'CHAIN_END', null],
    ]);
  });

  it('with Postgres unreachable and the spool unwritable, recordIntent rejects AuditUnavailable; it works again when Postgres returns', async () => {
    await proxy.down();
    const file = join(await mkdtemp(join(tmpdir(), 'ks-spool-')), 'not-a-directory');
    await writeFile(file, '');
    const writer = await openWriter(join(file, 'data'));
    await expect(writer.recordIntent(intentRow(callContext(), allow))).rejects.toBeInstanceOf(AuditUnavailable);
    await expect(writer.recordAdmin({ actor: 'test', action: 'x' })).rejects.toBeInstanceOf(AuditUnavailable);
    expect(writer.lost).toBe(2);
    expect(writer.failing).toBe(true);

    await proxy.up();
    const ok = callContext();
    await writer.recordIntent(intentRow(ok, allow));
    const [row] = (await db.query<AuditRecord>('SELECT * FROM audit_events WHERE decision_id = $1', [ok.decisionId])).rows;
    // The failed positions were never reused: the writer started a new chain that verifies from seq 1.
    expect(row!.seq).toBe(2);
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);
  });

  it('failing clears without any row once Postgres returns: the writer starts a chain by itself (no traffic reaches a replica that is not ready)', async () => {
    await proxy.down();
    const file = join(await mkdtemp(join(tmpdir(), 'ks-spool-')), 'not-a-directory');
    await writeFile(file, '');
    const writer = await openWriter(join(file, 'data'));
    await expect(writer.recordIntent(intentRow(callContext(), allow))).rejects.toBeInstanceOf(AuditUnavailable);
    expect(writer.failing).toBe(true);
    // Still failing while both still fail: the probe is quiet and starts nothing that sticks.
    const errorsBefore = logs.filter((l) => l.startsWith('error')).length;
    await new Promise((r) => setTimeout(r, 350));
    expect(writer.failing).toBe(true);
    expect(logs.filter((l) => l.startsWith('error')).length).toBe(errorsBefore);

    await proxy.up();
    await until('failing to clear', () => !writer.failing);
    const [start] = await chainRows(writer.replicaId!);
    expect(start).toMatchObject({ kind: 'CHAIN_START', seq: 1 });
    expect(logs).toContain('info audit trail takes rows again: Postgres answered; a new chain started');
    const ok = callContext();
    await writer.recordIntent(intentRow(ok, allow));
    expect((await chainRows(writer.replicaId!)).map((r) => r.seq)).toEqual([1, 2]);
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);
  });

  it('a replay that keeps failing while Postgres is down (retried every replayIntervalMs) is logged once, then counted (repeats), not once per retry', async () => {
    await proxy.down();
    const dir = await mkdtemp(join(tmpdir(), 'ks-spool-'));
    const writer = await openWriter(dir);
    await writer.recordIntent(intentRow(callContext(), allow));
    expect(writer.spooling).toBe(true);
    // Each replay attempt asks the pool for a connection, which fails while Postgres is down.
    const pool = pools.at(-1)!;
    let attempts = 0;
    const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
    (pool as unknown as { connect: () => Promise<pg.PoolClient> }).connect = () => {
      attempts++;
      return connect();
    };
    await until('ten replay attempts', () => attempts >= 10);
    const failed = () => lines.filter((l) => l.msg === 'audit spool replay failed; retrying later' && l.fields['spool'] === join(dir, `${spoolBaseName(ctx.name)}.jsonl`));
    expect(failed()).toHaveLength(1);
    expect(failed()[0]).toMatchObject({ level: 'warn', fields: { at_most_every_s: 30, pending: 2 } });
    // Closing writes the count still waiting: every attempt is accounted for in two lines.
    await writer.close();
    expect(failed()).toHaveLength(2);
    expect(failed()[1]!.fields['repeats']).toBeGreaterThanOrEqual(9);
  });

  it('failing clears once the spool can be written again, Postgres still down; the chain it starts there is replayed later', async () => {
    await proxy.down();
    const dir = join(await mkdtemp(join(tmpdir(), 'ks-spool-')), 'not-yet');
    await writeFile(dir, '');
    const writer = await openWriter(dir);
    await expect(writer.recordIntent(intentRow(callContext(), allow))).rejects.toBeInstanceOf(AuditUnavailable);
    expect(writer.failing).toBe(true);

    // The disk is back (here: the path becomes a directory).
    await rm(dir);
    await mkdir(dir);
    await until('failing to clear', () => !writer.failing);
    expect(writer.spooling).toBe(true);
    const replicaId = writer.replicaId!;
    await proxy.up();
    await until('the spool to be replayed', () => !writer.spooling);
    expect((await chainRows(replicaId)).map((r) => r.kind)).toEqual(['CHAIN_START']);
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);
  });

  it('a spool whose first row continues a chain already in Postgres (seq > 1) is replayed: the check finds its predecessor', async () => {
    await proxy.up();
    const dir = await mkdtemp(join(tmpdir(), 'ks-spool-'));
    const setAside: SpoolSetAside[] = [];
    const writer = await openWriter(dir, proxy.url(ctx.name), undefined, (i) => setAside.push(i));
    await writer.recordIntent(intentRow(callContext(), allow));
    const replicaId = writer.replicaId!;
    await proxy.down();
    await writer.recordIntent(intentRow(callContext(), allow));
    expect(writer.spoolSize).toBe(1);
    await proxy.up();
    await until('the spool to be replayed', () => writer.spoolSize === 0 && !writer.spooling);
    expect((await chainRows(replicaId)).map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(setAside).toEqual([]);
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);
  });

  it('a spool that continues no chain of this database (restored from an older backup) is set aside, not replayed; verify still passes', async () => {
    await proxy.up();
    // Rows 5 and 6 of a chain this database never had: its rows 1-4 were lost with the database.
    const lost = '9'.repeat(64);
    const replicaId = '019a0000-0000-7000-8000-00000000dead';
    const rows: AuditRecord[] = [];
    let prev = lost;
    for (const seq of [5, 6]) {
      const r = makeRecord(adminRow({ actor: 'test', action: 'x' }), `019a0000-0000-7000-8000-00000000000${seq}`, new Date(), replicaId, seq, prev);
      r.hash = rowHash(prev, r);
      prev = r.hash;
      rows.push(r);
    }
    const dir = await mkdtemp(join(tmpdir(), 'ks-spool-'));
    const spool = await Spool.acquire(dir, ctx.name);
    await spool.append(rows);
    await spool.release();

    const setAside: SpoolSetAside[] = [];
    const writer = await openWriter(dir, proxy.url(ctx.name), undefined, (i) => setAside.push(i));
    await until('the spool to be set aside', () => setAside.length > 0);
    expect(setAside).toEqual([{ path: expect.stringMatching(/\.jsonl\.set-aside-/), rows: 2, replicaId, seq: 5 }]);
    expect(writer.spoolSize).toBe(0);
    expect(await chainRows(replicaId)).toEqual([]);
    // The rows are kept, as sealed, in the renamed file; no writer adopts it.
    expect((await readFile(setAside[0]!.path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l).hash)).toEqual(rows.map((r) => r.hash));
    expect((await readdir(dir)).filter((n) => n.endsWith('.jsonl'))).toEqual([]);
    expect(logs.some((l) => l.startsWith('error audit spool set aside, not replayed'))).toBe(true);
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);

    // The writer goes on: the next row is written directly.
    const next = callContext();
    await writer.recordIntent(intentRow(next, allow));
    expect((await db.query('SELECT 1 FROM audit_events WHERE decision_id = $1', [next.decisionId])).rowCount).toBe(1);
    // A second writer on that directory finds nothing to replay.
    const second = await openWriter(dir);
    expect(second.spoolSize).toBe(0);
  });

  it('rows left in the spool by a writer that stopped while Postgres was down are replayed by the next writer', async () => {
    await proxy.down();
    const dir = await mkdtemp(join(tmpdir(), 'ks-spool-'));
    const first = await openWriter(dir);
    const calls = Array.from({ length: 7 }, () => callContext());
    for (const c of calls) await first.recordIntent(intentRow(c, allow));
    const replicaId = first.replicaId!;
    await first.close();
    // What the shutdown's last line reports (audit_spool_rows): CHAIN_START, the 7 rows and CHAIN_END wait there.
    expect(first.spoolSize).toBe(9);
    expect(await chainRows(replicaId)).toHaveLength(0);

    await proxy.up();
    const second = await openWriter(dir);
    await until('the replay', () => second.spoolSize === 0);
    expect((await chainRows(replicaId)).map((r) => r.decision_id).slice(1, -1)).toEqual(calls.map((c) => c.decisionId));
    expect((await verifyChain(db, { retentionDays: 90 })).ok).toBe(true);
  });

  it('a lock written on another host (a DATA_DIR shared between containers) is kept while touched, taken over once its lease ran out', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ks-spool-'));
    const slot0 = join(dir, `${spoolBaseName(ctx.name)}.jsonl`);
    await writeFile(slot0, '');
    // Another container whose writer has our pid (PID 1 in every container, say): on its host it is alive.
    await writeFile(`${slot0}.lock`, `${process.pid} another-container\n`);
    const beside = await Spool.acquire(dir, ctx.name);
    expect(beside.path).toMatch(/\.1\.jsonl$/);
    await beside.release();
    const long = new Date(Date.now() - LOCK_LEASE_MS - 5_000);
    await utimes(`${slot0}.lock`, long, long);
    const taken = await Spool.acquire(dir, ctx.name);
    expect(taken.path).toBe(slot0);
    expect((await readFile(`${slot0}.lock`, 'utf8')).trim()).toBe(`${process.pid} ${hostname()}`);
    await taken.release();
  });

  it("a spool file of another writer's slot is adopted, and a torn last line (crash mid-append) is dropped", async () => {
    await proxy.up();
    const dir = await mkdtemp(join(tmpdir(), 'ks-spool-'));
    // A writer in slot 1 appended 3 rows, then crashed halfway through a 4th.
    // A file an earlier version left readable by everyone is narrowed when it is opened; a new directory is the user's only.
    const fresh = join(dir, 'new-data-dir');
    await writeFile(join(dir, `${spoolBaseName(ctx.name)}.jsonl`), '', { mode: 0o644 });
    const slot0 = await Spool.acquire(dir, ctx.name);
    expect((await stat(slot0.path)).mode & 0o777).toBe(0o600);
    await (await Spool.acquire(fresh, ctx.name)).release();
    expect((await stat(fresh)).mode & 0o777).toBe(0o700);
    const slot1 = await Spool.acquire(dir, ctx.name);
    expect(slot1.path).toMatch(/\.1\.jsonl$/);
    const source = await openWriter(dir, 'postgres://postgres@127.0.0.1:1/nowhere');
    await source.close();
    const spare = await mkdtemp(join(tmpdir(), 'ks-spool-'));
    await proxy.down();
    const crashed = await openWriter(spare);
    const calls = Array.from({ length: 3 }, () => callContext());
    for (const c of calls) await crashed.recordIntent(intentRow(c, allow));
    const lines = (await readFile(join(spare, `${spoolBaseName(ctx.name)}.jsonl`), 'utf8')).trim().split('\n');
    await slot1.append(lines.map((l) => JSON.parse(l) as AuditRecord));
    await appendFile(slot1.path, lines[1]!.slice(0, 40));
    await slot1.release();
    await slot0.release();
    await proxy.up();

    const writer = await openWriter(dir);
    await until('the adopted spool to be replayed', () => writer.spoolSize === 0);
    const rows = await chainRows(crashed.replicaId!);
    expect(rows.map((r) => r.decision_id).slice(1)).toEqual(calls.map((c) => c.decisionId));
    expect(await readFile(slot1.path, 'utf8').catch(() => '')).toBe('');
  });
  it('a spool line that does not parse (a damaged file) is logged, and the rows around it are replayed', async () => {
    await proxy.up();
    const replicaId = '019a0000-0000-7000-8000-00000000beef';
    const rows: AuditRecord[] = [];
    let prev = GENESIS;
    for (const seq of [1, 2, 3]) {
      const r = makeRecord(adminRow({ actor: 'test', action: `damaged-${seq}` }), `019a0000-0000-7000-8000-0000000b000${seq}`, new Date(), replicaId, seq, prev);
      r.hash = rowHash(prev, r);
      prev = r.hash;
      rows.push(r);
    }
    const dir = await mkdtemp(join(tmpdir(), 'ks-spool-'));
    const spool = await Spool.acquire(dir, ctx.name);
    await spool.append([rows[0]!]);
    await appendFile(spool.path, '{"id": "019a0000-0000-7000-8000-0000000b0009", "kind": "INT\n');
    await spool.release();
    const again = await Spool.acquire(dir, ctx.name);
    await again.append(rows.slice(1));
    await again.release();

    const errorsBefore = logs.filter((l) => l === 'error audit spool lines that do not parse were skipped').length;
    const writer = await openWriter(dir);
    await until('the spool to be replayed', () => writer.spoolSize === 0 && !writer.spooling);
    expect((await chainRows(replicaId)).map((r) => r.action)).toEqual(['damaged-1', 'damaged-2', 'damaged-3']);
    expect(logs.filter((l) => l === 'error audit spool lines that do not parse were skipped').length).toBe(errorsBefore + 1);
    // The spool is emptied once replayed: the line is kept beside it, once, where no writer replays it.
    expect(await readFile(`${join(dir, spoolBaseName(ctx.name))}.jsonl.unparsed`, 'utf8')).toBe('{"id": "019a0000-0000-7000-8000-0000000b0009", "kind": "INT\n');
    expect(await readFile(join(dir, `${spoolBaseName(ctx.name)}.jsonl`), 'utf8').catch(() => '')).toBe('');
  });
});
