import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { type Config, ConfigError, flagsAtStartFromPrimary } from '../config.js';
import { outboundDispatcher } from '../http/outbound.js';
import { loadPolicyFile, PolicyFileError, policyFlagNames } from '../policy/index.js';
import type { StartStop } from '../start-stop.js';
import { UnleashAdmin } from './admin-client.js';
import { desiredFlags, loadFlagDefinitions, type PolicyFlagNames } from './definitions.js';
import { embeddedOptionsFromConfig, publishedAdminDefaults, startEmbeddedUnleash } from './embedded.js';
import { loadRegistration, type RegistrationBy, type RegistrationRecord, registrationError, registrationRecord, saveRegistration, takeoverWarning } from './registration.js';
import type { StartFlagsRead } from './service.js';
import { SupervisedUnleash } from './supervisor.js';
import { describeSyncReport, type SyncReport, syncFlags, type WebhookMode } from './sync.js';
import { underFlagsSyncLock } from './sync-lock.js';
import { webhookSecretForStart } from './webhook-secret.js';

// Glue used by `killswitch start`, `killswitch flags sync`, `killswitch unleash`, the test setup and the
// kill-switch benchmark: where the flag files are, which Unleash to talk to, and the sync run itself.

/** flags/ at the repository root (independent of the working directory). */
export const FLAGS_DIR = fileURLToPath(new URL('../../flags', import.meta.url));

/** The Unleash API base: UNLEASH_URL, or the embedded one on UNLEASH_PORT. */
export function unleashApiUrl(config: Config): string {
  return config.unleashUrl || `http://127.0.0.1:${config.unleashPort}/api`;
}

/**
 * Where Unleash posts flag events: PUBLIC_URL, else http://HOST:PORT (https:// when the API is served with
 * TLS_CERT_FILE). Right in the control plane's own process; in an operator's shell only if it has the
 * control plane's environment (see WebhookMode).
 */
export function webhookUrl(config: Config): string {
  const scheme = config.tlsCertFile ? 'https' : 'http';
  const base = config.publicUrl || `${scheme}://${config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host}:${config.port}`;
  return `${base.replace(/\/+$/, '')}/v1/flags/events`;
}

/**
 * Why the start registers no webhook although it could, or undefined. With TLS_CLIENT_CA_FILE the API
 * completes a TLS handshake only with a client certificate, and Unleash's webhook never presents one: at
 * HOST:PORT every event would be refused. PUBLIC_URL set is the operator saying Unleash reaches the control
 * plane there (a proxy that holds a client certificate), so it is registered as usual.
 */
export function webhookUndeliverable(config: Config): string | undefined {
  if (!config.tlsClientCaFile || config.publicUrl) return undefined;
  return 'the Unleash webhook is not registered: TLS_CLIENT_CA_FILE makes the API require a client certificate, which Unleash\'s webhook cannot present, and PUBLIC_URL (a proxy Unleash can post to) is not set. Flag changes arrive by polling only (within about 2 s); docs/operations.md, "TLS"';
}

/** Servers and extra flags of a policy file (throws PolicyFileError, with every issue, when it is broken). */
export async function flagNamesFromPolicyFile(file: string): Promise<PolicyFlagNames> {
  const result = await loadPolicyFile(file);
  if (!result.ok) throw new PolicyFileError(file, result.issues, result.omittedErrors);
  return policyFlagNames(result.policy);
}

export interface SyncRun {
  names: PolicyFlagNames;
  /** Default: FLAGS_DIR. */
  flagsDir?: string;
  /** Default: unleashApiUrl(config). */
  apiUrl?: string;
  /** Default: webhookUrl(config); null skips the webhook registration. */
  webhookUrl?: string | null;
  /**
   * Default `own`: the caller is the receiver at that URL with the configuration's secret (the control
   * plane at start, the test setup, the benchmark). `keep` for an operator's shell (see WebhookMode).
   */
  webhookMode?: WebhookMode;
  /**
   * Record the webhook registration's outcome in the configuration's Redis, for GET /v1/flags on every
   * replica (registration.ts): the control plane's start and `flags sync`, not the test setup or the
   * benchmark. `onError` hears when it cannot be recorded.
   */
  record?: { by: RegistrationBy; onError: (message: string) => void };
  /** The secret to register: the one resolved by webhook-secret.ts. Default: UNLEASH_WEBHOOK_SECRET. */
  webhookSecret?: string;
}

