import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { type Pool, REQUEST_QUERY_TIMEOUT_MS, withTransaction } from '../db/pool.js';
import { redisFailure } from '../redis/failure.js';
import { checkRedisServer, RedisServerError } from '../redis/server-check.js';
import type { SessionMirror } from './mirror.js';
import { IDLE_SWEEP_ACTOR, type IdleSession, type SessionRow, sessionStore } from './store.js';

// The state epoch (DESIGN.md §4): a Redis key set only after halts, kills and sessions were loaded
// from Postgres. If Redis restarts or is flushed the key is gone, the gate denies every call with
// DEPENDENCY_UNAVAILABLE, and one replica (under a Redis lock) reloads the state and sets the epoch
// again. Losing Redis therefore never lifts a halt or a kill.
//
// The same timer runs housekeeping once a minute on one replica: sessions that idled out of Redis are
// marked closed in Postgres, each with its `session.closed` audit row, and every halt in force in
// Postgres is re-applied to Redis (so a halt whose Redis write failed is enforced within a minute at worst).

/** Other domains' state to restore before the epoch is set (the kills module registers its kills). */
export type StateLoader = () => Promise<void>;

export type EnsureResult = 'present' | 'reloaded' | 'busy' | 'unavailable';

const RELOAD_LOCK_MS = 30_000;
const PAGE = 500;
/** Halted sessions the reconciler reads and re-applies per transaction. */
const HALT_PAGE = 1_000;
const RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
/**
 * Sets the epoch only while this reload still holds its lock. A flush or restart of Redis during the
 * reload removes the lock with everything the reload had written so far: setting the epoch then would
 * declare a state loaded that is not (halts lifted until the next housekeeping).
 */
const SET_EPOCH_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[2], ARGV[2]) return 1 end return 0";
/**
 * Housekeeping's Postgres statements (the idle sweep, re-applying halts) wait at most the request path's
 * bound, not the pool's 30 s: they run on the tick, so on a Postgres that hangs (or a connection whose
 * packets are lost, which fails only at its timeout, also after Postgres is back) one of them would hold
 * the journal's once-a-second retry of unrecorded halts and the epoch check for that long. Each reads or
 * writes at most a page (PAGE ids, HALT_PAGE halted sessions): milliseconds when Postgres answers. One that
 * times out (a lock held longer, such as another replica's reload copying many sessions) fails this run;
 * the next retries it, and nothing housekeeping skips lifts a halt.
 */
const HOUSEKEEPING_QUERY_TIMEOUT_MS = REQUEST_QUERY_TIMEOUT_MS;
const HOUSEKEEPING_TX = { queryTimeoutMs: HOUSEKEEPING_QUERY_TIMEOUT_MS } as const;

export interface EpochOptions {
  idleMs: number;
  tickMs?: number;
  maintainEveryMs?: number;
  /**
   * Writes the audit row of a session the sweep closes; resolves once it is durable (Postgres or the
   * spool), rejects when the trail cannot take it. Without it the sweep closes unaudited.
   */
  recordIdleClose?: (s: IdleSession) => Promise<void>;
}

/** What one pass of the idle sweep did. */
export interface SweepResult {
  closed: number;
  /** Idled out, but left active in Postgres because their audit rows could not be written. */
  deferred: number;
}

/** An ACL refusal, as redisFailure() names it (NOPERM, or Redis 7.0's plain ERR from inside a script). */
function isPermissionRefusal(err: unknown): boolean {
  const f = redisFailure(err);
  return f.kind === 'error' && f.code === 'NOPERM';
}

export class StateEpoch {
  private readonly loaders = new Map<string, StateLoader>();
  private readonly tickHooks: Array<() => Promise<void>> = [];
  private readonly reloadHooks: Array<() => Promise<void>> = [];
  private inflight: Promise<EnsureResult> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastMaintain = 0;
  private running: Promise<void> | undefined;
  private failing = false;
  /**
   * Whether this replica has checked, since its Redis connection last opened, that Redis holds what
   * Postgres says is in force (see verify()); the gate denies until it has. `generation` counts the
   * connection's closes, so a check that a close overtook does not count.
   */
  private verified = false;
  private generation = 0;
  private verifiedRunId: string | undefined;
  private checkedRunId: string | undefined;
  private readonly onClose = () => {
    this.generation++;
    this.verified = false;
  };
  private readonly onReady = () => this.requestReload();

  constructor(
    private readonly pool: Pool,
    private readonly mirror: SessionMirror,
    private readonly log: Pick<Logger, 'info' | 'warn' | 'error'>,
    private readonly opts: EpochOptions,
  ) {}

  private get redis() {
    return this.mirror.redis;
  }

  registerLoader(name: string, load: StateLoader): void {
    this.loaders.set(name, load);
  }

