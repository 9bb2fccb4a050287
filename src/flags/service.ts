import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { Unleash, type Context as UnleashContext, UnleashEvents } from 'unleash-client';
import type { Config } from '../config.js';
import { keepSubscribed, type RedisHandle } from '../redis/client.js';
import { type BackupFrom, FlagBackup } from './backup.js';
import { unleashAgent } from './http-agent.js';
import { type FlagOverride, OverrideSet, revisionFromEtag } from './overrides.js';
import { holdPollInterval } from './poll-interval.js';
import { describeRegistration, type RegistrationView, registrationError, registrationKeys, unknownRegistration } from './registration.js';
import { webhookUrl } from './setup.js';
import { SharedFlagBackup } from './shared-backup.js';
import { EMBEDDED_DOWN_SENTENCE, type EmbeddedUnleashState } from './supervisor.js';

// The control plane's view of Unleash: unleash-client 6 polling one environment every
// UNLEASH_REFRESH_MS, also after Unleash answered errors (the SDK's back-off is held off, see
// poll-interval.ts; never streaming: the OSS server has no streaming endpoint and the client would
// never become ready), local deny overrides from the Unleash webhook shared by every replica through
// Redis pub/sub, a backup file to start from while Unleash is down, and a staleness alarm.
//
// Enabled means allowed. `isEnabled` is false for a flag that is off, missing, overridden by a webhook,
// or while the client is not ready, so every way of not knowing denies.

export const APP_NAME = 'killswitch-control-plane';

export type FlagSource = 'none' | 'bootstrap' | 'poll';

/** The context fields of DESIGN.md §5. Custom fields travel in `properties`. */
export interface FlagCallContext {
  userId: string;
  sessionId?: string | undefined;
  tokenType: string;
  role?: string | undefined;
  mcpEnvironment: string;
  projectId?: string | undefined;
  server?: string | undefined;
  tool?: string | undefined;
  capability?: string | undefined;
}

export function toUnleashContext(c: FlagCallContext, staticContext?: { appName: string; environment: string }): UnleashContext {
  // Built field by field (no object spread): this runs on every decision.
  const context: UnleashContext = {
    userId: c.userId,
    properties: {
      tokenType: c.tokenType,
      role: c.role,
      mcpEnvironment: c.mcpEnvironment,
      projectId: c.projectId,
      server: c.server,
      tool: c.tool,
      capability: c.capability,
    },
  };
  if (staticContext) {
    context.appName = staticContext.appName;
    context.environment = staticContext.environment;
  }
  if (c.sessionId !== undefined) context.sessionId = c.sessionId;
  return context;
}

export type OffReason = 'not-ready' | 'missing' | 'off' | 'constraints' | 'webhook';

export interface FlagStatus {
  ready: boolean;
  source: FlagSource;
  environment: string;
  url: string;
  lastFetchAt: Date | null;
  /** Seconds since the last successful fetch (null: none since start). */
  fetchAgeS: number | null;
  /** The latest fetch attempt failed: no successful fetch since lastErrorAt. */
  fetchFailing: boolean;
  lastErrorAt: Date | null;
  lastError: string | null;
  stale: boolean;
  staleAfterS: number;
  revision: number | null;
  /** What this replica found at start; `from`: the file in DATA_DIR or the copy in Redis (the one Unleash confirmed later). */
  backup: { path: string; state: string; ageS: number | undefined; from: BackupFrom | undefined };
  overrides: FlagOverride[];
  /** The last Unleash webhook event this replica received or heard of from another replica (since start). */
  lastWebhook: WebhookSighting | null;
}

export interface WebhookSighting {
  at: number;
  type: string;
  flag: string | null;
}

export interface FlagView {
  name: string;
  description: string | null;
  type: string | null;
  enabled: boolean;
  override: FlagOverride | null;
  strategies: number;
  /** Constraints of its active strategies in our environment, those of the segments they use included. */
  constraints: number;
  /** Its active strategies as the SDK has them, constraint values capped (see CONSTRAINT_VALUES_SHOWN). */
  activeStrategies: StrategyView[];
}

/** At most this many values of one constraint are listed: a userId list of 10,000 tokens would not be read anyway. */
export const CONSTRAINT_VALUES_SHOWN = 20;
/** Longer strategy parameters are cut (userWithId's userIds is a list in one string). */
export const PARAMETER_CHARS_SHOWN = 200;

export interface ConstraintView {
  contextName: string;
  operator: string;
  /** The first CONSTRAINT_VALUES_SHOWN values, in Unleash's order. */
  values: string[];
  valuesTotal: number;
  /** The single value of NUM_*, DATE_* and SEMVER_* operators. */
  value: string | null;
  inverted: boolean;
  caseInsensitive: boolean;
}

