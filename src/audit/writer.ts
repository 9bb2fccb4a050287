import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import type { Pool } from '../db/pool.js';
import { RepeatedLog } from '../log-repeats.js';
import { type ChainHead, GENESIS, rowHash } from './chain.js';
import { hashedContent } from './content.js';
import { type AuditEvent, type AuditRecord, makeEvent, makeRecord } from './record.js';
import { type AdminAction, adminRow } from './rows.js';
import { Spool } from './spool.js';
import { auditStore } from './store.js';

/** Neither Postgres nor the local spool could take the row: the caller must fail closed. */
export class AuditUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditUnavailable';
  }
}

export interface AuditWriterOptions {
  /** Pool whose connections already run as the limited writer role. */
  pool: Pool;
  /** Database name: the spool file is per database. */
  database: string;
  /** Directory of the spool file (DATA_DIR). */
  dataDir: string;
  /** Most rows in one INSERT (AUDIT_BATCH_MAX). */
  batchMax: number;
  log: Pick<Logger, 'info' | 'warn' | 'error'>;
  /** How often a spool is retried against Postgres. Default 1000 ms. */
  replayIntervalMs?: number;
  /** Rows waiting in memory beyond which recordIntent rejects at once. Default 100 000. */
  maxQueue?: number;
  /** Event time source (tests write rows "in the past"). Default Date.now. */
  clock?: () => number;
  /** Told when rows start going to the spool (true) and when the spool has been replayed (false). */
  onSpoolingChange?: (spooling: boolean, spoolRows: number) => void;
  /** Told when a spool whose rows do not continue this database's chains was set aside instead of replayed. */
  onSpoolSetAside?: (info: SpoolSetAside) => void;
  /** Told when the durable head enters a chain it was not in (the first row of a new chain in Postgres). */
  onNewDurableChain?: () => void;
  /**
   * How long rows nobody waits for (denials, RESULT rows) may wait for company before they are written.
   * A row some caller awaits (an allow's INTENT, an admin action) is flushed at once and takes the
   * lingering rows with it. Default 5 ms; 0 flushes every row at once.
   */
  lingerMs?: number;
  /**
   * A row not durable after this long means the writer is stuck (a hang no timeout caught): `stalled` turns
   * true (GET /readyz: audit not ready) and one warning is logged until rows are durable again. Default 5000.
   */
  stallMs?: number;
}

/** A spool set aside: where it is now, its rows, and the first row that continues nothing here. */
export interface SpoolSetAside {
  path: string;
  rows: number;
  replicaId: string;
  seq: number;
}

/** Default of AuditWriterOptions.stallMs: twice the longest an INSERT may take (AUDIT_QUERY_TIMEOUT_MS). */
export const AUDIT_STALL_MS = 5_000;

interface Pending {
  event: AuditEvent;
  ts: number;
  /** performance.now() when queued (ts is the event clock, which tests move). */
  queuedAt: number;
  resolve?: () => void;
  reject?: (err: Error) => void;
}

interface Chain {
  replicaId: string;
  seq: number;
  lastHash: string;
}

// Postgres SQLSTATE classes that mean "this row is bad", as opposed to "the database is not there".
const DATA_ERROR_CLASSES = new Set(['22', '23']);
function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && DATA_ERROR_CLASSES.has(code.slice(0, 2));
}

/**
 * Group-commit audit writer. Leader/follower: when no flush is in flight, rows are flushed at once; while
 * one is in flight the next batch accumulates (no timer). One INSERT per batch, in order. Each row is
 * sealed into this writer's hash chain just before its batch is written. When Postgres fails, batches go
 * to the fsynced local spool, and every later row follows them there until the spool has been replayed,
 * so rows always reach Postgres in chain order.
 */
