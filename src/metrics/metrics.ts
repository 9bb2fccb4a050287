import type { Redis } from 'ioredis';
import type pg from 'pg';
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';
import { ALERT_SEVERITIES } from '../alerts/kinds.js';
import type { AppContext } from '../context.js';
import type { DecisionObservation } from '../decisions/service.js';
import { FastHistogram } from './histogram.js';
import { type DependencySink, instrumentPool, instrumentRedis, postgresErrorClass } from './instrument.js';
import { readMetric, type Sample } from './read-metric.js';
import { metricsStore, type StateCounts } from './store.js';

// The Prometheus metrics of one control-plane instance, in its own Registry (never prom-client's global
// one: tests run several instances in one process). Everything on the request path is an in-memory
// increment; values other modules already keep (audit queue, flags, authentication counts) are read
// from them when Prometheus scrapes, and installation-wide counts (halted sessions, pending approvals)
// are one Postgres query per scrape, cached a few seconds. Nothing here adds a network trip to a decision.

const DECISION_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const STEP_BUCKETS = [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5];
const DEPENDENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];

/**
 * The longest a scrape waits for the installation-wide counts (one Postgres query) before it serves the
 * last ones it has: well under Prometheus's default scrape_timeout (10 s), like /readyz's 2 s per check.
 */
export const STATE_COUNTS_WAIT_MS = 1_000;

export class Metrics implements DependencySink {
  readonly registry = new Registry();
  private readonly decisions: Counter<'decision' | 'code'>;
  private readonly decisionSeconds: FastHistogram;
  private readonly stepSeconds: FastHistogram;
  private readonly httpSeconds: FastHistogram;
  private readonly redisSeconds: FastHistogram;
  private readonly redisErrors: Counter<'command'>;
  private readonly postgresSeconds: FastHistogram;
  private readonly postgresErrors: Counter<'pool' | 'class'>;
  private readonly auditBatchRows: Histogram;
  private readonly alertsRaised: Counter<'kind' | 'severity'>;
  private readonly pools = new Map<string, pg.Pool>();
  private readonly started = Date.now();
  private stateCounts: { at: number; value: StateCounts } | undefined;
  private stateCountsInFlight: Promise<StateCounts | undefined> | undefined;
  private spoolSince: number | undefined;
  private readonly disposers: Array<() => void> = [];
  /** How long the installation-wide counts (one Postgres query) are reused across scrapes. */
  stateCountsTtlMs = 5_000;
  /** How long a scrape waits for that query before it serves the last counts (STATE_COUNTS_WAIT_MS). */
  stateCountsWaitMs = STATE_COUNTS_WAIT_MS;

  constructor(opts: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.decisions = new Counter({ name: 'killswitch_decisions_total', help: 'Decisions answered, by decision (allow, deny) and code (OK, PERMISSION_DENIED, KILL_SWITCH ...).', labelNames: ['decision', 'code'], registers });
    this.decisionSeconds = new FastHistogram('killswitch_decision_duration_seconds', 'Time to decide (pipeline, halt, durable INTENT row), by decision.', ['decision'], DECISION_BUCKETS, this.registry);
    this.stepSeconds = new FastHistogram(
      'killswitch_decision_step_duration_seconds',
      'Time per pipeline step of a decision (policy-resolve, tool-pin, flags, policy-rules, approval, scopes, gate), plus halt and audit-intent (until the INTENT row is durable).',
      ['step'],
      STEP_BUCKETS,
      this.registry,
    );
    this.httpSeconds = new FastHistogram('killswitch_http_request_duration_seconds', 'HTTP requests by method, route and status code, with their duration.', ['method', 'route', 'status_code'], HTTP_BUCKETS, this.registry);
    this.redisSeconds = new FastHistogram('killswitch_redis_command_duration_seconds', 'Redis commands sent by this instance, by command, with their round-trip time.', ['command'], DEPENDENCY_BUCKETS, this.registry);
    this.redisErrors = new Counter({ name: 'killswitch_redis_errors_total', help: 'Redis commands that failed (connection down, timeout, error reply), by command.', labelNames: ['command'], registers });
    this.postgresSeconds = new FastHistogram('killswitch_postgres_query_duration_seconds', 'Postgres queries by pool (main: request path and admin; audit: the audit writer), with their duration.', ['pool'], DEPENDENCY_BUCKETS, this.registry);
    this.postgresErrors = new Counter({
      name: 'killswitch_postgres_errors_total',
      help: 'Postgres errors by pool and SQLSTATE class ("connection" when no connection could be had; "08" connection, "57" shutdown or timeout, "23" constraint ...).',
      labelNames: ['pool', 'class'],
      registers,
    });
    this.auditBatchRows = new Histogram({ name: 'killswitch_audit_batch_rows', help: 'Rows per group-committed audit INSERT.', buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000], registers });
    this.alertsRaised = new Counter({ name: 'killswitch_alerts_raised_total', help: 'Alerts raised by this instance, by kind and severity.', labelNames: ['kind', 'severity'], registers });
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private renderer: (() => Promise<string>) | undefined;