export interface StrategyView {
  name: string;
  parameters: Record<string, string>;
  constraints: ConstraintView[];
  /** Segments it uses; constraints null: the segment is not in the data this replica has, so the strategy is never on. */
  segments: Array<{ id: number; constraints: ConstraintView[] | null }>;
}

type SdkConstraint = { contextName?: unknown; operator?: unknown; values?: unknown; value?: unknown; inverted?: unknown; caseInsensitive?: unknown };

function constraintView(c: SdkConstraint): ConstraintView {
  const values = Array.isArray(c.values) ? c.values.map(String) : [];
  return {
    contextName: String(c.contextName ?? ''),
    operator: String(c.operator ?? ''),
    values: values.slice(0, CONSTRAINT_VALUES_SHOWN),
    valuesTotal: values.length,
    value: c.value === undefined || c.value === null || c.value === '' ? null : c.value instanceof Date ? c.value.toISOString() : String(c.value),
    inverted: c.inverted === true,
    caseInsensitive: c.caseInsensitive === true,
  };
}

function parametersView(p: Record<string, unknown> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(p ?? {})) {
    const text = typeof v === 'string' ? v : JSON.stringify(v) ?? '';
    out[k] = text.length > PARAMETER_CHARS_SHOWN ? `${text.slice(0, PARAMETER_CHARS_SHOWN)}…` : text;
  }
  return out;
}

/** Sink for operator alerts (ctx.alerts.raise); optional so the service stands alone. */
export type FlagAlertSink = (a: { kind: 'FLAGS_STALE' | 'FLAGS_RECOVERED' | 'FLAG_DISABLED' | 'FLAG_ENABLED'; message: string; numbers?: Record<string, number>; details?: Record<string, unknown> }) => void;

interface OverrideMessage {
  origin: string;
  /** `seen`: an event that changes nothing, relayed so every replica can show the webhook works. */
  op: 'deny' | 'enabled' | 'seen';
  flag: string;
  reason?: FlagOverride['reason'];
  eventId: number | null;
  at: number;
  /** The Unleash event type (absent from replicas of an older version). */
  event?: string;
}

// unleash-client keeps these private; read defensively (pinned to unleash-client 6).
interface RepositoryInternals {
  repository?: { etag?: string; getSegment?: (id: number) => { constraints?: unknown[] } | undefined };
}

/** The SDK's evaluator behind `Unleash.isEnabled`, which itself costs ~4 µs per call here (measured). */
export type Evaluate = (name: string, context: UnleashContext, fallback: () => boolean) => boolean;
const FALSE = () => false;

/**
 * The evaluator unleash-client 6 calls inside `Unleash.isEnabled` (its UnleashClient's `isEnabled`):
 * strategies, constraints, segments and dependencies, without the count `Unleash.isEnabled` adds to the
 * usage metrics. Not public API (checked against 6.12): test/unit/flags-sdk-evaluator.test.ts fails on an
 * upgrade that moves or renames it, and the service logs an error at start. Without it the hot path
 * falls back to the public `isEnabled`, but nothing can evaluate uncounted (explain, GET /v1/flags).
 */
export function sdkEvaluator(client: Unleash): { evaluate: Evaluate } | { evaluate: undefined; why: string } {
  const inner = (client as unknown as { client?: unknown }).client;
  if (typeof inner !== 'object' || inner === null) return { evaluate: undefined, why: 'the Unleash instance has no `client` (its UnleashClient)' };
  const isEnabled = (inner as { isEnabled?: unknown }).isEnabled;
  if (typeof isEnabled !== 'function') return { evaluate: undefined, why: "the SDK's UnleashClient has no isEnabled(name, context, fallback)" };
  return { evaluate: (isEnabled as Evaluate).bind(inner) };
}

/** What the start's flags sync read from Unleash's admin API: the flags off in our environment, and archived ones. */
export interface StartFlagsRead {
  off: string[];
  /** Archived, or missing from the project we read. */
  archived: string[];
  /** When it was read, ms since epoch. */
  at: number;
}

/** A flag whose enabled state in our environment a poll found changed (null: not served, archived or deleted). */
export interface PolledFlagChange {
  flag: string;
  enabled: boolean | null;
  previous: boolean | null;
  /** Unleash's revision (latest event id) the poll read; null when its ETag does not say. */
  revision: number | null;
}

export interface FlagServiceEvents {
  stale: [{ lastFetchAt: Date | null }];
  recovered: [{ staleForS: number }];
  override: [FlagOverride];
  'override-ended': [string];
  /** After a poll that changed a flag's enabled state, one per flag (not for the first fetch: nothing to compare). */
  'polled-change': [PolledFlagChange];
}