/** `flags sync` with the configuration's Unleash, environment, admin token and webhook secret. */
export async function syncFromConfig(config: Config, run: SyncRun): Promise<SyncReport> {
  const defs = await loadFlagDefinitions(run.flagsDir ?? FLAGS_DIR);
  const hook = run.webhookUrl === undefined ? webhookUrl(config) : run.webhookUrl;
  const secret = run.webhookSecret ?? config.unleashWebhookSecret;
  // Never a webhook without a secret: the receiver would refuse every event it posts.
  if (hook && !secret) throw new Error('no webhook secret to register: UNLEASH_WEBHOOK_SECRET is not set and none was read from the database');
  let attempt: RegistrationRecord | undefined;
  // Through HTTPS_PROXY / HTTP_PROXY for an Unleash on another host, as the flag polls go; closed after.
  const dispatcher = outboundDispatcher(config);
  try {
    return await syncFlags({
      admin: new UnleashAdmin(run.apiUrl ?? unleashApiUrl(config), config.unleashAdminToken, undefined, dispatcher),
      environment: config.unleashEnvironment,
      flags: desiredFlags(defs, run.names),
      servers: run.names.servers,
      webhook: hook && secret ? { url: hook, secret, mode: run.webhookMode ?? 'own' } : undefined,
      onWebhook: (w) => {
        if (!hook || !secret || !run.record) return;
        if (!w.ok) attempt = registrationRecord(run.record.by, hook, secret, { ok: false, error: registrationError(w.error) });
        // `kept` (a shell that left another URL or secret alone) changed and confirmed nothing: not an attempt to show.
        else if (w.outcome.result === 'created' || w.outcome.result === 'updated' || w.outcome.result === 'unchanged') {
          attempt = registrationRecord(run.record.by, hook, secret, { ok: true, result: w.outcome.result });
        }
      },
    });
  } finally {
    await dispatcher?.close().catch(() => {});
    if (attempt && run.record) {
      const failed = await saveRegistration(config, attempt);
      if (failed) run.record.onError(failed);
    }
  }
}

/**
 * A worker's `flagsAtStart`, from the JSON its primary handed over (src/cluster.ts; read by
 * flagsAtStartFromPrimary in src/config.ts). Undefined when absent or unreadable: nothing is seeded.
 */
export function flagsAtStartFromEnv(raw: string | undefined = flagsAtStartFromPrimary()): StartFlagsRead | undefined {
  if (!raw) return undefined;
  try {
    const v = JSON.parse(raw) as Partial<StartFlagsRead>;
    const names = (x: unknown): x is string[] => Array.isArray(x) && x.every((n) => typeof n === 'string');
    if (!names(v.off) || !names(v.archived) || typeof v.at !== 'number') return undefined;
    return { off: v.off, archived: v.archived, at: v.at };
  } catch {
    return undefined;
  }
}

/**
 * For `killswitch start`: runs the embedded Unleash (supervised) unless UNLEASH_URL is set, then the flags sync for
 * the policy file. Returns the configuration pointing at that Unleash, and the embedded server to stop.
 * A failed sync is logged, not fatal: decisions deny for any flag that is missing. A broken policy file
 * throws PolicyFileError first, before anything starts: the start stops on it anyway (buildApp).
 */
