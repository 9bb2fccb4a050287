import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { SpanExporter } from '@opentelemetry/sdk-trace';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { fullFormats } from 'ajv-formats/dist/formats.js';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import { pino } from 'pino';
import { createAlertService } from './alerts/index.js';
import { alertRoutes } from './alerts/routes.js';
import { auditRoutes } from './audit/routes.js';
import { AuditService, databaseName, openWriterPool } from './audit/service.js';
import { ClockOffset } from './clock/offset.js';
import { reportClockChanges } from './clock/report.js';
import { type Config, ConfigError, checkStartConfig, serverTlsOptions } from './config.js';
import type { AppContext } from './context.js';
import { migrate } from './db/migrate.js';
import { createPool, ensureDatabase, type Pool } from './db/pool.js';
import { claimRestoredDatabase, restoredDatabaseMessage } from './db/restored.js';
import { decisionsPlugin } from './decisions/plugin.js';
import { flagRoutes } from './flags/routes.js';
import { FlagService, type StartFlagsRead } from './flags/service.js';
import { WebhookSecretHolder } from './flags/webhook-secret.js';
import { decorateCredentials, RefusedCredentials } from './http/auth.js';
import { clientErrorHandler, frameworkErrors, installErrorHandler } from './http/error-handler.js';
import { healthRoutes } from './http/health.js';
import { requestIdGenerator } from './http/request-id.js';
import { lazyChildLogger } from './http/request-logger.js';
import { installResponseHeaders } from './http/response-headers.js';
import { declareCommonErrors, optionalBodies } from './http/schemas.js';
import { registerKillLoader } from './kills/mirror.js';
import { RedisGate } from './limits/gate.js';
import { loggerOptions } from './log.js';
import { Metrics } from './metrics/metrics.js';
import { operabilityPlugin } from './metrics/plugin.js';
import { installHttpMetrics } from './metrics/routes.js';
import { PolicyReplicas, type PolicyReplicasOptions, shortHash } from './policy/replicas.js';
import { policyRoutes } from './policy/routes.js';
import { PolicyStore, requirePolicyFile } from './policy/store.js';
import { createRedis, waitForRedis, warnOnEviction } from './redis/client.js';
import { checkRedisServer, RedisServerError } from './redis/server-check.js';
import { sessionRoutes } from './sessions/routes.js';
import { SessionService } from './sessions/service.js';
import { Authenticator } from './tokens/authenticator.js';
import { credentialRoutes } from './tokens/routes.js';
import { hashSecretFingerprint, SECRET_FINGERPRINT, STORED_SECRET } from './tokens/secret-fingerprint.js';
import { CredentialService } from './tokens/service.js';
import { credentialStore } from './tokens/store.js';
import { uiRoutes } from './ui/routes.js';

export interface BuildOptions {
  /** Where logs go (tests capture them). Default: stdout. */
  logStream?: NodeJS.WritableStream;
  /** Apply migrations (creating the database if needed). Default true. */
  migrate?: boolean;
  /** Where decision spans go instead of the OTEL_* exporter (tests: an InMemorySpanExporter); turns tracing on. */
  spanExporter?: SpanExporter;
  /** Heartbeat, live window and alert delay of the policy hashes replicas publish (tests shorten them). */
  policyReplicas?: PolicyReplicasOptions;
  /** What the start's flags sync read from Unleash (prepareUnleash): flags off or archived there are denied from the first decision. */
  flagsAtStart?: StartFlagsRead | undefined;
  /** Told what the start does next, in an operator's words (`killswitch start` names it if a signal stops the start). */
  onPhase?: (phase: string) => void;
}

/**
 * A copy of a route schema in which every `format: uuid` string is also `x-lowercase`: ids are issued,
 * stored and keyed in lower case, and one typed in upper case must name the same object everywhere
 * (Postgres matches either case; Redis keys and in-memory sets only one, so a kill or a resume by an
 * upper-case id would be recorded and yet not take effect).
 */
export function lowercaseUuids(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(lowercaseUuids);
  if (schema === null || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) out[k] = lowercaseUuids(v);
  if (out['format'] === 'uuid') out['x-lowercase'] = true;
  return out;
}