/** A strategy that is on for every context our step builds (userId is always set). */
function unconditionallyOn(s: { name: string; parameters?: Record<string, unknown>; constraints?: unknown[]; segments?: unknown[]; disabled?: boolean | null }): boolean {
  if (s.disabled === true || (s.constraints?.length ?? 0) > 0 || (s.segments?.length ?? 0) > 0) return false;
  if (s.name === 'default') return true;
  if (s.name !== 'flexibleRollout') return false;
  const stickiness = s.parameters?.['stickiness'];
  return Number(s.parameters?.['rollout']) === 100 && (stickiness === undefined || stickiness === '' || stickiness === 'default' || stickiness === 'random');
}

export class FlagService extends EventEmitter<FlagServiceEvents> {
  private client: Unleash | undefined;
  private evaluate: Evaluate | undefined;
  private readonly overrides = new OverrideSet();
  /**
   * Flags whose answer does not depend on the context: off in our environment (false), or on with an
   * unconstrained 100% rollout or standard strategy (true). These skip the SDK's strategy evaluation
   * (~3 µs per flag here); every other flag, and any flag missing from the index, goes through the SDK.
   * Rebuilt on every data change, before any evaluation can see the new data.
   */
  private plain = new Map<string, boolean>();
  /** Each flag's enabled state as the last poll read it (the backup does not count): what a poll's change is told against. */
  private polledEnabled: Map<string, boolean> | undefined;
  private readonly origin = `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
  private readonly channel: string;
  private readonly backup: FlagBackup;
  private ready = false;
  private source: FlagSource = 'none';
  private lastFetchAt: number | null = null;
  private lastErrorAt: number | null = null;
  private lastError: string | null = null;
  private revision: number | null = null;
  private lastWebhook: WebhookSighting | null = null;
  private lastRegistration: RegistrationView | undefined;
  /** Makes the service ready (set by start): a successful fetch ends any wait for Unleash. */
  private firstFetch: (() => void) | undefined;
  private stale = false;
  private staleTimer: NodeJS.Timeout | undefined;
  /** The embedded Unleash this control plane runs (supervisor.ts), undefined with UNLEASH_URL set. */
  private embedded: EmbeddedUnleashState | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly startedAt = Date.now();
  private readonly onMessage = (channel: string, message: string) => {
    if (channel === this.channel) this.applyRemote(message);
  };

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly redis: RedisHandle,
    private readonly alert: FlagAlertSink = () => {},
  ) {
    super();
    this.channel = redis.channel('flags:override');
    this.backup = new FlagBackup(
      config.dataDir,
      { url: config.unleashUrl, environment: config.unleashEnvironment, appName: APP_NAME },
      config.unleashBackupMaxAgeS,
      (msg, fields) => log.warn(fields ?? {}, msg),
      new SharedFlagBackup(redis, config.unleashEnvironment, config.unleashBackupMaxAgeS),
    );
  }

  /**
   * Starts polling and waits until the flags are loaded from Unleash, the first fetch has failed with no
   * usable backup, or UNLEASH_START_WAIT_MS has passed (a fresh backup is used only then, when no fetch
   * has succeeded: Unleash unreachable). Never throws for an unreachable Unleash: without a backup the
   * service then stays not ready and every decision denies.
   */
  async start(): Promise<void> {
    this.redis.sub.on('message', this.onMessage);
    // Kept subscribed across Redis restarts: a replica that started while Redis was away used to hear no
    // other replica's webhook events (flag-offs by polling only) until it was restarted.
    this.unsubscribe = await keepSubscribed(this.redis, this.channel, (err) =>
      this.log.warn({ err: err.message }, 'flags: cannot subscribe to webhook overrides yet; relying on polling until Redis is back'),
    );
    this.staleTimer = setInterval(() => this.checkStale(), 1_000);
    this.staleTimer.unref();
    if (!this.config.unleashUrl) {
      this.log.error('flags: UNLEASH_URL is empty and no embedded Unleash was started; every decision is denied (DEPENDENCY_UNAVAILABLE)');
      return;
    }
    const client = new Unleash({
      appName: APP_NAME,
      instanceId: this.origin,
      url: this.config.unleashUrl,
      environment: this.config.unleashEnvironment,
      refreshInterval: this.config.unleashRefreshMs,
      metricsInterval: 60_000,
      customHeaders: { Authorization: this.config.unleashApiToken },
      timeout: Math.max(1_000, Math.min(5_000, this.config.unleashRefreshMs * 3)),
      storageProvider: this.backup,
      experimentalMode: { type: 'polling', format: 'full' },
      skipInstanceCountWarning: true,
      // HTTP(S)_PROXY and NO_PROXY as unleash-client reads them, but never for a loopback Unleash.
      httpOptions: { agent: unleashAgent },
    });
    this.client = client;
    const hold = holdPollInterval(client, this.config.unleashRefreshMs);
    if (!hold.held) {
      this.log.error(
        { why: hold.why },
        "flags: cannot turn off unleash-client's poll back-off (its internals changed): after Unleash answers errors, polls may be up to 11 × UNLEASH_REFRESH_MS apart, and a 401/403 may stop polling until a restart, so a flag turned off may take that long to be seen; use break-glass kills (POST /v1/kills) while Unleash is unsteady",
      );
    }
    const evaluator = sdkEvaluator(client);
    this.evaluate = evaluator.evaluate;
    if (evaluator.evaluate === undefined) {
      this.log.error(
        { why: evaluator.why },
        "flags: cannot evaluate flags without counting them in Unleash's usage metrics (unleash-client's internals changed): explain answers DEPENDENCY_UNAVAILABLE for every flag whose answer depends on the call (constraints, segments, partial rollouts), and GET /v1/flags shows no evaluations for them; decisions are unaffected. Pin unleash-client to the version in package-lock.json or adapt sdkEvaluator (src/flags/service.ts)",
      );
    }
    let settled!: () => void;
    const firstOutcome = new Promise<void>((r) => {
      settled = r;
    });
    // A backup is for a replica that cannot reach Unleash: one that loaded is used only once
    // UNLEASH_START_WAIT_MS has passed without a successful fetch (a fetch that fails or times out is
    // not one). Until then every decision denies, as before any flags are loaded.
    let waitOver = false;
    let backupWaiting = false;
    const markReady = () => {
      if (this.ready || this.client !== client) return;
      // A backup loads without a Changed event: index what the client holds before allowing anything.
      this.indexFlags();
      this.ready = true;
      if (this.source === 'none') this.source = this.lastFetchAt ? 'poll' : 'bootstrap';
      this.log.info({ source: this.source, backup: this.backup.state, backup_from: this.backup.from }, 'flags: ready');
      settled();
    };
    this.firstFetch = markReady;
    client.on(UnleashEvents.Ready, () => {
      if (this.lastFetchAt !== null || waitOver) return markReady();
      backupWaiting = true;
      this.log.info(
        { backup: this.backup.state, backup_from: this.backup.from, wait_ms: this.config.unleashStartWaitMs },
        'flags: backup loaded; decisions deny until Unleash answers, or until UNLEASH_START_WAIT_MS has passed without an answer (then the backup is used)',
      );
    });
    client.on(UnleashEvents.Changed, () => {
      // Emitted synchronously right after the client replaced its data: no evaluation sees a stale index.
      this.indexFlags();
      this.fetched(false);
      this.noticeEnabledChanges();
    });
    client.on(UnleashEvents.Unchanged, () => {
      this.fetched(true);
      if (!this.polledEnabled) this.noticeEnabledChanges();
    });
    const failed = (err: unknown) => {
      const message = err instanceof Error ? err.message : String(err);
      if (this.lastError !== message || !this.lastErrorAt || Date.now() - this.lastErrorAt > 60_000) this.log.warn({ err: message }, 'flags: Unleash fetch failed');
      this.lastErrorAt = Date.now();
      this.lastError = message;
      // Without a usable backup the first failure settles the start: waiting longer helps nobody. With
      // one, the start waits out UNLEASH_START_WAIT_MS for a successful fetch before using it.
      void this.backup.checked.then(() => {
        if (this.backup.state !== 'loaded') settled();
      });
    };
    client.on(UnleashEvents.Error, failed);
    client.on(UnleashEvents.Warn, (msg: unknown) => {
      if (typeof msg === 'string' && /Backing off|responded/.test(msg)) failed(new Error(msg));
    });
    const timeout = new Promise<void>((r) =>
      setTimeout(() => {
        waitOver = true;
        if (backupWaiting && !this.ready && this.client === client) {
          this.log.warn({ url: this.config.unleashUrl, last_error: this.lastError, backup_from: this.backup.from }, 'flags: no successful fetch from Unleash within UNLEASH_START_WAIT_MS: starting from the backup (Unleash unreachable)');
          markReady();
        }
        r();
      }, this.config.unleashStartWaitMs).unref(),
    );
    await Promise.race([firstOutcome, timeout]);
    if (!this.ready) this.log.error({ url: this.config.unleashUrl, backup: this.backup.state }, 'flags: not ready (Unleash unreachable and no fresh backup): decisions deny with DEPENDENCY_UNAVAILABLE until it answers');
  }

  async stop(): Promise<void> {
    if (this.staleTimer) clearInterval(this.staleTimer);
    this.redis.sub.off('message', this.onMessage);
    await this.unsubscribe?.();
    if (this.client) {
      const repository = (this.client as unknown as { repository?: EventEmitter }).repository;
      this.client.destroy();
      // destroy() drops the repository's listeners; a fetch still retrying against a down Unleash would
      // then emit an unhandled 'error' when it gives up (an unhandled rejection that ends the process).
      repository?.on('error', () => {});
    }
    this.client = undefined;
    this.firstFetch = undefined;
    this.ready = false;
    await this.backup.flush();
  }

  private fetched(unchanged: boolean): void {
    const wasStale = this.stale;
    const staleSince = this.lastFetchAt;
    this.lastFetchAt = Date.now();
    this.source = 'poll';
    this.revision = revisionFromEtag((this.client as unknown as RepositoryInternals | undefined)?.repository?.etag);
    if (!this.ready) this.firstFetch?.();
    if (unchanged) this.backup.confirm();
    if (this.overrides.size > 0) {
      const client = this.client;
      const dropped = this.overrides.reconcile({
        revision: this.revision,
        now: Date.now(),
        isOn: (flag) => client?.getFeatureToggleDefinition(flag)?.enabled === true,
      });
      for (const flag of dropped) {
        this.log.info({ flag, revision: this.revision }, 'flags: webhook override ended (the polled state has caught up)');
        this.emit('override-ended', flag);
      }
    }
    if (wasStale) {
      this.stale = false;
      const staleForS = Math.round((Date.now() - (staleSince ?? this.startedAt)) / 1000);
      this.log.info({ stale_for_s: staleForS }, 'flags: Unleash answers again; flags are fresh');
      this.alert({ kind: 'FLAGS_RECOVERED', message: `Unleash answers again after ${staleForS} s; flags are fresh.`, numbers: { stale_for_s: staleForS } });
      this.emit('recovered', { staleForS });
    }
  }

  /**
   * Compares each flag's enabled state with the previous poll's and emits `polled-change` for each that
   * changed (turned on or off in our environment, archived, revived): how a change reaches the audit trail
   * when the webhook does not (flag routes). The first poll only sets what later ones are compared with.
   */
  private noticeEnabledChanges(): void {
    const now = new Map<string, boolean>();
    for (const f of this.client?.getFeatureToggleDefinitions() ?? []) now.set(f.name, f.enabled === true);
    const before = this.polledEnabled;
    this.polledEnabled = now;
    if (!before) return;
    for (const flag of new Set([...before.keys(), ...now.keys()])) {
      const previous = before.get(flag) ?? null;
      const enabled = now.get(flag) ?? null;
      if (previous !== enabled) this.emit('polled-change', { flag, enabled, previous, revision: this.revision });
    }
  }

  private checkStale(): void {
    if (this.stale || !this.config.unleashUrl) return;
    const since = this.lastFetchAt ?? this.startedAt;
    if (Date.now() - since < this.config.unleashStaleAfterS * 1000) return;
    this.stale = true;
    const lastFetchAt = this.lastFetchAt ? new Date(this.lastFetchAt) : null;
    const down = this.embedded?.up === false ? this.embedded : undefined;
    const message =
      (this.ready
        ? `No successful Unleash fetch for ${this.config.unleashStaleAfterS} s (last ${lastFetchAt?.toISOString() ?? 'never'}): the last fetched flags stay in force; use break-glass kills (POST /v1/kills) to stop something now.`
        : `Unleash has not answered for ${this.config.unleashStaleAfterS} s and there is no fresh backup: every decision is denied (DEPENDENCY_UNAVAILABLE).`) +
      (down ? ` ${EMBEDDED_DOWN_SENTENCE} (down since ${new Date(down.downSince ?? Date.now()).toISOString()}).` : '');
    this.log.error({ last_fetch_at: lastFetchAt, last_error: this.lastError, url: this.config.unleashUrl, ...(down ? { embedded_unleash: 'restarting' } : {}) }, `flags: stale. ${message}`);
    this.alert({
      kind: 'FLAGS_STALE',
      message,
      numbers: { stale_after_s: this.config.unleashStaleAfterS, ...(this.embedded ? { embedded_unleash_restarts: this.embedded.restarts } : {}) },
      details: { last_error: this.lastError, ...(down ? { embedded_unleash: 'restarting', embedded_unleash_down_since: new Date(down.downSince ?? Date.now()).toISOString() } : {}) },
    });
    this.emit('stale', { lastFetchAt });
  }

  /**
   * Denies, from the first decision, the flags the start's flags sync has just read from Unleash's admin
   * API as off in our environment or archived (prepareUnleash): whatever a backup says, until a successful
   * poll (newer than that read) shows the flag's state (the override rules of unknown revision). Call
   * before start(). Local to this replica: every replica's start makes its own read.
   */
  seedDenies(read: StartFlagsRead): void {
    const add = (flag: string, reason: FlagOverride['reason']) => this.overrides.deny({ flag, reason, eventId: null, at: read.at });
    for (const flag of read.off) add(flag, 'disabled');
    for (const flag of read.archived) add(flag, 'archived');
    const n = read.off.length + read.archived.length;
    if (n > 0) this.log.info({ off: read.off, archived: read.archived }, `flags: ${n} flag(s) off or archived in Unleash at this start are denied until a poll shows them`);
  }

  /** The Unleash environment this service reads. */
  get environment(): string {
    return this.config.unleashEnvironment;
  }

  /** True once flags are loaded from Unleash or a fresh backup. Before that every flag is off. */
  /** What the supervisor of the embedded Unleash (this process's, or the primary's under WORKERS > 1) last said. */
  noteEmbeddedUnleash(state: EmbeddedUnleashState): void {
    this.embedded = { ...state };
  }

  /** The embedded Unleash's state; undefined when this control plane runs none (UNLEASH_URL set). */
  embeddedUnleash(): EmbeddedUnleashState | undefined {
    return this.embedded ? { ...this.embedded } : undefined;
  }

  isReady(): boolean {
    return this.ready;
  }

  isStale(): boolean {
    return this.stale;
  }

  lastFetch(): Date | null {
    return this.lastFetchAt ? new Date(this.lastFetchAt) : null;
  }

  /** The hot path: in memory, no I/O. */
  isEnabled(name: string, context: UnleashContext): boolean {
    if (!this.ready || this.client === undefined) return false;
    if (this.overrides.has(name)) return false;
    const known = this.plain.get(name);
    if (known === false) return false;
    if (known === true) {
      this.client.count(name, true);
      return true;
    }
    if (!this.evaluate) return this.client.isEnabled(name, context, false);
    const enabled = this.evaluate(name, context, FALSE);
    this.client.count(name, enabled);
    return enabled;
  }

  /**
   * `isEnabled` without counting: the same answer (readiness, webhook overrides, the index, then the SDK's
   * own evaluation of strategies, constraints, segments and dependencies) but nothing is added to the
   * usage metrics the SDK sends to Unleash (the toggle counts its UI shows), which must count real calls
   * only. For explain. unleash-client 6 has no public evaluation that does not count (`isEnabled` and
   * `getVariant` both do), so this uses the SDK's inner evaluator, as the hot path does; undefined when
   * that is not there (its internals changed): not an answer, the caller must fail closed.
   */
  isEnabledUncounted(name: string, context: UnleashContext): boolean | undefined {
    if (!this.ready || this.client === undefined) return false;
    if (this.overrides.has(name)) return false;
    const known = this.plain.get(name);
    if (known !== undefined) return known;
    return this.evaluate?.(name, context, FALSE);
  }

  /**
   * Calls `listener` for every evaluation the SDK counts in the usage metrics it sends to Unleash. Returns
   * the function that stops listening. For tests and diagnostics; without a listener it costs nothing.
   */
  onUsageCount(listener: (name: string, enabled: boolean) => void): () => void {
    const client = this.client;
    if (!client) return () => {};
    client.on(UnleashEvents.Count, listener);
    return () => {
      client.off(UnleashEvents.Count, listener);
    };
  }

  /** The evaluation context of one call, with the static fields (appName, environment) the SDK adds. */
  callContext(c: FlagCallContext): UnleashContext {
    return toUnleashContext(c, { appName: APP_NAME, environment: this.config.unleashEnvironment });
  }

  private indexFlags(): void {
    const plain = new Map<string, boolean>();
    for (const f of this.client?.getFeatureToggleDefinitions() ?? []) {
      if (f.enabled !== true) plain.set(f.name, false);
      else if ((f.dependencies?.length ?? 0) === 0 && (f.strategies ?? []).some(unconditionallyOn)) plain.set(f.name, true);
    }
    this.plain = plain;
  }

  /** Why a flag is off for this context (called on denials only). */
  whyOff(name: string, context: UnleashContext): { reason: OffReason; description: string | null } {
    if (!this.ready || !this.client) return { reason: 'not-ready', description: null };
    const def = this.client.getFeatureToggleDefinition(name);
    const description = def?.description ?? null;
    if (this.overrides.has(name)) return { reason: 'webhook', description };
    if (!def) return { reason: 'missing', description: null };
    if (!def.enabled) return { reason: 'off', description };
    // Asked without counting: the call's own evaluation was counted already (explain's was not counted at all).
    return { reason: this.isEnabledUncounted(name, context) === true ? 'off' : 'constraints', description };
  }

  /** Every flag Unleash serves for our environment, with overrides. */
  flags(): FlagView[] {
    const defs = this.client?.getFeatureToggleDefinitions() ?? [];
    const repository = (this.client as unknown as RepositoryInternals | undefined)?.repository;
    const segment = (id: number) => {
      const found = repository?.getSegment?.(id)?.constraints;
      return { id, constraints: found ? (found as SdkConstraint[]).map(constraintView) : null };
    };
    const views: FlagView[] = defs.map((d) => {
      const active: StrategyView[] = (d.strategies ?? [])
        .filter((st) => (st as { disabled?: boolean | null }).disabled !== true)
        .map((st) => ({
          name: st.name,
          parameters: parametersView(st.parameters),
          constraints: ((st.constraints ?? []) as SdkConstraint[]).map(constraintView),
          segments: (st.segments ?? []).map(segment),
        }));
      const override = this.overrides.get(d.name) ?? null;
      return {
        name: d.name,
        description: d.description ?? null,
        type: d.type ?? null,
        // The state in force: a webhook deny wins over the polled "on" until the poll catches up.
        enabled: d.enabled && override === null,
        override,
        strategies: d.strategies?.length ?? 0,
        // A segment that cannot be looked up counts as one constraint: it still narrows the strategy.
        constraints: active.reduce((n, st) => n + st.constraints.length + st.segments.reduce((m, sg) => m + (sg.constraints?.length ?? 1), 0), 0),
        activeStrategies: active,
      };
    });
    // Overrides for flags the poll no longer has (archived) are listed too.
    for (const o of this.overrides.list()) {
      if (!views.some((v) => v.name === o.flag)) views.push({ name: o.flag, description: null, type: null, enabled: false, override: o, strategies: 0, constraints: 0, activeStrategies: [] });
    }
    return views.sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * What became of the latest registration of the Unleash webhook in this installation (recorded in Redis by
   * the start that made it, or by `flags sync`), as it concerns this replica's URL and secret. Redis
   * unreadable: the last answer read, or `unknown`. `secret`: the webhook secret this replica accepts
   * (app.ctx.webhookSecret); undefined (it cannot be read): `unknown`.
   */
  async webhookRegistration(secret: string | undefined): Promise<RegistrationView> {
    if (secret === undefined) return unknownRegistration("this replica cannot read its webhook secret from the database (DATABASE_URL): it refuses every webhook event until it can (flag changes still arrive by polling)");
    const keys = registrationKeys(this.redis.prefix);
    try {
      const raw = (await this.redis.redis.mget(keys.last, keys.ok)) as [string | null, string | null];
      this.lastRegistration = describeRegistration(raw, { url: webhookUrl(this.config), secret });
    } catch (err) {
      if (!this.lastRegistration) return unknownRegistration(`the record in Redis cannot be read: ${registrationError(err)}`);
    }
    return this.lastRegistration;
  }

  /** The registration as this replica last read it (webhookRegistration), without asking Redis: for /readyz. */
  lastRegistrationView(): RegistrationView | undefined {
    return this.lastRegistration;
  }

  status(): FlagStatus {
    return {
      ready: this.ready,
      source: this.source,
      environment: this.config.unleashEnvironment,
      url: this.config.unleashUrl,
      lastFetchAt: this.lastFetch(),
      fetchAgeS: this.lastFetchAt === null ? null : Math.floor((Date.now() - this.lastFetchAt) / 1000),
      fetchFailing: this.lastErrorAt !== null && (this.lastFetchAt === null || this.lastErrorAt >= this.lastFetchAt),
      lastErrorAt: this.lastErrorAt ? new Date(this.lastErrorAt) : null,
      lastError: this.lastError,
      stale: this.stale,
      staleAfterS: this.config.unleashStaleAfterS,
      revision: this.revision,
      backup: { path: this.backup.path, state: this.backup.state, ageS: this.backup.ageS, from: this.backup.from },
      overrides: this.overrides.list(),
      lastWebhook: this.lastWebhook,
    };
  }

  /**
   * Applies a flag event from the Unleash webhook on this replica at once and on every other replica
   * through Redis. Only ever stricter: `disabled`/`archived`/`revived` add (or keep) a deny; only
   * `feature-environment-enabled` in our environment ends an older deny of ours (the poll stays the
   * authority). Returns what was done.
   */
  async applyWebhookEvent(e: { type: string; featureName?: string | undefined; environment?: string | undefined; id?: number | undefined }): Promise<'denied' | 'cleared' | 'ignored'> {
    const flag = e.featureName;
    const eventId = typeof e.id === 'number' && Number.isInteger(e.id) ? e.id : null;
    const at = Date.now();
    this.sawWebhook({ at, type: e.type, flag: flag ?? null });
    const seen = () => this.publish({ origin: this.origin, op: 'seen', flag: flag ?? '', eventId, at, event: e.type });
    if (!flag) {
      await seen();
      return 'ignored';
    }
    const ours = e.environment === undefined || e.environment === null || e.environment === this.config.unleashEnvironment;
    if (e.type === 'feature-environment-disabled' || e.type === 'feature-archived') {
      if (!ours) {
        this.log.warn({ flag, environment: e.environment, reads: this.config.unleashEnvironment }, `flags: ${flag} was turned off in Unleash environment "${e.environment}", but this control plane reads "${this.config.unleashEnvironment}": no effect on decisions`);
        await seen();
        return 'ignored';
      }
      const o: FlagOverride = { flag, reason: e.type === 'feature-archived' ? 'archived' : 'disabled', eventId, at };
      this.applyDeny(o);
      await this.publish({ origin: this.origin, op: 'deny', flag, reason: o.reason, eventId, at, event: e.type });
      this.alert({ kind: 'FLAG_DISABLED', message: `${flag} was ${o.reason === 'archived' ? 'archived' : 'turned off'} in Unleash (${this.config.unleashEnvironment}); applied at once on every replica.`, details: { flag, event_id: eventId } });
      return 'denied';
    }
    if (e.type === 'feature-revived') {
      // Unleash brings a revived flag back off in every environment: never a reason to allow. A deny is
      // kept (or set) until a poll at least as new as this event shows the flag's real state; while polls
      // fail, the older polled state ("on" before the archive) must not come back with it.
      const o: FlagOverride = { flag, reason: this.overrides.get(flag)?.reason ?? 'archived', eventId, at };
      this.applyDeny(o);
      await this.publish({ origin: this.origin, op: 'deny', flag, reason: o.reason, eventId, at, event: e.type });
      return 'denied';
    }
    // Only a flag turned on in the environment we read lifts a deny; any other event (created, updated,
    // strategies, metadata) changes nothing here: the poll is the authority.
    if (e.type === 'feature-environment-enabled' && ours) {
      const denied = this.overrides.has(flag);
      const cleared = this.overrides.enabled(flag, eventId, at);
      await this.publish({ origin: this.origin, op: 'enabled', flag, eventId, at, event: e.type });
      // The counterpart of FLAG_DISABLED (the alert service acknowledges that flag's open ones). Not for an
      // enable older than the deny still in force (events out of order: the flag is off).
      if (cleared || !denied) {
        this.alert({ kind: 'FLAG_ENABLED', message: `${flag} was turned on in Unleash (${this.config.unleashEnvironment}).`, details: { flag, event_id: eventId } });
      }
      return cleared ? 'cleared' : 'ignored';
    }
    await seen();
    return 'ignored';
  }

  private sawWebhook(w: WebhookSighting): void {
    if (!this.lastWebhook || w.at >= this.lastWebhook.at) this.lastWebhook = w;
  }

  private applyDeny(o: FlagOverride): void {
    if (this.overrides.deny(o)) {
      this.log.warn({ flag: o.flag, reason: o.reason, event_id: o.eventId }, `flags: ${o.flag} denied at once (Unleash webhook)`);
      this.emit('override', o);
    }
  }

  private async publish(msg: OverrideMessage): Promise<void> {
    try {
      await this.redis.redis.publish(this.channel, JSON.stringify(msg));
    } catch (err) {
      // The other replicas still see the change at their next poll.
      this.log.warn({ err: (err as Error).message, flag: msg.flag }, 'flags: could not publish the webhook override to other replicas');
    }
  }

  private applyRemote(raw: string): void {
    let msg: OverrideMessage;
    try {
      msg = JSON.parse(raw) as OverrideMessage;
    } catch {
      msg = {} as OverrideMessage;
    }
    if (msg === null || typeof msg !== 'object' || typeof msg.flag !== 'string') {
      // Not one of ours (another version, or something else publishing on the channel): the next poll
      // still applies what Unleash says, but a relayed turn-off may have been lost, so say so.
      this.log.warn({ channel: this.channel, message: raw.slice(0, 200) }, 'flags: ignored a flag override from another replica that could not be read; this replica applies the change at its next poll');
      return;
    }
    if (msg.origin === this.origin) return;
    const eventId = typeof msg.eventId === 'number' ? msg.eventId : null;
    const at = typeof msg.at === 'number' ? msg.at : Date.now();
    const type = typeof msg.event === 'string' ? msg.event : msg.op === 'deny' ? `feature-${msg.reason === 'archived' ? 'archived' : 'environment-disabled'}` : msg.op === 'enabled' ? 'feature-environment-enabled' : null;
    if (type !== null) this.sawWebhook({ at, type, flag: msg.flag || null });
    // A revive is a deny whatever op it came with (replicas of an older version relayed it as `enabled`);
    // only a turn-on (or an older replica's `enabled` without its event type) may lift one.
    if (msg.op === 'deny' || (msg.op === 'enabled' && msg.event === 'feature-revived')) this.applyDeny({ flag: msg.flag, reason: msg.reason === 'disabled' ? 'disabled' : 'archived', eventId, at });
    else if (msg.op === 'enabled' && (msg.event === undefined || msg.event === 'feature-environment-enabled')) this.overrides.enabled(msg.flag, eventId, at);
  }
}