  /** The Prometheus text exposition of every metric (of every worker, in a cluster). */
  render(): Promise<string> {
    return this.renderer ? this.renderer() : this.registry.metrics();
  }

  /** In a worker of WORKERS > 1: render asks the primary for the sum over all workers. */
  renderWith(renderer: () => Promise<string>): void {
    this.renderer = renderer;
  }

  /** A DecisionObserver (decisions/service.ts). */
  readonly observeDecision = (o: DecisionObservation): void => {
    this.decisions.inc({ decision: o.answer.decision, code: o.answer.code });
    if (!o.call) return;
    this.decisionSeconds.observe([o.answer.decision], o.durationMs / 1000);
    for (const t of o.call.trace) this.stepSeconds.observe([t.step], t.micros / 1e6);
    if (o.haltMicros !== undefined) this.stepSeconds.observe(['halt'], o.haltMicros / 1e6);
    if (o.auditMicros !== undefined) this.stepSeconds.observe(['audit-intent'], o.auditMicros / 1e6);
  };

  observeHttp(method: string, route: string, statusCode: number, seconds: number): void {
    this.httpSeconds.observe([method, route, String(statusCode)], seconds);
  }

  redisCommand(command: string, seconds: number, failed: boolean): void {
    this.redisSeconds.observe([command], seconds);
    if (failed) this.redisErrors.inc({ command });
  }

  postgresQuery(pool: string, seconds: number, error: unknown): void {
    this.postgresSeconds.observe([pool], seconds);
    if (error) this.postgresErrors.inc({ pool, class: postgresErrorClass(error) });
  }

  postgresConnectFailed(pool: string, _error: unknown): void {
    this.postgresErrors.inc({ pool, class: 'connection' });
  }

  instrumentRedis(redis: Redis): void {
    instrumentRedis(redis, this);
  }

  instrumentPool(pool: pg.Pool, name: string): void {
    this.pools.set(name, pool);
    instrumentPool(pool, name, this);
  }