  /** Runs on every tick (about once a second), e.g. retrying Postgres writes that failed. */
  onTick(hook: () => Promise<void>): void {
    this.tickHooks.push(hook);
  }

  /**
   * Runs before Redis is rebuilt or re-verified from Postgres (reload, verify); a hook that throws stops
   * it (no epoch: the gate keeps denying). The sessions module records the halts this replica journaled
   * on disk, so the copy from Postgres includes them.
   */
  beforeReload(hook: () => Promise<void>): void {
    this.reloadHooks.push(hook);
  }

  private async runReloadHooks(): Promise<void> {
    for (const hook of this.reloadHooks) await hook();
  }

  /** Checks the epoch and reloads if it is missing; concurrent callers share one attempt. */
  ensure(): Promise<EnsureResult> {
    this.inflight ??= this.ensureOnce().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  /** For the gate: start a reload now without waiting for it. */
  requestReload(): void {
    void this.ensure().catch(() => {});
  }

  /** The last check or reload of the state failed (logged once: `state epoch check failed`): the gate denies meanwhile. */
  get failingNow(): boolean {
    return this.failing;
  }

  /** False until this replica knows Redis holds every halt and kill in force (verify()): the gate denies meanwhile. */
  get stateVerified(): boolean {
    return this.verified;
  }

  private async ensureOnce(): Promise<EnsureResult> {
    try {
      const result = (await this.mirror.epochExists()) ? 'present' : await this.reload();
      if (result === 'present' && !this.verified) await this.verify();
      if (this.failing) this.log.info('state epoch check succeeds again');
      this.failing = false;
      return result;
    } catch (err) {
      // Once per outage, not once per second.
      if (!this.failing) {
        // Say which one: an operator at 3 a.m. should not have to decode a driver's error to know.
        const { status, options } = this.redis.redis;
        const last = this.redis.lastError?.();
        const which =
          status !== 'ready'
            ? `Redis (REDIS_URL, ${options.host}:${options.port}) is not reachable (connection ${status}${last ? `; last error: ${last}` : ''})`
            : err instanceof RedisServerError
              ? err.message
              : (err as Error)?.name === 'ReplyError'
                ? `Redis (REDIS_URL, ${options.host}:${options.port}) refused a command: ${(err as Error).message}${isPermissionRefusal(err) ? ` (REDIS_URL's user lacks a permission; docs/operations.md, "Managed Redis", has the ACL rule)` : ''}`
                : 'Postgres (DATABASE_URL) could not be read, or Redis failed a command';
        this.log.warn({ err: (err as Error).message, redis_status: status }, `state epoch check failed: ${which}; decisions deny (DEPENDENCY_UNAVAILABLE) until it succeeds`);
      }
      this.failing = true;
      return 'unavailable';
    }
  }

  /** Reloads halts, sessions and registered loaders from Postgres, then sets the epoch. One replica at a time. */
  async reload(): Promise<EnsureResult> {
    const lockKey = this.redis.key('epoch-lock');
    const lockId = randomUUID();
    const got = await this.redis.redis.set(lockKey, lockId, 'PX', RELOAD_LOCK_MS, 'NX');
    if (got !== 'OK') return 'busy';
    const started = Date.now();
    const generation = this.generation;
    try {
      const runId = await this.runId();
      await this.checkServer(runId);
      if (await this.mirror.epochExists()) return 'present';
      await this.runReloadHooks();
      // One transaction holding the halt-copy lock: a resume waits until the copy is written, so a halt
      // read here before a resume is never written to Redis after it.
      const { tokenHalts, count } = await withTransaction(this.pool, async (c) => {
        await sessionStore.lockHaltCopies(c, 'copy');
        // Token halts first: they stop the most.
        const tokenHalts = await sessionStore.activeTokenHalts(c, { liveTokens: true });
        await this.mirror.reloadSessions([], tokenHalts);
        let after: string | null = null;
        let count = 0;
        for (;;) {
          const page = await sessionStore.liveSessionsPage(c, after, PAGE);
          if (page.length === 0) break;
          await this.mirror.reloadSessions(page, []);
          await this.redis.redis.pexpire(lockKey, RELOAD_LOCK_MS);
          count += page.length;
          after = page[page.length - 1]!.id;
          if (page.length < PAGE) break;
        }
        return { tokenHalts, count };
      });
      await this.runLoaders();
      const set = await this.redis.redis.eval(SET_EPOCH_LUA, 2, lockKey, this.redis.key('epoch'), lockId, `${new Date().toISOString()} ${lockId}`);
      if (set !== 1) {
        this.log.warn({ ms: Date.now() - started }, 'Redis lost its data again while it was being reloaded from Postgres (flushed or restarted); the state epoch is not set, decisions stay denied, and the reload starts over');
        return 'busy';
      }
      if (generation === this.generation) {
        this.verifiedRunId = runId;
        this.verified = true;
      }
      this.log.info({ sessions: count, token_halts: tokenHalts.length, ms: Date.now() - started }, 'Redis state reloaded from Postgres; state epoch set');
      return 'reloaded';
    } finally {
      await this.redis.redis.eval(RELEASE_LUA, 1, lockKey, lockId).catch(() => {});
    }
  }

  /**
   * The epoch says Redis was loaded, but not that it still holds everything written since: a Redis that
   * restarted from a snapshot or an append-only file taken before the latest halts comes back with the
   * epoch and without those halts. So the first time this replica sees a Redis process (its `run_id`:
   * at start, and after every reconnect to a restarted Redis) it re-applies every halt and kill in force
   * in Postgres before the gate trusts Redis again; a reconnect to the same process only checks the id.
   */
  private async verify(): Promise<void> {
    const generation = this.generation;
    const runId = await this.runId();
    if (runId !== this.verifiedRunId) {
      await this.checkServer(runId);
      await this.runReloadHooks();
      const halts = await this.reconcileHalts();
      await this.runLoaders();
      if (this.verifiedRunId !== undefined) this.log.warn({ halts }, 'Redis restarted with its data (a snapshot or append-only file): every halt and kill in force was re-applied from Postgres before decisions went on');
    }
    if (generation === this.generation) {
      this.verifiedRunId = runId;
      this.verified = true;
    }
  }

  /** Restores the other domains' state (kills) into Redis, naming the loader that failed. */
  private async runLoaders(): Promise<void> {
    for (const [name, load] of this.loaders) {
      try {
        await load();
      } catch (err) {
        throw new Error(`state loader ${name} failed: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Once per Redis process: not in cluster mode, and REDIS_URL's user may use every command, key and channel
   * (src/redis/server-check.ts). The start checks this too; here it covers a Redis first reached after the
   * start, or replaced since (a failover to a node set up differently). Throws RedisServerError: no epoch,
   * and the warning says what is missing.
   */
  private async checkServer(runId: string): Promise<void> {
    if (runId === this.checkedRunId) return;
    await checkRedisServer(this.redis);
    this.checkedRunId = runId;
  }

  /** The Redis server process's id (`INFO server` run_id): new on every restart. */
  private async runId(): Promise<string> {
    const info = await this.redis.redis.info('server');
    const id = /^run_id:(\S+)/m.exec(info)?.[1];
    if (!id) throw new Error('Redis INFO server has no run_id');
    return id;
  }

  start(): void {
    this.redis.redis.on('close', this.onClose);
    this.redis.redis.on('ready', this.onReady);
    this.requestReload();
    this.timer = setInterval(() => void this.tick().catch(() => {}), this.opts.tickMs ?? 1_000);
    this.timer.unref();
  }

  /** Stops the timer and waits for a tick in progress (it may be using the pool that closes next). */
  async stop(): Promise<void> {
    this.redis.redis.off('close', this.onClose);
    this.redis.redis.off('ready', this.onReady);
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
    await this.inflight?.catch(() => {});
  }

  tick(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.tickOnce().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async tickOnce(): Promise<void> {
    await this.ensure();
    for (const hook of this.tickHooks) await hook().catch((err: unknown) => this.log.warn({ err }, 'session tick hook failed'));
    if (Date.now() - this.lastMaintain >= (this.opts.maintainEveryMs ?? 60_000)) {
      this.lastMaintain = Date.now();
      await this.maintain().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'session housekeeping failed'));
    }
  }

  /** Housekeeping on one replica: close idled-out sessions, re-apply halts from Postgres. */
  async maintain(): Promise<{ closed: number; deferred: number; halts: number } | undefined> {
    const lockKey = this.redis.key('maintain-lock');
    const got = await this.redis.redis.set(lockKey, '1', 'PX', Math.max(1_000, (this.opts.maintainEveryMs ?? 60_000) - 1_000), 'NX');
    if (got !== 'OK') return undefined;
    const halts = await this.reconcileHalts();
    let closed = 0;
    let deferred = 0;
    let after: string | null = null;
    for (;;) {
      const ids = await sessionStore.idleCandidates(this.pool, this.opts.idleMs, after, PAGE, HOUSEKEEPING_QUERY_TIMEOUT_MS);
      if (ids.length === 0) break;
      const swept = await this.mirror.gone(ids);
      if (swept === undefined) break; // epoch missing: absent keys mean nothing now
      const page = await this.sweep(swept.gone, swept.epoch);
      closed += page.closed;
      deferred += page.deferred;
      // The audit trail refused rows: the next pages would fare no better; the next sweep retries.
      if (page.deferred > 0) break;
      after = ids[ids.length - 1]!;
      if (ids.length < PAGE) break;
    }
    if (closed > 0) this.log.info({ closed }, 'closed idle sessions');
    if (deferred > 0) {
      this.log.warn({ deferred }, 'idle sessions stay active in Postgres because their audit rows could not be written; the next sweep retries (Redis has dropped them: their calls answer SESSION_UNKNOWN)');
    }
    return { closed, deferred, halts };
  }

  /**
   * Marks closed in Postgres the sessions Redis no longer held under state epoch `epoch`. If Redis lost its
   * data and was reloaded since (the reload copies active sessions back from Postgres), their absence
   * meant nothing: closing them would leave sessions live in Redis that Postgres calls closed (a halt of
   * one could then never be resumed). Closing takes the halt-copy lock alone, which a reload holds while
   * it copies, and closes only while the epoch is still the one the sweep saw.
   */
  async closeGone(ids: string[], epoch: string): Promise<number> {
    return (await this.sweep(ids, epoch)).closed;
  }

  /**
   * closeGone, audited: each session is closed only once its `session.closed` row is durable, written
   * while its row is locked. So only the replica whose transaction found it still active writes the row
   * (exactly once however many sweep), and a session whose row the trail refuses stays active in Postgres
   * for the next sweep (docs/adr/0013). Its rows are queued in one turn, so they share a group commit.
   */
  private async sweep(ids: string[], epoch: string): Promise<SweepResult> {
    if (ids.length === 0) return { closed: 0, deferred: 0 };
    const { result, audited } = await withTransaction(this.pool, async (c) => {
      await sessionStore.lockHaltCopies(c, 'resume');
      if ((await this.mirror.epochValue()) !== epoch) return { result: { closed: 0, deferred: 0 }, audited: [] };
      const due = await sessionStore.lockActiveSessions(c, ids);
      const record = this.opts.recordIdleClose;
      const written = record ? await Promise.allSettled(due.map((s) => record(s))) : due.map(() => ({ status: 'fulfilled' }) as const);
      const audited = due.filter((_, i) => written[i]!.status === 'fulfilled');
      const closed = await sessionStore.closeSessions(
        c,
        audited.map((s) => s.id),
        IDLE_SWEEP_ACTOR,
      );
      return { result: { closed, deferred: due.length - audited.length }, audited };
    }, HOUSEKEEPING_TX);
    // Closed in Postgres: off their tokens' open-session sets too. A failure leaves members the token's
    // next session open prunes anyway.
    await this.mirror.forget(audited.map((s) => ({ tokenId: s.token_id, sessionId: s.id }))).catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'could not drop closed sessions from their tokens\' open-session sets; the next open of each token prunes them'));
    return result;
  }

  /**
   * Re-applies every halt in force in Postgres to Redis (idempotent; never lifts anything), all of them a
   * page at a time: it read only the first 10,000 halted sessions, oldest first, so once that many had
   * accumulated (a halt stays in force until a human resumes it) the newest were the ones left out, and a
   * Redis restored from a snapshot older than them allowed their calls. Halts of tokens that ended more
   * than ENDED_TOKEN_GRACE ago are left out: their calls are refused before the gate, and re-applying them
   * each minute grew with every token ever revoked while halted. Returns how many halts it re-applied.
   */
  async reconcileHalts(): Promise<number> {
    let count = 0;
    let after: string | null = null;
    for (let first = true; ; first = false) {
      // Each page read and written under the halt-copy lock: a resume between the read and the write would
      // otherwise be undone in Redis while Postgres says resumed (a halt nobody could lift: resume answers 409).
      const page: { tokens: number; sessions: SessionRow[] } = await withTransaction(this.pool, async (c) => {
        await sessionStore.lockHaltCopies(c, 'copy');
        const tokenHalts = first ? await sessionStore.activeTokenHalts(c, { liveTokens: true }) : [];
        const sessions = await sessionStore.haltedSessionsPage(c, after, HALT_PAGE, { liveTokens: true });
        await this.mirror.halt([
          ...tokenHalts.map((h) => ({ tokenId: h.token_id, sessionId: null, trigger: h.trigger, haltToken: true })),
          ...sessions.map((s) => ({ tokenId: s.token_id, sessionId: s.id, trigger: s.trigger ?? 'UNKNOWN', haltToken: false, fields: s })),
        ]);
        return { tokens: tokenHalts.length, sessions };
      }, HOUSEKEEPING_TX);
      count += page.tokens + page.sessions.length;
      if (page.sessions.length < HALT_PAGE) return count;
      after = page.sessions[page.sessions.length - 1]!.id;
    }
  }
}