export class AuditWriter {
  private queue: Pending[] = [];
  private running = false;
  private scheduled = false;
  private chain: Chain | null = null;
  private head: ChainHead | undefined;
  private previousChain: string | null = null;
  private spool: Spool | null = null;
  private orphans: Spool[] = [];
  private replayDue = false;
  /** Spooled rows Postgres rejected (chain positions with their hash): a row after one still continues its chain. */
  private readonly rejected = new Set<string>();
  /** Set while failing and idle: the next run tries to start a chain (probe). */
  private probeDue = false;
  private lastTs = 0;
  private closed = false;
  /** Set by close(): the rows it left in spool files. */
  private leftInSpool: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lingerTimer: NodeJS.Timeout | undefined;
  /** Queued rows whose caller awaits durability (recordIntent). */
  private awaited = 0;
  private readonly lingerMs: number;
  private idleWaiters: Array<() => void> = [];
  private readonly batchListeners: Array<(rows: number) => void> = [];
  private readonly batchMax: number;
  private readonly maxQueue: number;
  private readonly clock: () => number;
  private readonly stallMs: number;
  /** queuedAt of the oldest row of the batch being written (Postgres or spool), while one is. */
  private inFlightSince: number | undefined;
  private stallWarned = false;
  /** The failure lines of a batch: once per batch while Postgres (and the spool) fail, so counted per interval. */
  private readonly failureLog = new RepeatedLog();

  /** Rows committed to Postgres directly or by replay. */
  written = 0;
  /** INSERT statements that committed (written / batches = rows per group commit). */
  batches = 0;
  /** Rows appended to the spool. */
  spooled = 0;
  /** Rows that neither Postgres nor the spool took (their callers were told, or they were denials/results). */
  lost = 0;
  /** The last batch could be written neither to Postgres nor to the spool. */
  failing = false;

  private constructor(private readonly opts: AuditWriterOptions) {
    this.batchMax = Math.max(1, opts.batchMax);
    this.maxQueue = opts.maxQueue ?? 100_000;
    this.clock = opts.clock ?? Date.now;
    this.lingerMs = Math.max(0, opts.lingerMs ?? 5);
    this.stallMs = opts.stallMs ?? AUDIT_STALL_MS;
  }

  /** Opens the spool (replaying what an earlier run left) and starts the replay timer. */
  static async open(opts: AuditWriterOptions): Promise<AuditWriter> {
    const writer = new AuditWriter(opts);
    try {
      writer.spool = await Spool.acquire(opts.dataDir, opts.database);
      writer.orphans = await Spool.adoptOrphans(opts.dataDir, opts.database);
    } catch (err) {
      opts.log.warn({ err: (err as Error).message, dataDir: opts.dataDir }, 'audit spool unavailable; audit rows fail closed if Postgres is also down');
    }
    if (writer.diverting || writer.orphans.length > 0) {
      opts.log.warn({ rows: writer.spoolSize }, 'audit spool holds rows from an earlier run; replaying them');
      writer.replayDue = true;
      writer.kick();
    }
    writer.timer = setInterval(() => {
      writer.checkStall();
      if (writer.diverting || writer.orphans.length > 0) {
        writer.replayDue = true;
        writer.kick();
      }
      if (writer.failing && writer.chain === null && writer.queue.length === 0) {
        writer.probeDue = true;
        writer.kick();
      }
    }, opts.replayIntervalMs ?? 1_000);
    writer.timer.unref();
    return writer;
  }

  /** Rows waiting in memory. */
  get queueDepth(): number {
    return this.queue.length;
  }

  /** How long the oldest row not yet durable (queued, or in the batch being written) has waited; 0 if none. */
  get oldestPendingMs(): number {
    const since = this.inFlightSince ?? this.queue[0]?.queuedAt;
    return since === undefined ? 0 : performance.now() - since;
  }

  /** A row has waited longer than stallMs: neither Postgres nor the spool answers (allows wait). */
  get stalled(): boolean {
    return this.oldestPendingMs > this.stallMs;
  }

  /** Logs once when rows stop becoming durable, and once when they are again (called every replayIntervalMs). */
  checkStall(): void {
    const age = this.oldestPendingMs;
    if (age > this.stallMs) {
      if (this.stallWarned) return;
      this.stallWarned = true;
      this.opts.log.warn(
        { oldest_pending_ms: Math.round(age), queue_depth: this.queue.length, spooling: this.diverting },
        `audit rows stalled: the oldest row has waited more than ${this.stallMs / 1000} s and is neither in Postgres nor in the spool; allows wait and GET /readyz says audit not ready`,
      );
    } else if (this.stallWarned) {
      this.stallWarned = false;
      this.opts.log.info({ queue_depth: this.queue.length, spooling: this.diverting }, 'audit rows durable again after a stall');
    }
  }

  /** Rows in local spool files, not yet in Postgres (after close: what it left there for the next start). */
  get spoolSize(): number {
    if (this.leftInSpool !== undefined) return this.leftInSpool;
    return (this.spool?.pendingRows ?? 0) + this.orphans.reduce((n, s) => n + s.pendingRows, 0);
  }