/**
 * Node's options for REQUEST_TIMEOUT_MS, given to the http(s).Server as it is made. Given only as Fastify's
 * `requestTimeout`, it is set on the server afterwards, where Node 20 applies it while the headers arrive
 * but not to the body: that needs `headersTimeout` at most `requestTimeout` (as Node's constructor
 * defaults it: the smaller of 60 s and requestTimeout). `connectionsCheckingInterval`: how often Node looks
 * for requests over the limit (30 s by default), here a quarter of it, between 250 ms and 5 s, so a request
 * is cut at most that much late. The check walks the open connections, nothing more.
 */
export function serverTimeouts(requestTimeoutMs: number): { requestTimeout: number; headersTimeout: number; connectionsCheckingInterval: number } {
  return {
    requestTimeout: requestTimeoutMs,
    headersTimeout: Math.min(60_000, requestTimeoutMs),
    connectionsCheckingInterval: Math.min(5_000, Math.max(250, Math.floor(requestTimeoutMs / 4))),
  };
}

function buildAjv(coerce: boolean): Ajv {
  // Bodies are never coerced ("true" is not true) and never stripped: an unknown field is a 400. Errors
  // carry their schema (verbose), so a failed pattern can be explained by its field's description.
  const ajv = new Ajv({ allErrors: false, coerceTypes: coerce ? 'array' : false, removeAdditional: false, useDefaults: true, strict: false, verbose: true });
  (addFormats as unknown as (a: Ajv) => void)(ajv);
  // RFC 3339 allows a leap second (23:59:60) that Date cannot hold: such a value would reach Postgres
  // as an Invalid Date and fail there (a 500). A date-time is valid only if it is also a real instant.
  const rfc3339 = fullFormats['date-time'] as { validate: (s: string) => boolean; compare: (a: string, b: string) => number | undefined };
  ajv.addFormat('date-time', { type: 'string', validate: (s: string) => rfc3339.validate(s) && !Number.isNaN(Date.parse(s)), compare: rfc3339.compare });
  // Every `format: uuid` (see lowercaseUuids): an id typed in upper case is the same id, in lower case.
  ajv.addKeyword({
    keyword: 'x-lowercase',
    type: 'string',
    schemaType: 'boolean',
    modifying: true,
    compile: (on: boolean) => (data: string, cxt) => {
      if (on && cxt?.parentData && cxt.parentDataProperty !== undefined) {
        (cxt.parentData as Record<string | number, unknown>)[cxt.parentDataProperty] = data.toLowerCase();
      }
      return true;
    },
  });
  return ajv;
}

/** Errors of reaching Postgres at all (network, DNS, TLS, login, a database that cannot be used), as opposed to a failed statement. */
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'EPIPE', '28P01', '28000', '3D000', '57P03', '53300']);

/** The database (3D000) or its tables (42P01) are not there yet: a first start, which creates them. */
function isFirstStart(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === '3D000' || code === '42P01';
}

function isConnectError(err: unknown): boolean {
  const e = err as { code?: unknown; syscall?: unknown; message?: unknown };
  if (typeof e?.code === 'string' && CONNECT_CODES.has(e.code)) return true;
  if (e?.syscall === 'connect' || e?.syscall === 'getaddrinfo') return true;
  return typeof e?.message === 'string' && /Connection terminated|timeout expired|SSL/i.test(e.message);
}

/**
 * A failure to reach the Postgres a setting names, told with that setting and its host:port (never the
 * password): "connect ECONNREFUSED 127.0.0.1:5439" alone does not say whether DATABASE_URL or
 * UNLEASH_DATABASE_URL is wrong. Anything else (a failed migration) is returned as it is.
 */