  /** Registers everything read from the app's services at scrape time. Call once, after the services exist. */
  watch(ctx: AppContext): void {
    const r = this.registry;
    readMetric(r, 'killswitch_authentications_total', 'Credentials presented, by kind (agent, gateway, operator, malformed) and result (ok, failed, unavailable: the credential store could not be asked).', 'counter', 'sum', () =>
      Object.entries(ctx.auth.outcomes).flatMap(([kind, o]) => [
        [{ kind, result: 'ok' }, o.ok] as Sample,
        [{ kind, result: 'failed' }, o.failed] as Sample,
        [{ kind, result: 'unavailable' }, o.unavailable] as Sample,
      ]),
    );

    readMetric(r, 'killswitch_flags_ready', '1 once flags are loaded from Unleash or a fresh backup; 0 means every decision denies.', 'gauge', 'min', () => [[{}, ctx.flags.isReady() ? 1 : 0]]);
    readMetric(r, 'killswitch_flags_stale', '1 while no Unleash fetch has succeeded for UNLEASH_STALE_AFTER_S (the last fetched flags stay in force).', 'gauge', 'max', () => [[{}, ctx.flags.isStale() ? 1 : 0]]);
    readMetric(r, 'killswitch_flags_state_age_seconds', 'Seconds since Unleash last answered a poll (since start if it never has).', 'gauge', 'max', () => {
      const last = ctx.flags.lastFetch()?.getTime() ?? this.started;
      return [[{}, (Date.now() - last) / 1000]];
    });
    readMetric(r, 'killswitch_flags_last_fetch_success', '1 if the last Unleash poll succeeded, 0 if it failed (or none has succeeded yet).', 'gauge', 'min', () => {
      const s = ctx.flags.status();
      const ok = s.lastFetchAt !== null && (s.lastErrorAt === null || s.lastFetchAt.getTime() >= s.lastErrorAt.getTime());
      return [[{}, ok ? 1 : 0]];
    });
    readMetric(r, 'killswitch_flags_last_fetch_timestamp_seconds', 'Unix time of the last successful Unleash poll (0: never).', 'gauge', 'min', () => [[{}, (ctx.flags.lastFetch()?.getTime() ?? 0) / 1000]]);
    readMetric(r, 'killswitch_flags_embedded_unleash_up', '1 while the embedded Unleash (no UNLEASH_URL) runs, 0 while it is down and being restarted; absent with UNLEASH_URL set.', 'gauge', 'min', () => {
      const e = ctx.flags.embeddedUnleash();
      return e ? [[{}, e.up ? 1 : 0]] : [];
    });
    readMetric(r, 'killswitch_flags_embedded_unleash_restarts', 'Restarts of the embedded Unleash after it exited, since the control plane started (its log says why each time).', 'gauge', 'max', () => {
      const e = ctx.flags.embeddedUnleash();
      return e ? [[{}, e.restarts]] : [];
    });
    readMetric(r, 'killswitch_flags_webhook_overrides', 'Flags denied by an Unleash webhook event the poll has not caught up with yet.', 'gauge', 'max', () => [[{}, ctx.flags.status().overrides.length]]);

    readMetric(r, 'killswitch_redis_up', '1 while the Redis command connection is ready.', 'gauge', 'min', () => [[{}, ctx.redis.redis.status === 'ready' ? 1 : 0]]);
    readMetric(r, 'killswitch_postgres_pool_connections', 'Postgres connections by pool and state (total, idle, waiting: callers queued for a connection).', 'gauge', 'sum', () =>
      [...this.pools].flatMap(([pool, p]) => [
        [{ pool, state: 'total' }, p.totalCount] as Sample,
        [{ pool, state: 'idle' }, p.idleCount] as Sample,
        [{ pool, state: 'waiting' }, p.waitingCount] as Sample,
      ]),
    );

    const writer = ctx.audit.writer;
    writer.onBatch((rows) => this.auditBatchRows.observe(rows));
    ctx.audit.onSpoolingChange((spooling) => {
      this.spoolSince = spooling ? (this.spoolSince ?? Date.now()) : undefined;
    });
    readMetric(r, 'killswitch_audit_queue_depth', 'Audit rows waiting in memory for the next group commit.', 'gauge', 'sum', () => [[{}, writer.queueDepth]]);
    readMetric(r, 'killswitch_audit_spool_rows', 'Audit rows in the local spool file, not yet replayed into Postgres.', 'gauge', 'sum', () => [[{}, writer.spoolSize]]);
    readMetric(r, 'killswitch_audit_default_partition_rows', 'Audit rows in the default partition at the last hourly check (up to 100,001): written for a month without a partition; 0 normally (docs/audit.md, "Partitions").', 'gauge', 'max', () => [
      [{}, ctx.audit.defaultPartitionRows],
    ]);
    readMetric(r, 'killswitch_audit_spooling', '1 while audit rows go to the local spool because Postgres refused them.', 'gauge', 'max', () => [[{}, writer.spooling ? 1 : 0]]);
    readMetric(r, 'killswitch_audit_failing', '1 when the last audit batch could be written neither to Postgres nor to the spool (allows deny).', 'gauge', 'max', () => [[{}, writer.failing ? 1 : 0]]);
    readMetric(r, 'killswitch_audit_replay_lag_seconds', 'How long rows have been waiting in the local spool for Postgres (0 when it is empty).', 'gauge', 'max', () => {
      if (writer.spoolSize === 0) {
        if (!writer.spooling) this.spoolSince = undefined;
        return [[{}, 0]];
      }
      // Rows adopted from an earlier run are first seen now: their lag counts from here.
      this.spoolSince ??= Date.now();
      return [[{}, (Date.now() - this.spoolSince) / 1000]];
    });
    readMetric(r, 'killswitch_audit_rows_written_total', 'Audit rows committed to Postgres (directly or by spool replay).', 'counter', 'sum', () => [[{}, writer.written]]);
    readMetric(r, 'killswitch_audit_batches_total', 'Group-committed audit INSERTs.', 'counter', 'sum', () => [[{}, writer.batches]]);
    readMetric(r, 'killswitch_audit_rows_spooled_total', 'Audit rows appended to the local spool because Postgres refused them.', 'counter', 'sum', () => [[{}, writer.spooled]]);
    readMetric(r, 'killswitch_audit_rows_lost_total', 'Audit rows neither Postgres nor the spool took (allows were denied; denial and result rows are gone).', 'counter', 'sum', () => [[{}, writer.lost]]);

    const policy = ctx.policy;
    readMetric(r, 'killswitch_policy_last_reload_ok', '1 while the policy file on disk is the policy in force; 0 while it is rejected (broken or unreadable) and the last good policy stays in force.', 'gauge', 'min', () => [
      [{}, policy.status().lastError === null ? 1 : 0],
    ]);
    readMetric(r, 'killswitch_policy_reload_failures_total', 'Versions of the policy file rejected since start (each broken file, or read error, once); the last good policy stayed in force.', 'counter', 'sum', () => [
      [{}, policy.status().rejections],
    ]);
    // As this replica's last heartbeat saw it (every 10 s), so a scrape costs no Redis trip.
    readMetric(r, 'killswitch_policy_replicas_distinct', 'Different policy files in force among the live replicas (1: they agree; above 1: a call is decided by whichever replica it reaches; 0: unknown, Redis unreadable).', 'gauge', 'max', () => [
      [{}, ctx.policyReplicas.view()?.policies.length ?? 0],
    ]);

    // Measured every 30 s (src/clock/offset.ts): a scrape costs no query for it.
    readMetric(
      r,
      'killswitch_clock_offset_seconds',
      "Postgres's clock minus this replica's, as last measured (every 30 s; positive: this clock is behind). Beyond ±1 s the replica judges expiry and stamps audit rows with Postgres's time, and /readyz warns. Absent before the first measurement.",
      'gauge',
      'average',
      () => {
        const s = ctx.clock.last();
        return s ? [[{}, s.offsetMs / 1000]] : [];
      },
    );
    const unsubscribe = ctx.alerts.subscribe((e) => {
      if (e.type === 'raised' && e.local) this.alertsRaised.inc({ kind: e.alert.kind, severity: e.alert.severity });
    });
    this.disposers.push(unsubscribe);
    readMetric(r, 'killswitch_alert_webhook_dropped_total', 'Alerts not sent to ALERT_WEBHOOK_URL because its queue was full (the least severe, oldest first), by severity; they are still stored and streamed.', 'counter', 'sum', () => {
      const dropped = ctx.alerts.webhookDropped();
      return ALERT_SEVERITIES.map((severity) => [{ severity }, dropped[severity]] as Sample);
    });

    const counts = () => this.readStateCounts(ctx);
    readMetric(r, 'killswitch_sessions_halted', 'Sessions halted by a kill-switch trigger and not resumed, of tokens neither revoked nor expired (whole installation: use max, not sum, across replicas; WORKERS > 1 already reports the max).', 'gauge', 'max', async () => {
      const c = await counts();
      return c ? [[{}, c.haltedSessions]] : [];
    });
    readMetric(r, 'killswitch_tokens_halted', 'Agent tokens with every session halted and not resumed, neither revoked nor expired (whole installation).', 'gauge', 'max', async () => {
      const c = await counts();
      return c ? [[{}, c.haltedTokens]] : [];
    });
    readMetric(r, 'killswitch_approvals_pending', 'Items waiting for an operator, by kind (call: a tool call awaiting approval of its exact arguments; tool_definition: a changed tool definition). Whole installation.', 'gauge', 'max', async () => {
      const c = await counts();
      return c
        ? [
            [{ kind: 'call' }, c.pendingCalls],
            [{ kind: 'tool_definition' }, c.pendingToolDefinitions],
          ]
        : [];
    });
    readMetric(r, 'killswitch_kills_active', 'Break-glass kills in force (not lifted, not expired). Whole installation.', 'gauge', 'max', async () => {
      const c = await counts();
      return c ? [[{}, c.activeKills]] : [];
    });
  }

