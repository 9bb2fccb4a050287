import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { bootstrapOwner, buildApp, postgresStartError, precheckHashSecret } from './app.js';
import { type Config, wellKnownSecretsInUse } from './config.js';
import { otherSecretWarning } from './flags/registration.js';
import { flagsAtStartFromEnv, prepareUnleash, webhookUrl } from './flags/setup.js';
import { superviseWith } from './flags/supervisor.js';
import { loggerOptions } from './log.js';
import { listenMetrics } from './metrics/routes.js';
import { exitCodeOf, stopSignalHandler } from './signals.js';
import type { StartStop } from './start-stop.js';
import { leaveOwnerKey, warnIfOwnerKeyLeft } from './tokens/owner-key-file.js';

/**
 * Builds the app and listens; on an empty database, leaves the bootstrap owner key in DATA_DIR. A worker of
 * WORKERS > 1 (`worker: true`) skips the Unleash step: its primary ran it (src/cluster.ts).
 */
export interface StartOptions {
  /** A worker of WORKERS > 1: its primary has run the embedded Unleash and the flags sync. */
  worker?: boolean;
  /**
   * Called with the built app just before its port accepts connections: where the signal handlers go, so
   * that a signal sent once the port answers (a readiness probe passed) finds the drain in place.
   */
  beforeListen?: (app: FastifyInstance) => void;
  /**
   * A signal while the start runs (src/start-stop.ts): told each phase, it names the one a signal stopped,
   * stops the embedded Unleash, and lets the first owner key reach DATA_DIR before the process exits.
   */
  stop?: StartStop;
}

export async function startServer(startConfig: Config, opts: StartOptions = {}): Promise<FastifyInstance> {
  // A secret the database would refuse stops the start before the flags sync moves Unleash's webhook here.
  const { stop } = opts;
  stop?.enter('the check of TOKEN_HASH_SECRET against the database');
  if (!opts.worker) await precheckHashSecret(startConfig);
  // Unleash first (embedded unless UNLEASH_URL is set) and the flags sync, so the control plane starts with every flag.
  const { config, embedded, flagsAtStart } = opts.worker
    ? { config: startConfig, embedded: undefined, flagsAtStart: flagsAtStartFromEnv() }
    : await prepareUnleash(startConfig, pino(loggerOptions(startConfig.logLevel)), stop).catch((err: unknown) => Promise.reject(unleashStartError(startConfig, err)));
  let app: FastifyInstance;
  try {
    app = await buildApp(config, { flagsAtStart, ...(stop ? { onPhase: (phase: string) => stop.enter(phase) } : {}) });
  } catch (err) {
    await embedded?.stop();
    throw err;
  }
  // From here on a stop also closes the app (its pools, Redis; onClose stops the embedded Unleash).
  stop?.onStop(() => app.close());
  if (embedded) superviseWith(app, embedded);
  const published = wellKnownSecretsInUse(config);
  if (published.length > 0) {
    app.log.warn(
      { settings: published, host: config.host },
      `listening on HOST=${config.host} with well-known default values of ${published.join(', ')}: anyone who reaches these ports could log in to Unleash and turn a flag back on, or forge its webhook. Set them (docs/configuration.md) before exposing the service beyond this machine.`,
    );
  }
  // An installation upgraded from the published default whose start could not re-register the webhook
  // (an external Unleash without the admin token): its events are now refused; say what to run.
  const otherSecret = otherSecretWarning(await app.ctx.flags.webhookRegistration(await app.ctx.webhookSecret.current()), webhookUrl(config));
  if (otherSecret) app.log.warn(otherSecret);
  // Created in the database, then written to DATA_DIR: a signal in between must not leave a key that
  // exists nowhere an operator can read it (the next start makes none: the database has one).
  const leaveKey = async () => {
    const ownerKey = await bootstrapOwner(app);
    // Never on stdout or stderr: log shippers keep those. BOOTSTRAP_OWNER_KEY's operator knows the key already.
    if (ownerKey && !config.bootstrapOwnerKey) await leaveOwnerKey(ownerKey, config.dataDir, app.log);
    else if (!ownerKey) await warnIfOwnerKeyLeft(config.dataDir, app.log);
  };
  stop?.enter('the first owner key');
  await (stop ? stop.uninterrupted(leaveKey) : leaveKey());
  stop?.enter('opening the port');
  opts.beforeListen?.(app);
  await app.listen({ host: config.host, port: config.port });
  await listenMetrics(app);
  return app;
}