export function postgresStartError(variable: 'DATABASE_URL' | 'UNLEASH_DATABASE_URL', databaseUrl: string, err: unknown): unknown {
  if (!isConnectError(err)) return err;
  let where = 'the Postgres it names';
  let password = '';
  try {
    const url = new URL(databaseUrl);
    password = decodeURIComponent(url.password);
    const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
    where = `Postgres at ${url.hostname || 'localhost'}:${url.port || '5432'}${database ? `, database ${database}` : ''}${url.username ? `, user ${decodeURIComponent(url.username)}` : ''}`;
  } catch {
    // DATABASE_URL was validated as a URL; keep the message general if it somehow is not one.
  }
  // `localhost` tried on ::1 and 127.0.0.1 fails with an AggregateError whose message is empty.
  const e = err as { message?: unknown; code?: unknown; errors?: Array<{ message?: unknown }> };
  let reason = (typeof e?.message === 'string' && e.message) || (typeof e?.errors?.[0]?.message === 'string' && e.errors[0].message) || (typeof e?.code === 'string' && e.code) || String(err);
  if (password) reason = reason.split(password).join('(hidden)');
  return new Error(`cannot connect to ${where} (${variable}): ${reason}. Check that Postgres runs there and that ${variable} names it (postgres://USER:PASSWORD@HOST:PORT/DATABASE).`, { cause: err });
}

/**
 * The secret in use differs from the one this database's credentials were hashed with: starting would
 * answer 401 to every key, gateway key and agent token while /readyz says ready.
 */
function hashSecretMismatch(source: 'configured' | 'stored' | 'none', leftover: boolean): ConfigError {
  const ours =
    source === 'configured'
      ? 'the TOKEN_HASH_SECRET this replica is given'
      : source === 'stored'
        ? 'the secret stored in the database, which this replica uses because TOKEN_HASH_SECRET is not set'
        : 'any this replica has: TOKEN_HASH_SECRET is not set, and the database stores no generated secret';
  return new ConfigError(
    'TOKEN_HASH_SECRET',
    `TOKEN_HASH_SECRET: this database's credentials (operator keys, gateway keys, agent tokens) were hashed with another secret than ${ours}, so every one of them would be refused (401). ` +
      'Set TOKEN_HASH_SECRET to the same value on every replica (and for `killswitch operators create`), or, if the installation has always run without it, unset it everywhere so every replica uses the secret stored in the database. ' +
      (leftover
        ? 'This database records no fingerprint of its secret yet (last started by a version before 2026-12-05) and stores a secret that a start without TOKEN_HASH_SECRET generated: if your credentials do work with this TOKEN_HASH_SECRET, that stored secret is a leftover to delete. '
        : '') +
      'To change the secret on purpose, every credential must be issued again: docs/operations.md, "Changing TOKEN_HASH_SECRET".',
  );
}

/** What the database records of the keyed-hash secret: its fingerprint, and the secret a start without TOKEN_HASH_SECRET generated. */
interface SecretSettings {
  recorded: string | undefined;
  stored: string | undefined;
}

async function readSecretSettings(pool: Pool): Promise<SecretSettings> {
  return { recorded: await credentialStore.getSetting(pool, SECRET_FINGERPRINT), stored: await credentialStore.getSetting(pool, STORED_SECRET) };
}

/**
 * The secret this replica uses with these settings (TOKEN_HASH_SECRET, else the stored one), checked
 * against the secret the database's credentials were hashed with (its recorded fingerprint, else its
 * stored secret): a ConfigError is thrown when they differ. Undefined when there is none yet: a first
 * start generates one.
 */
function existingSecret(config: Config, { recorded, stored }: SecretSettings): { secret: string; source: 'configured' | 'stored' } | undefined {
  const chosen = config.tokenHashSecret ? { secret: config.tokenHashSecret, source: 'configured' as const } : stored ? { secret: stored, source: 'stored' as const } : undefined;
  // Generating a secret now would make it the database's and shut out every credential already issued.
  if (!chosen) {
    if (recorded) throw hashSecretMismatch('none', false);
    return undefined;
  }
  const expected = recorded ?? (stored ? hashSecretFingerprint(stored) : undefined);
  if (expected !== undefined && expected !== hashSecretFingerprint(chosen.secret)) throw hashSecretMismatch(chosen.source, recorded === undefined);
  return chosen;
}

/**
 * resolveHashSecret's refusal, checked before anything of the start reaches out: the flags sync at start
 * points Unleash's webhook at this replica, so a replica that would then refuse to start (another secret,
 * or a Postgres it cannot reach) took the webhook from the running ones (operator drill). Reads only; a
 * database that is not there yet is left to buildApp, which checks again in full.
 */