  /**
   * Cached for a few seconds; undefined (series left out) until a read has succeeded. A query that has not
   * answered within stateCountsWaitMs goes on in the background, and this scrape gets the last counts:
   * on a Postgres that hangs, every scrape waited for the query's timeout (30 s on an idle connection, 5 s
   * for a new one), past Prometheus's scrape_timeout (10 s by default), so the replica's whole /metrics,
   * killswitch_redis_up and the audit spool gauges included, went missing (`up` 0) for as long as
   * Postgres hung: exactly when they are needed.
   */
  private async readStateCounts(ctx: AppContext): Promise<StateCounts | undefined> {
    if (this.stateCounts && Date.now() - this.stateCounts.at < this.stateCountsTtlMs) return this.stateCounts.value;
    this.stateCountsInFlight ??= metricsStore
      .stateCounts(ctx.pool)
      .then((value) => {
        this.stateCounts = { at: Date.now(), value };
        return value;
      })
      // The failed query is already counted in killswitch_postgres_errors_total; keep the last value.
      .catch(() => this.stateCounts?.value)
      .finally(() => {
        this.stateCountsInFlight = undefined;
      });
    const inFlight = this.stateCountsInFlight;
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), this.stateCountsWaitMs);
    });
    try {
      return (await Promise.race([inFlight, waited])) ?? this.stateCounts?.value;
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    for (const dispose of this.disposers.splice(0)) dispose();
  }
}