  /** True while rows are diverted to the spool (Postgres failed and the spool is not replayed yet). */
  get spooling(): boolean {
    return this.diverting;
  }

  /** Our spool holds rows not yet in Postgres: new rows must go behind them, so chain order holds. */
  private get diverting(): boolean {
    return this.spool !== null && !this.spool.fullyReplayed;
  }

  /** The current chain (replica_id), for tests and diagnostics. */
  get replicaId(): string | null {
    return this.chain?.replicaId ?? null;
  }

  /**
   * The last row of this writer's chains known to be in Postgres (written directly, or replayed from the
   * spool): what the `audit chain head` log line records outside the database. Undefined until one is.
   */
  get durableHead(): ChainHead | undefined {
    return this.head;
  }

  /**
   * Resolves once the row is committed in Postgres or appended and fsynced to the spool. Rejects with
   * AuditUnavailable when neither worked: the caller must deny (DEPENDENCY_UNAVAILABLE).
   */
  recordIntent(event: AuditEvent): Promise<void> {
    if (this.closed) return Promise.reject(new AuditUnavailable('audit writer is closed'));
    if (this.queue.length >= this.maxQueue) {
      return Promise.reject(new AuditUnavailable(`audit queue is full (${this.maxQueue} rows waiting)`));
    }
    return new Promise<void>((resolve, reject) => this.push({ event, ts: this.nextTs(), queuedAt: performance.now(), resolve, reject }));
  }

  /** Queues a row without waiting (denials are answered before they are durable; RESULT rows). Same order and chain. */
  enqueue(event: AuditEvent): void {
    if (this.closed || this.queue.length >= this.maxQueue) {
      this.lost++;
      this.opts.log.error({ kind: event.kind, decision_id: event.decision_id }, this.closed ? 'audit row after close dropped' : 'audit queue full: row dropped');
      return;
    }
    this.push({ event, ts: this.nextTs(), queuedAt: performance.now() });
  }

  /** An operator or system action; resolves when durable like recordIntent. */
  recordAdmin(action: AdminAction): Promise<void> {
    return this.recordIntent(adminRow(action));
  }

  /** Told the size of every group-committed INSERT (metrics); must be quick and must not throw. */
  onBatch(listener: (rows: number) => void): void {
    this.batchListeners.push(listener);
  }

  /** Resolves when every row queued before the call is committed or spooled. */
  flush(): Promise<void> {
    if (!this.running && !this.scheduled && this.queue.length === 0) return Promise.resolve();
    const idle = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    this.expedite();
    return idle;
  }

  /**
   * Graceful shutdown: no new rows; everything queued is written (or spooled); the spool gets one last
   * replay attempt; what remains in it is replayed by the next start.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    // The chain's last row says its writer closed it: a row appended after it later (the writer role can
    // INSERT) is a break `audit verify` reports. Only a chain that exists or is about to.
    if (this.chain || this.queue.length > 0) {
      const end = makeEvent({ kind: 'CHAIN_END', actor_type: 'system', actor_id: 'audit-writer', details: { host: hostname(), pid: process.pid, reason: 'shutdown' } });
      this.queue.push({ event: end, ts: this.nextTs(), queuedAt: performance.now() });
      this.kick();
    }
    await this.flush();
    if (this.diverting || this.orphans.length > 0) {
      this.replayDue = true;
      this.kick();
      await this.flush();
    }
    this.failureLog.flush();
    // Counted before the files are let go: the shutdown's last line says how many rows wait there.
    this.leftInSpool = this.spoolSize;
    for (const s of this.orphans.splice(0)) await s.release();
    await this.spool?.release(true);
    this.spool = null;
  }

  private nextTs(): number {
    // Non-decreasing per writer, so each chain is ordered by time too and retention cuts a prefix.
    const now = Math.max(this.clock(), this.lastTs);
    this.lastTs = now;
    return now;
  }

  private push(p: Pending): void {
    this.queue.push(p);
    if (p.resolve) {
      this.awaited++;
      this.expedite();
    }
    this.kick();
  }

  private kick(): void {
    if (this.running || this.scheduled) return;
    this.scheduled = true;
    // Only rows nobody awaits: let them wait a little for company (fewer, larger INSERTs and commits
    // when denials dominate). Otherwise setImmediate rather than a timer: rows arriving in the same turn
    // of the event loop share a batch, and the flush starts as soon as the previous one is done.
    if (!this.flushNow()) {
      this.lingerTimer = setTimeout(() => {
        this.lingerTimer = undefined;
        this.scheduled = false;
        void this.run(true);
      }, this.lingerMs);
      return;
    }
    setImmediate(() => {
      this.scheduled = false;
      void this.run();
    });
  }

  /** Ends a linger: the lingering rows go with the next flush, scheduled at once. */
  private expedite(): void {
    if (!this.lingerTimer) return;
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    this.scheduled = false;
    this.kick();
  }