export async function precheckHashSecret(config: Config): Promise<void> {
  const pool = createPool(config.databaseUrl, { max: 1 });
  try {
    let settings: SecretSettings;
    try {
      settings = await readSecretSettings(pool);
    } catch (err) {
      // Postgres unreachable: this start cannot succeed, so it stops here too, before the flags sync, as
      // buildApp would after it. A database or table not there yet (a first start) is buildApp's to make.
      if (isConnectError(err) && !isFirstStart(err)) throw postgresStartError('DATABASE_URL', config.databaseUrl, err);
      return;
    }
    existingSecret(config, settings);
  } finally {
    await pool.end().catch(() => {});
  }
}

/**
 * Keyed-hash secret: from config, or generated once and kept in the database. The first start records
 * its fingerprint; every later start compares, and refuses (ConfigError) a secret that would not match
 * the credentials already issued. A database from before fingerprints that stores a generated secret is
 * judged against that secret (it is what its credentials were hashed with, unless set otherwise since).
 */
export async function resolveHashSecret(config: Config, pool: Pool, log: { warn(msg: string): void; info(msg: string): void }): Promise<string> {
  let settings: SecretSettings;
  try {
    settings = await readSecretSettings(pool);
  } catch (err) {
    // Postgres unreachable at start (an instance built without migrating): a configured secret is used
    // unchecked. That cannot allow anything: a wrong secret only makes credentials fail (401).
    if (!config.tokenHashSecret) throw err;
    log.warn(`TOKEN_HASH_SECRET: could not read its recorded fingerprint (${(err as Error).message}); using the configured secret unchecked`);
    return config.tokenHashSecret;
  }
  let chosen = existingSecret(config, settings);
  if (!chosen) {
    log.warn('TOKEN_HASH_SECRET is not set: generated one and stored it in the database (set it explicitly in production)');
    chosen = { secret: await credentialStore.putSettingOnce(pool, STORED_SECRET, randomBytes(48).toString('base64url')), source: 'stored' };
  }
  const { secret, source } = chosen;
  const ours = hashSecretFingerprint(secret);
  if (settings.recorded === undefined) {
    // Two replicas starting together on a fresh database with different secrets: the second one loses here.
    if ((await credentialStore.putSettingOnce(pool, SECRET_FINGERPRINT, ours)) !== ours) throw hashSecretMismatch(source, false);
    log.info(`TOKEN_HASH_SECRET: recorded the fingerprint of the ${source === 'configured' ? 'configured' : 'stored'} secret in the database; replicas with another secret now refuse to start`);
  }
  return secret;
}