/**
 * A failed start of the embedded Unleash, told with UNLEASH_DATABASE_URL when it could not reach its
 * Postgres (the only database it connects to before its child process runs). For `killswitch start` with
 * WORKERS > 1 too, whose primary starts the embedded Unleash.
 */
export function unleashStartError(config: Config, err: unknown): unknown {
  return config.unleashUrl === '' ? postgresStartError('UNLEASH_DATABASE_URL', config.unleashDatabaseUrl, err) : err;
}

/** Extra time after SHUTDOWN_TIMEOUT_MS for the audit flush and the closing of clients before we give up. */
export const CLOSE_GRACE_MS = 15_000;

/**
 * Graceful shutdown on SIGTERM/SIGINT: stop accepting connections (requests on open connections get
 * 503), let in-flight requests finish (at most SHUTDOWN_TIMEOUT_MS, then their connections are cut), then
 * close the services in reverse order of start: the audit queue flushed to Postgres (or the spool) and
 * the spool replayed once more, the Unleash client, Redis, Postgres. A second signal exits at once (the
 * first one repeated within SIGNAL_REPEAT_MS is not a second one).
 */
/**
 * The last line of a shutdown. Info when every audit row reached Postgres; at LOG_LEVEL=warn or error
 * it still shows when rows wait in the spool (warn: replayed at the next start) or were lost (error).
 */
export function stoppedLine(writer: { spoolSize: number; lost: number }): { level: 'info' | 'warn' | 'error'; msg: string } {
  const base = 'stopped: in-flight requests finished, audit trail flushed, Unleash, Redis and Postgres closed';
  if (writer.lost > 0) return { level: 'error', msg: `${base}; ${writer.lost} audit row(s) could be written neither to Postgres nor to the spool and are lost` };
  if (writer.spoolSize > 0) return { level: 'warn', msg: `${base}; ${writer.spoolSize} audit row(s) wait in the spool under DATA_DIR (Postgres did not take them) and are replayed at the next start` };
  return { level: 'info', msg: base };
}

export function stopOnSignals(
  app: FastifyInstance,
  exit: (code: number) => void = (code) => process.exit(code),
  signals: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM'],
): (signal: NodeJS.Signals) => void {
  const timeoutMs = app.ctx.config.shutdownTimeoutMs;
  const second = (signal: NodeJS.Signals) => {
    app.log.error({ signal }, 'second signal: exiting now without finishing the shutdown (audit rows still in memory are lost; rows in the spool are replayed at the next start)');
    exit(exitCodeOf(signal));
  };
  const onSignal = stopSignalHandler(app.log, (signal) => {
    const started = Date.now();
    const writer = app.ctx.audit.writer;
    app.log.info({ signal, timeout_ms: timeoutMs, audit_queue: writer.queueDepth }, 'shutting down: no new connections, finishing in-flight requests, then flushing the audit trail (a second signal exits at once)');
    const cut = setTimeout(() => {
      app.log.warn({ timeout_ms: timeoutMs }, 'shutdown: requests still running after SHUTDOWN_TIMEOUT_MS; cutting their connections');
      app.server.closeAllConnections();
    }, timeoutMs);
    cut.unref();
    const giveUp = setTimeout(() => {
      app.log.error({ after_ms: Date.now() - started }, 'shutdown: closing did not finish; exiting');
      exit(1);
    }, timeoutMs + CLOSE_GRACE_MS);
    giveUp.unref();
    app.close().then(
      () => {
        clearTimeout(cut);
        clearTimeout(giveUp);
        const line = stoppedLine(writer);
        app.log[line.level](
          { ms: Date.now() - started, audit_rows_written: writer.written, audit_batches: writer.batches, audit_spool_rows: writer.spoolSize, audit_rows_lost: writer.lost },
          line.msg,
        );
        exit(0);
      },
      (err: unknown) => {
        app.log.error({ err }, 'shutdown failed');
        exit(1);
      },
    );
  }, second);
  for (const signal of signals) process.on(signal, onSignal);
  // A signal that came while the app was starting, before these handlers (a worker of WORKERS > 1).
  return onSignal;
}