  /** Flush what is queued now, or let unawaited rows linger (see lingerMs)? */
  private flushNow(): boolean {
    return this.awaited > 0 || this.lingerMs === 0 || this.closed || this.replayDue || this.idleWaiters.length > 0 || this.queue.length >= this.batchMax;
  }

  private async run(lingered = false): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      let force = lingered;
      for (;;) {
        let worked = false;
        if (this.queue.length > 0 && (force || this.flushNow())) {
          force = false;
          await this.flushBatch();
          worked = true;
        }
        if (this.replayDue) worked = (await this.replayStep()) || worked;
        if (this.probeDue && this.queue.length === 0) {
          this.probeDue = false;
          await this.probe();
        }
        if (!worked) break;
      }
    } catch (err) {
      this.opts.log.error({ err }, 'audit writer loop failed');
    } finally {
      this.running = false;
      if (this.queue.length > 0) this.kick();
      else for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** Assigns id, chain position and hash to each row of a batch (a new chain starts with CHAIN_START). */
  private seal(batch: Pending[], contents: string[]): AuditRecord[] {
    const out: AuditRecord[] = [];
    if (!this.chain) {
      this.chain = { replicaId: uuidv7(), seq: 0, lastHash: GENESIS };
      const start = makeEvent({
        kind: 'CHAIN_START',
        actor_type: 'system',
        actor_id: 'audit-writer',
        details: { host: hostname(), pid: process.pid, previous_replica_id: this.previousChain },
      });
      out.push(this.sealOne(start, batch[0]?.ts ?? this.nextTs(), contents));
    }
    for (const p of batch) out.push(this.sealOne(p.event, p.ts, contents));
    return out;
  }

  /** Also pushes the row's hashed content to `contents`: the INSERT reuses it as the row's JSON. */
  private sealOne(event: AuditEvent, ts: number, contents: string[]): AuditRecord {
    const chain = this.chain!;
    chain.seq++;
    const record = makeRecord(event, uuidv7(), new Date(ts), chain.replicaId, chain.seq, chain.lastHash);
    const content = hashedContent(record);
    contents.push(content);
    record.hash = rowHash(chain.lastHash, record, content);
    chain.lastHash = record.hash;
    return record;
  }

  private async insert(records: readonly AuditRecord[], contents?: readonly string[]): Promise<void> {
    const client = await this.opts.pool.connect();
    try {
      await auditStore.insertBatch(client, records, contents);
      client.release();
    } catch (err) {
      // A connection that failed mid-query is not reused.
      client.release(err as Error);
      throw err;
    }
  }

  private async flushBatch(): Promise<void> {
    const batch = this.queue.splice(0, this.batchMax);
    this.inFlightSince = batch[0]?.queuedAt;
    try {
      await this.writeBatch(batch);
    } finally {
      this.inFlightSince = undefined;
    }
  }

  /**
   * Postgres first, else the spool. An INSERT that failed without an answer (the client-side query timeout
   * of the writer pool: a server or network that hangs) may still commit later: its rows go to the spool
   * all the same, sealed as they are (same ids and chain positions), and the replay's ON CONFLICT DO
   * NOTHING makes whichever copy arrives second a no-op, so the chain gets each row once.
   */
  private async writeBatch(batch: Pending[]): Promise<void> {
    for (const p of batch) if (p.resolve) this.awaited--;
    const contents: string[] = [];
    const records = this.seal(batch, contents);
    try {
      const where = await this.persist(records, contents);
      for (const p of batch) p.resolve?.();
      if (where === 'postgres') for (const l of this.batchListeners) l(records.length);
    } catch (err) {
      this.lost += batch.length;
      this.failing = true;
      const message = (err as Error).message;
      const rows = batch.length;
      // Once per batch while it lasts: counted, one line per interval (repeats: lines left out; rows: of the last).
      this.failureLog.note('lost', (repeat) => this.opts.log.error({ err: message, rows, lost_total: this.lost, ...repeat }, 'audit rows could not be written to Postgres nor to the spool'));
      this.dropChain();
      const failure = new AuditUnavailable('audit trail unavailable: Postgres and the local spool both failed', { cause: err });
      for (const p of batch) p.reject?.(failure);
    }
  }

  /**
   * Sealed rows to Postgres, else (or while diverting) to the spool; where they went. Throws when neither
   * took them. `quiet`: a failed INSERT is not logged (the probe, whose failures were logged already).
   */
  private async persist(records: AuditRecord[], contents: string[], quiet = false): Promise<'postgres' | 'spool'> {
    if (!this.diverting) {
      try {
        await this.insert(records, contents);
        this.noteDurable(records);
        this.written += records.length;
        this.batches++;
        this.failing = false;
        return 'postgres';
      } catch (err) {
        const message = (err as Error).message;
        const rows = records.length;
        if (!quiet) this.failureLog.note('insert', (repeat) => this.opts.log.warn({ err: message, rows, ...repeat }, 'audit INSERT failed; writing to the local spool until Postgres is back'));
      }
    }
    if (!this.spool) this.spool = await Spool.acquire(this.opts.dataDir, this.opts.database);
    const wasDiverting = this.diverting;
    await this.spool.append(records);
    this.spooled += records.length;
    this.failing = false;
    if (!wasDiverting) this.opts.onSpoolingChange?.(true, this.spoolSize);
    return 'spool';
  }

  /** These positions may or may not have reached Postgres: never reuse them, the next row starts a new chain. */
  private dropChain(): void {
    this.previousChain = this.chain?.replicaId ?? null;
    this.chain = null;
  }

  /**
   * While the trail is failing (the last batch went neither to Postgres nor to the spool) and no row
   * waits: starts the next chain, its CHAIN_START row written as rows are (Postgres, else the spool).
   * `failing` was otherwise cleared only by a batch that got through, and a replica whose GET /readyz
   * says not ready gets no traffic, so it stayed not ready after Postgres or the disk came back. Quiet
   * while it fails (the failure was logged); a chain that may have reached Postgres is not reused.
   */
  private async probe(): Promise<void> {
    if (!this.failing || this.chain !== null || this.closed) return;
    const contents: string[] = [];
    const records = this.seal([], contents);
    const replicaId = records[0]?.replica_id;
    try {
      if ((await this.persist(records, contents, true)) === 'postgres') {
        this.opts.log.info({ replica_id: replicaId }, 'audit trail takes rows again: Postgres answered; a new chain started');
      } else {
        this.opts.log.info({ replica_id: replicaId, spool: this.spool?.path }, 'audit trail takes rows again: the local spool is writable; a new chain started there');
      }
    } catch {
      this.dropChain();
    }
  }

  /** Replays one batch from the spool (adopted files first). Returns whether it made progress. */
  private async replayStep(): Promise<boolean> {
    const spool = this.orphans[0] ?? (this.diverting ? this.spool : null);
    if (!spool) {
      this.replayDue = false;
      return false;
    }
    const isOwn = spool === this.spool;
    try {
      const { records, corrupt, endOffset } = await spool.readPending(this.batchMax);
      const gap = await this.discontinuity(records);
      if (gap) {
        await this.setAside(spool, isOwn, gap);
        return true;
      }
      if (records.length > 0) await this.replayRecords(records, spool.path);
      if (corrupt.length > 0) {
        // Copied out before they count as replayed (the spool is emptied once it is all replayed); once per
        // batch, after its rows are in, so a retried batch does not copy them twice.
        const kept = await spool.keepUnparsed(corrupt);
        this.opts.log.error({ spool: spool.path, unparsed: kept, count: corrupt.length, lines: corrupt.slice(0, 3) }, 'audit spool lines that do not parse were skipped');
      }
      spool.markReplayed(endOffset, records.length + corrupt.length);
      this.written += records.length;
      if (spool.fullyReplayed) {
        await spool.clear();
        if (isOwn) {
          this.opts.log.info('audit spool replayed into Postgres; writing directly again');
          this.opts.onSpoolingChange?.(false, this.spoolSize);
        } else {
          this.orphans.shift();
          await spool.release(true);
        }
      }
      return true;
    } catch (err) {
      this.replayDue = false;
      // Retried every replayIntervalMs (1 s) for as long as Postgres is away: one line a second was 3,600
      // an hour of the same words. The first is logged at once, the rest counted (RepeatedLog).
      const fields = { err: (err as Error).message, spool: spool.path, pending: spool.pendingRows };
      this.failureLog.note(`replay ${spool.path}`, (repeat) => this.opts.log.warn({ ...fields, ...repeat }, 'audit spool replay failed; retrying later'));
      return false;
    }
  }

  /**
   * The first row of these (spooled) rows that continues no chain this database has: the first row of its
   * chain in the batch is not the chain's first (seq 1), and the database holds neither that row nor its
   * predecessor with the hash it names (in audit_events, or as a retention anchor). That is a database
   * restored from a backup older than the spool, or another database under the same name: replayed, the
   * rows would leave a gap that `audit verify` reports as BROKEN for good (the table is append-only).
   */
  private async discontinuity(records: readonly AuditRecord[]): Promise<AuditRecord | undefined> {
    const firsts = new Map<string, AuditRecord>();
    for (const r of records) if (!firsts.has(r.replica_id)) firsts.set(r.replica_id, r);
    const check = [...firsts.values()].filter((r) => r.seq > 1);
    if (check.length === 0) return undefined;
    const client = await this.opts.pool.connect();
    let links: Array<{ replica_id: string; seq: number; hash: string }>;
    try {
      links = await auditStore.chainLinks(
        client,
        check.flatMap((r) => [
          { replica_id: r.replica_id, seq: r.seq - 1 },
          { replica_id: r.replica_id, seq: r.seq },
        ]),
      );
      client.release();
    } catch (err) {
      client.release(err as Error);
      throw err;
    }
    const stored = new Set([...this.rejected, ...links.map((l) => `${l.replica_id} ${l.seq} ${l.hash}`)]);
    return check.find((r) => !stored.has(`${r.replica_id} ${r.seq} ${r.hash}`) && !stored.has(`${r.replica_id} ${r.seq - 1} ${r.prev_hash}`));
  }

  /**
   * Sets a spool aside (renamed, never replayed) and goes on without it: its rows stay on this disk for the
   * operator (docs/audit.md, "A spool that continues nothing"). Our own chain continues those rows, so it
   * ends here too: the next row starts a new chain.
   */
  private async setAside(spool: Spool, isOwn: boolean, at: AuditRecord): Promise<void> {
    const rows = spool.pendingRows;
    const from = spool.path;
    const path = await spool.setAside();
    this.opts.log.error(
      { spool: from, set_aside: path, rows, replica_id: at.replica_id, seq: at.seq },
      'audit spool set aside, not replayed: its rows do not continue the hash chains in this database (restored from a backup older than the spool?); replaying them would break `audit verify` for good. docs/audit.md, "A spool that continues nothing"',
    );
    if (isOwn) {
      this.spool = null;
      if (this.chain) this.dropChain();
      this.opts.onSpoolingChange?.(false, this.spoolSize);
    } else {
      this.orphans.shift();
    }
    this.opts.onSpoolSetAside?.({ path, rows, replicaId: at.replica_id, seq: at.seq });
  }

  /** Moves the durable head to the last of these rows when they continue (or start) a chain of ours. */
  private noteDurable(records: readonly AuditRecord[]): void {
    const last = records[records.length - 1];
    if (!last) return;
    if (this.head && this.head.replica_id === last.replica_id && this.head.seq >= last.seq) return;
    const newChain = this.head?.replica_id !== last.replica_id;
    this.head = { replica_id: last.replica_id, seq: last.seq, hash: last.hash, ts: last.ts.toISOString() };
    if (newChain) this.opts.onNewDurableChain?.();
  }

  private async replayRecords(records: AuditRecord[], path: string): Promise<void> {
    try {
      await this.insert(records);
      if (records[0]?.replica_id === this.chain?.replicaId) this.noteDurable(records);
    } catch (err) {
      if (!isDataError(err)) throw err;
      // One bad row must not block the rest: find it, keep it next to the spool, go on.
      for (const r of records) {
        try {
          await this.insert([r]);
        } catch (rowErr) {
          if (!isDataError(rowErr)) throw rowErr;
          this.lost++;
          this.rejected.add(`${r.replica_id} ${r.seq} ${r.hash}`);
          this.opts.log.error({ err: (rowErr as Error).message, id: r.id, replica_id: r.replica_id, seq: r.seq, spool: path }, 'audit row rejected by Postgres; the chain will show a gap here');
        }
      }
    }
  }
}