/** Builds one control-plane instance from plugins. `server.ts` only listens; tests call this too. */
export async function buildApp(config: Config, opts: BuildOptions = {}): Promise<FastifyInstance> {
  // Configuration errors first, before anything connects (`killswitch start` checks them earlier still).
  checkStartConfig(config);
  // TLS_CERT_FILE / TLS_KEY_FILE (and TLS_CLIENT_CA_FILE for mutual TLS): HTTPS on PORT; undefined, plain HTTP.
  const https = serverTlsOptions(config);
  await requirePolicyFile(config.policyFile);
  const log = pino(loggerOptions(config.logLevel), opts.logStream ?? process.stdout);
  if (opts.migrate !== false) {
    const created = await ensureDatabase(config.databaseUrl).catch((err: unknown) => Promise.reject(postgresStartError('DATABASE_URL', config.databaseUrl, err)));
    if (created) log.info({ database: databaseName(config.databaseUrl) }, `created the database ${databaseName(config.databaseUrl)} (DATABASE_URL names one that did not exist)`);
  }
  // Two connections stay open through quiet periods: the first credential lookups after one (the cache
  // has expired) do not wait for a new connection while requests pile up behind them.
  const pool = createPool(config.databaseUrl, { max: config.databasePoolSize, min: 2 });
  // First, so every query and Redis command of this instance is timed and counted (GET /metrics).
  const metrics = new Metrics();
  metrics.instrumentPool(pool, 'main');
  const closers: AppContext['closers'] = [];
  try {
    opts.onPhase?.('the database migrations');
    if (opts.migrate !== false) await migrate(pool, undefined, log).catch((err: unknown) => Promise.reject(postgresStartError('DATABASE_URL', config.databaseUrl, err)));
    const redis = createRedis(config.redisUrl, config.redisPrefix, config.redisTimeoutMs);
    metrics.instrumentRedis(redis.redis);
    closers.push(() => redis.close());
    opts.onPhase?.('connecting to Redis and loading the control plane');
    const redisReachable = await waitForRedis(redis).then(
      () => true,
      (err: unknown) => {
        log.warn({ err: (err as Error).message }, 'Redis not reachable at start; decisions deny until it is');
        return false;
      },
    );
    if (redisReachable) {
      // A Redis in cluster mode, or a REDIS_URL user without a command, key or channel the control plane
      // uses, stops the start (exit 2) with what is missing; a check Redis did not answer does not.
      await checkRedisServer(redis).catch((err: unknown) => {
        if (err instanceof RedisServerError) throw new ConfigError('REDIS_URL', err.message);
        log.warn({ err: (err as Error).message }, 'Redis could not be checked at start (cluster mode, the permissions of REDIS_URL\'s user); decisions deny until Redis answers');
      });
      await warnOnEviction(redis, log);
    }
    const secret = await resolveHashSecret(config, pool, log);
    // Before this start writes audit rows: the copy's newest row says about when it was taken.
    // Informational: an instance that cannot read Postgres at start (as resolveHashSecret allows) goes on.
    const restored = await claimRestoredDatabase(pool).catch((err: unknown) => {
      log.warn({ err: (err as Error).message }, 'could not check whether the database is a restored copy (Postgres unreadable at start); not checked until the next start');
      return undefined;
    });
    if (restored) log.error({ previous_oid: restored.previousOid, oid: restored.oid, newest_audit_row: restored.newestAuditRow }, restoredDatabaseMessage(restored));
    // Measured before anything judges an expiry: a replica whose clock is off uses Postgres's time instead.
    const clock = new ClockOffset(pool, log);
    await clock.start();
    closers.push(async () => clock.stop());
    const auth = new Authenticator(pool, redis, secret, config.tokenCacheTtlMs, log, clock.now);
    await auth.start();
    closers.push(() => auth.stop());
    // Pushed early so it closes late: rows other services enqueue while closing are still flushed, and the
    // writer is flushed before the main pool ends.
    // Pinned to the tables' schema, and checked: a writer Postgres refuses stops the start (ConfigError).
    const writerPool = await openWriterPool(config.databaseUrl, pool);
    metrics.instrumentPool(writerPool, 'audit');
    closers.push(() => writerPool.end().catch(() => {}));
    const audit = await AuditService.start(config, pool, log, { writerPool, clock: clock.now });
    closers.push(() => audit.close());
    // A broken policy file stops the start here, with every error and its line.
    const policy = await PolicyStore.open(config.policyFile, { log });
    // Every reload that takes effect is on the audit trail with the file's hash (who changed what, when).
    const policyLoaded = (hash: string, previousHash: string | null) =>
      audit.recordAdmin({ actor: 'policy-watcher', kind: 'POLICY_RELOAD', action: previousHash ? 'policy.reloaded' : 'policy.loaded', target: `policy:${policy.path}`, details: { hash, previous_hash: previousHash } }).catch(() => {});
    void policyLoaded(policy.current().hash, null);
    policy.onReload((e) => void policyLoaded(e.hash, e.previousHash));
    // ...and every version of the file it refused, once each (policy.rejected, src/policy/store.ts).
    policy.setAdminRecorder((a) => audit.recordAdmin(a));
    closers.push(() => policy.close());
    const alerts = await createAlertService(config, pool, redis, log, clock.now);
    audit.onDefaultPartitionRows(({ rows, oldest, newest }) => {
      const span = oldest && newest ? ` (written for ${oldest.toISOString()} to ${newest.toISOString()})` : '';
      void alerts
        .raiseOnce('audit-default-partition', 86_400, {
          kind: 'AUDIT_PARTITION_MISSING',
          message: `${rows > 100_000 ? 'Over 100,000' : rows} audit rows are in the default partition${span}: their month had no partition when they were written (no replica ran to create it ahead, or a clock far off). They are kept, verified and removed by retention like the others, but that month cannot get its own partition while they are there. docs/audit.md, "Partitions".`,
          numbers: { rows },
        })
        .catch(() => {});
    });
    void audit.checkDefaultPartition();
    audit.onSpoolSetAside((s) => {
      void alerts.raise({
        kind: 'AUDIT_SPOOL_SET_ASIDE',
        message: `${s.rows} audit rows spooled on ${hostname()} continue no hash chain of this database (chain ${s.replicaId} at seq ${s.seq}; restored from an older backup?): set aside in ${s.path}, not replayed. Keep that file with the incident record.`,
        numbers: { rows: s.rows },
      });
    });
    audit.onSpoolingChange((spooling, rows) => {
      if (spooling) void alerts.raise({ kind: 'AUDIT_SPOOLING', message: `Postgres refused audit rows: they go to the local spool (${rows} rows) and are replayed when it is back.`, numbers: { rows } });
    });
    // Once per rejected file across replicas (each replica rejects the same file): the operator sees it in
    // the UI, not only in the logs. A day, so the same broken file put back much later is raised again.
    policy.onReject((e) => {
      const first = e.errors[0] ?? 'unreadable';
      void alerts
        .raiseOnce(`policy-rejected:${e.hash ?? first}`, 86_400, {
          kind: 'POLICY_REJECTED',
          message: `The policy file ${e.path} was rejected (${e.errors.length === 1 ? first : `${first}; and ${e.errors.length - 1} more error(s)`}): the last good policy stays in force until the file is fixed. The log has every error ("policy file rejected").`,
          numbers: { errors: e.errors.length },
          details: { rejected_hash: e.hash, kept_hash: e.keptHash, errors: e.errors.slice(0, 10) },
        })
        .catch(() => {});
    });
    closers.push(() => alerts.stop());
    reportClockChanges(clock, alerts, audit);
    if (restored) {
      void alerts.raise({ kind: 'DATABASE_RESTORED', message: restoredDatabaseMessage(restored), details: { previous_oid: restored.previousOid, oid: restored.oid, newest_audit_row: restored.newestAuditRow?.toISOString() ?? null } });
    }
    // Replicas that decide with different policy files (a rollout spreading, a stale mount) are shown on a
    // timer, never per decision: /readyz warnings, a metric, GET /v1/policy/replicas, and one alert per episode.
    const policyReplicas = new PolicyReplicas(
      redis,
      policy,
      log,
      ({ view, forMs }) => {
        const policies = view.policies.map((p) => `${shortHash(p.hash)} on ${p.replicas} (${view.replicas.filter((r) => r.hash === p.hash).map((r) => r.host).join(', ')})`);
        void alerts.raise({
          kind: 'POLICY_DIVERGED',
          message: `Replicas decide with ${view.policies.length} different policy files (for ${Math.round(forMs / 1000)} s): ${policies.join('; ')}. A call is decided by whichever replica it reaches. Make every replica's POLICY_FILE the same (GET /v1/policy/replicas lists them).`,
          numbers: { policies: view.policies.length, replicas: view.replicas.length },
          details: { policies: view.policies, replicas: view.replicas.slice(0, 50).map((r) => ({ replica_id: r.replica_id, host: r.host, pid: r.pid, hash: r.hash, loaded_at: r.loaded_at.toISOString() })) },
        });
      },
      opts.policyReplicas,
    );
    policyReplicas.start();
    closers.push(() => policyReplicas.stop());
    // Waits (bounded) for the first flags, so a fresh instance does not deny its first calls needlessly.
    const flags = new FlagService(config, log, redis, (a) => void alerts.raise(a));
    closers.push(() => flags.stop());
    if (opts.flagsAtStart) flags.seedDenies(opts.flagsAtStart);
    opts.onPhase?.('the wait for the first flags from Unleash, at most UNLEASH_START_WAIT_MS');
    await flags.start();
    opts.onPhase?.('loading the control plane');
    // UNLEASH_WEBHOOK_SECRET, else the one stored in the database (generated here on a first start).
    // Unreadable: the webhook receiver refuses every event until it can be read (fail closed).
    const webhookSecret = new WebhookSecretHolder(config, pool, (err) =>
      log.error({ err: (err as Error).message }, 'flags: cannot read the webhook secret from the database: POST /v1/flags/events refuses every event until it can (flag changes still arrive by polling)'),
    );
    if ((await webhookSecret.load())?.source === 'generated') {
      log.warn('UNLEASH_WEBHOOK_SECRET is not set: generated a webhook secret and stored it in the database (every replica and `killswitch flags sync` with DATABASE_URL use it)');
    }
    // Sessions and halts: the state epoch reloads Redis from Postgres after a restart or flush.
    const sessions = new SessionService(pool, redis, log, {
      idleTimeoutMs: config.sessionIdleTimeoutS * 1000,
      maxOpenPerToken: config.sessionMaxOpenPerToken,
      maxNewPerHour: config.sessionMaxNewPerHour,
      journalDir: config.dataDir,
      database: databaseName(config.databaseUrl),
      now: clock.now,
    });
    sessions.setAdminRecorder((r) => audit.recordAdmin(r));
    sessions.setAlerts(alerts);
    sessions.setCapsSource(() => {
      const t = policy.current().limits.token;
      // The policy's caps; where it names none, SESSION_MAX_OPEN_PER_TOKEN / SESSION_MAX_NEW_PER_HOUR.
      return {
        maxOpen: t.maxOpenSessions === undefined ? config.sessionMaxOpenPerToken : t.maxOpenSessions,
        maxNewPerHour: t.maxNewSessionsPerHour === undefined ? config.sessionMaxNewPerHour : t.maxNewSessionsPerHour,
      };
    });
    // Kills reload with the sessions: registered before the first reload can set the epoch without them.
    registerKillLoader(sessions.epoch, pool, redis);
    sessions.start();
    closers.push(() => sessions.stop());
    const gate = new RedisGate(redis, {
      sessionIdleMs: config.sessionIdleTimeoutS * 1000,
      decisionTtlMs: config.decisionMetaTtlS * 1000,
      onMissingEpoch: () => sessions.epoch.requestReload(),
      stateVerified: () => sessions.epoch.stateVerified,
    });
    // The decision services (tools, grants, decisions, results, explainer, callability) are added by
    // decisionsPlugin below, which needs this context to build the pipeline.
    const ctx = {
      config,
      log,
      pool,
      redis,
      auth,
      clock,
      credentials: new CredentialService(pool, auth, audit, alerts, clock.now),
      audit,
      policy,
      policyReplicas,
      alerts,
      flags,
      webhookSecret,
      sessions,
      gate,
      readiness: new Map(),
      closers,
      metrics,
    } as AppContext;

    const bodyAjv = buildAjv(false);
    const otherAjv = buildAjv(true);
    const app = Fastify({
      loggerInstance: log as FastifyBaseLogger,
      bodyLimit: config.bodyLimitBytes,
      // Fastify's default is no limit: a client trickling a body (or never finishing it, before or after a
      // 401) held its connection for ever (serverTimeouts).
      requestTimeout: config.requestTimeoutMs,
      http: serverTimeouts(config.requestTimeoutMs),
      logController: new LogController({ disableRequestLogging: true }),
      childLoggerFactory: lazyChildLogger,
      // X-Request-Id is read by genReqId, which refuses one that is too long or not printable.
      requestIdHeader: false,
      genReqId: requestIdGenerator(),
      // req.ip (audit rows' `ip`) is X-Forwarded-For's client only behind a proxy named in TRUST_PROXY.
      trustProxy: config.trustProxy.length > 0 ? config.trustProxy : false,
      frameworkErrors,
      clientErrorHandler,
      ajv: { customOptions: { removeAdditional: false } },
      // The https.Server has every method of the http.Server the rest of the code uses (closeIdleConnections ...).
      ...(https ? { https: { ...https, ...serverTimeouts(config.requestTimeoutMs) } } : {}),
    }).withTypeProvider<TypeBoxTypeProvider>();
    app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? bodyAjv : otherAjv).compile(lowercaseUuids(schema) as object));
    app.decorate('ctx', ctx);
    decorateCredentials(app);
    // The API speaks JSON only: anything else is 415, not a string the schema then rejects.
    app.removeContentTypeParser('text/plain');
    installErrorHandler(app);
    // A revoked or expired credential presented leaves an AUTH_FAILURE row (rate-limited; src/http/auth.ts).
    new RefusedCredentials(audit, log).install(app);
    // Before any route: 413/415/503 declared on every route that can answer them (OpenAPI, docs/api.md).
    declareCommonErrors(app);
    installHttpMetrics(app, metrics);
    installResponseHeaders(app);

    await app.register(swagger, {
      openapi: {
        // The version is package.json's (openapi-contract.test.ts compares them).
        info: {
          title: 'MCP kill switch control plane',
          version: '0.1.0',
          description: 'Decision API for MCP gateways and admin API for operators.',
          license: { name: 'Apache-2.0', url: 'https://www.apache.org/licenses/LICENSE-2.0' },
        },
        // Relative: the control plane that serves this document (/docs/openapi.json), wherever it is reached.
        servers: [{ url: '/', description: 'The control plane serving this document' }],
        components: {
          securitySchemes: {
            bearer: { type: 'http', scheme: 'bearer', description: 'Operator key (ksop_) on the admin API; gateway key (ksgw_) on gateway routes.' },
            agentToken: { type: 'apiKey', in: 'header', name: 'X-Agent-Token' },
            unleashWebhookSecret: {
              type: 'apiKey',
              in: 'header',
              name: 'Authorization',
              description: 'POST /v1/flags/events only: the Unleash webhook secret as the whole Authorization value, without `Bearer` (UNLEASH_WEBHOOK_SECRET, or the one stored at the first start).',
            },
          },
        },
        security: [{ bearer: [] }],
      },
      transformObject: optionalBodies,
    });
    app.get('/docs/openapi.json', { schema: { hide: true } }, async () => app.swagger());

    await app.register(healthRoutes);
    await app.register(credentialRoutes);
    await app.register(sessionRoutes);
    await app.register(auditRoutes);
    ctx.readiness.set('audit', async () => audit.readiness());
    await app.register(flagRoutes);
    ctx.readiness.set('flags', async () => (flags.isReady() ? true : 'flags not loaded from Unleash (decisions deny)'));
    await app.register(alertRoutes);
    await app.register(policyRoutes);
    await decisionsPlugin(app);
    await operabilityPlugin(app, { spanExporter: opts.spanExporter });
    await app.register(uiRoutes);

    // Node closes idle keep-alive connections once, when the server starts closing; a connection busy with a
    // request at that instant (a decision, an Unleash webhook post) would then stay open for the keep-alive
    // timeout after its answer. Reaping idle connections until the server has closed makes a drain last as
    // long as the slowest request. (Only a listening server ever emits 'close'.)
    app.addHook('preClose', async () => {
      if (!app.server.listening) return;
      const reaper = setInterval(() => app.server.closeIdleConnections(), 50);
      reaper.unref();
      app.server.once('close', () => clearInterval(reaper));
    });
    app.addHook('onClose', async () => {
      for (const close of [...closers].reverse()) await close().catch((err) => log.warn({ err }, 'error while closing'));
      await pool.end();
    });
    // Every state loader (sessions, halts, kills, approvals) is registered by now: load Redis before the
    // first request so a fresh instance does not deny its first calls with DEPENDENCY_UNAVAILABLE.
    // Bounded: with Redis down the instance still starts, and decisions deny until the epoch is set.
    await Promise.race([ctx.sessions.ensureState().catch(() => 'unavailable'), new Promise((r) => setTimeout(r, 5_000).unref())]);
    return app;
  } catch (err) {
    for (const close of closers.reverse()) await close().catch(() => {});
    await pool.end().catch(() => {});
    throw err;
  }
}

/** On a database without operator keys, creates the first owner key (from BOOTSTRAP_OWNER_KEY or generated) and returns it once: to one replica of those starting together. */
export async function bootstrapOwner(app: FastifyInstance): Promise<string | undefined> {
  const { ctx } = app;
  return (await ctx.credentials.createFirstOwnerKey(ctx.config.bootstrapOwnerKey))?.key;
}