export async function prepareUnleash(
  config: Config,
  log: Logger,
  stop?: StartStop,
): Promise<{ config: Config; embedded: SupervisedUnleash | undefined; flagsAtStart: StartFlagsRead | undefined }> {
  const names = await flagNamesFromPolicyFile(config.policyFile);
  let embedded: SupervisedUnleash | undefined;
  let effective = config;
  if (!config.unleashUrl) {
    const options = embeddedOptionsFromConfig(config);
    stop?.enter('the start of the embedded Unleash, which creates its tables on a first start');
    // A signal now gives the start up and stops the child (src/start-stop.ts); one later stops it too.
    const starting = startEmbeddedUnleash({ ...options, ...(stop ? { signal: stop.signal, onSpawn: (pid: number) => void stop.child(pid) } : {}) }, log);
    stop?.onStop(async () => {
      await starting.catch(() => {});
      await embedded?.stop();
    });
    // Restarted when it exits while the control plane runs (supervisor.ts); a failed first start stops the start.
    embedded = new SupervisedUnleash(await starting, options, log);
    stop?.throwIfStopped();
    effective = { ...config, unleashUrl: embedded.apiUrl };
    const published = publishedAdminDefaults(config);
    // The published default is no secret (README, docs): a first-time user need not look it up.
    const password = published.includes('UNLEASH_ADMIN_PASSWORD') ? `password ${config.unleashAdminPassword}, the published default: set UNLEASH_ADMIN_PASSWORD` : 'password from UNLEASH_ADMIN_PASSWORD';
    log.info({ ui: embedded.uiUrl, user: 'admin' }, `Unleash UI: ${embedded.uiUrl} (user admin, ${password})`);
    if ((config.host === '0.0.0.0' || config.host === '::') && published.length > 0) {
      log.warn(
        { settings: published, unleash_host: '127.0.0.1' },
        `the embedded Unleash listens on 127.0.0.1 only although HOST=${config.host}: ${published.join(' and ')} still hold published default values, with which anyone reaching its port could turn a flag back on. Set them (docs/configuration.md) to reach its UI from other machines.`,
      );
    }
  }
  // Unset UNLEASH_WEBHOOK_SECRET: the one stored in the database (generated by the first start), which
  // every replica accepts. Unreadable: no webhook is registered (buildApp then fails on that database too).
  let secret: string | undefined;
  let storedDiffers = false;
  stop?.enter('the database migrations and the webhook secret');
  try {
    const found = await webhookSecretForStart(config, log);
    secret = found.secret;
    storedDiffers = found.storedDiffers === true;
    if (found.source === 'generated') log.warn('UNLEASH_WEBHOOK_SECRET is not set: generated a webhook secret and stored it in the database (every replica and `killswitch flags sync` with DATABASE_URL use it)');
  } catch (err) {
    // The database refuses what the start needs (privileges, src/db/privileges.ts): the start stops here,
    // before the sync registers anything, with the message that says what the DBA runs.
    if (err instanceof ConfigError) {
      await embedded?.stop();
      throw err;
    }
    log.error({ err: (err as Error).message }, 'flags: the webhook secret could not be read from or stored in the database (DATABASE_URL): the Unleash webhook is not registered at this start');
  }
  // What the sync reads from the admin API, for buildApp: a flag off there is denied from the first
  // decision whatever the flag backup says (undefined when the sync failed).
  let flagsAtStart: StartFlagsRead | undefined;
  const undeliverable = webhookUndeliverable(config);
  if (undeliverable) log.warn(undeliverable);
  else if (secret) {
    // Before the sync re-registers it: the record says who registered it last, and with which secret.
    const url = webhookUrl(config);
    const takeover = takeoverWarning({ storedDiffers, before: await loadRegistration(config, { url, secret }), url });
    if (takeover) log.error(takeover);
  }
  stop?.enter('the flags sync with Unleash');
  try {
    // One replica's sync at a time (sync-lock.ts): replicas starting together would each register a webhook.
    const { at, report } = await underFlagsSyncLock(
      config.databaseUrl,
      async () => {
        const at = Date.now();
        const report = await syncFromConfig(effective, {
          ...(secret && !undeliverable ? { webhookSecret: secret } : { webhookUrl: null }),
          names,
          record: {
            by: 'start',
            onError: (err) => log.warn({ err }, 'flags: cannot record the webhook registration in Redis: GET /v1/flags does not show it until the next start or flags sync'),
          },
        });
        return { at, report };
      },
      {
        onLocked: (waitedMs) => {
          if (waitedMs >= 1_000) log.info({ waited_ms: waitedMs }, "flags: waited for another replica's flags sync to finish");
        },
        onUnlocked: (err) => log.warn({ err }, "flags: could not take the flags sync lock in the database (DATABASE_URL): syncing without it (replicas starting together may each register the webhook; the later ones turn theirs off)"),
      },
    );
    for (const line of describeSyncReport(report, config.unleashEnvironment)) log.info(line);
    // Created off (recreated, or new with an unreadable event log) is off too; a flag in another project is missing for us.
    flagsAtStart = { off: [...report.off, ...report.recreatedOff, ...report.createdOff], archived: [...report.archived, ...report.elsewhere], at };
  } catch (err) {
    // A signal stopped the embedded Unleash under the sync: that is the stop, not a failed sync.
    stop?.throwIfStopped();
    log.error({ err: (err as Error).message }, 'flags sync failed at start; calls needing a missing flag are denied until `npm run flags:sync` succeeds');
  }
  return { config: effective, embedded, flagsAtStart };
}
