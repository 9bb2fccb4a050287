import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Config } from '../config.js';
import { type MigrationLog, migrate } from '../db/migrate.js';
import { createPool, ensureDatabase, type Pool } from '../db/pool.js';
import { credentialStore } from '../tokens/store.js';

// The secret Unleash's webhook integration sends (Authorization) and POST /v1/flags/events requires.
// UNLEASH_WEBHOOK_SECRET when set; otherwise the first start generates one and keeps it in the control
// plane's database (settings row below), as it does TOKEN_HASH_SECRET: every replica, the start's webhook
// registration and `killswitch flags sync` from any shell with DATABASE_URL then use the same one. There
// is no published default: with one, anyone who reaches the port could post a forged disable event.

/** Settings row of the secret a control plane without UNLEASH_WEBHOOK_SECRET generated. */
export const STORED_WEBHOOK_SECRET = 'unleash_webhook_secret';

export type WebhookSecretSource = 'configured' | 'stored' | 'generated';

/**
 * The webhook secret: UNLEASH_WEBHOOK_SECRET, else the one stored in the database, else (with `create`)
 * a new one stored there; the first of two replicas storing one at once wins, and both use its secret.
 * Undefined only without `create`, when none is stored. Throws when the database cannot be read.
 */
export async function webhookSecret(config: Pick<Config, 'unleashWebhookSecret'>, db: Pool, create: boolean): Promise<{ secret: string; source: WebhookSecretSource } | undefined> {
  if (config.unleashWebhookSecret) return { secret: config.unleashWebhookSecret, source: 'configured' };
  const stored = await credentialStore.getSetting(db, STORED_WEBHOOK_SECRET);
  if (stored) return { secret: stored, source: 'stored' };
  if (!create) return undefined;
  const mine = randomBytes(32).toString('base64url');
  const winner = await credentialStore.putSettingOnce(db, STORED_WEBHOOK_SECRET, mine);
  return { secret: winner, source: winner === mine ? 'generated' : 'stored' };
}

/**
 * For the start (`killswitch start`, the WORKERS primary), whose flags sync registers the webhook before
 * the app is built: the database is created and migrated first (as buildApp does, under the same advisory
 * lock), so the first start of an installation registers the secret its replicas will accept.
 */
export async function webhookSecretForStart(config: Config, log?: MigrationLog): Promise<{ secret: string; source: WebhookSecretSource; storedDiffers?: boolean }> {
  if (config.unleashWebhookSecret) return { secret: config.unleashWebhookSecret, source: 'configured', ...((await configuredDiffersFromStored(config)) ? { storedDiffers: true } : {}) };
  await ensureDatabase(config.databaseUrl);
  const pool = createPool(config.databaseUrl, { max: 1, applicationName: 'killswitch-start' });
  try {
    await migrate(pool, undefined, log);
    return (await webhookSecret(config, pool, true))!;
  } finally {
    await pool.end().catch(() => {});
  }
}

/**
 * Whether the database stores a generated secret other than UNLEASH_WEBHOOK_SECRET: the one replicas
 * without UNLEASH_WEBHOOK_SECRET accept, whose events a start registering the configured one would cut
 * off. False when it cannot be read (a first start, Postgres down: the start stops on that anyway).
 */
async function configuredDiffersFromStored(config: Config): Promise<boolean> {
  const pool = createPool(config.databaseUrl, { max: 1, applicationName: 'killswitch-start' });
  try {
    const stored = await credentialStore.getSetting(pool, STORED_WEBHOOK_SECRET);
    return stored !== undefined && stored !== config.unleashWebhookSecret;
  } catch {
    return false;
  } finally {
    await pool.end().catch(() => {});
  }
}

/**
 * For `killswitch flags sync` in an operator's shell: UNLEASH_WEBHOOK_SECRET, else the one stored in the
 * database DATABASE_URL names. Never a new one (the control plane would not know it), and never a migration
 * (the shell's version may be newer than the control plane's). Says why when there is none.
 */
export async function webhookSecretForShell(config: Config): Promise<{ secret: string; source: WebhookSecretSource } | { error: string }> {
  if (config.unleashWebhookSecret) return { secret: config.unleashWebhookSecret, source: 'configured' };
  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 1, connectionTimeoutMillis: 5_000 });
  pool.on('error', () => {});
  try {
    const found = await webhookSecret(config, pool, false);
    return found ?? { error: "UNLEASH_WEBHOOK_SECRET is not set and the control plane's database (DATABASE_URL) stores no generated webhook secret (no control plane without UNLEASH_WEBHOOK_SECRET has started on it)" };
  } catch (err) {
    const e = err as Error & { code?: string };
    const why = e.code === '42P01' ? 'it is not migrated (no control plane has started on it)' : e.message || e.code || String(err);
    return { error: `UNLEASH_WEBHOOK_SECRET is not set and the control plane's database (DATABASE_URL) could not be read for the webhook secret stored there: ${why}` };
  } finally {
    await pool.end().catch(() => {});
  }
}

/**
 * The secret one control-plane instance accepts, read once at build. Until it has been read (Postgres
 * down at that moment), `current()` answers undefined — the receiver then refuses every event (the poll
 * still brings flag changes) — and tries again at most every RETRY_MS.
 */
export class WebhookSecretHolder {
  static readonly RETRY_MS = 5_000;
  private secret: string | undefined;
  private lastTry = 0;
  private pending: Promise<void> | undefined;

  constructor(
    private readonly config: Pick<Config, 'unleashWebhookSecret'>,
    private readonly pool: Pool,
    private readonly onError: (err: unknown) => void,
  ) {
    this.secret = config.unleashWebhookSecret || undefined;
  }

  /** Reads (or generates) it; never throws. */
  async load(): Promise<{ secret: string; source: WebhookSecretSource } | undefined> {
    this.lastTry = Date.now();
    try {
      const found = await webhookSecret(this.config, this.pool, true);
      this.secret = found?.secret;
      return found;
    } catch (err) {
      this.onError(err);
      return undefined;
    }
  }

  /** The secret, or undefined when it cannot be read (fail closed). */
  async current(): Promise<string | undefined> {
    if (this.secret) return this.secret;
    if (!this.pending && Date.now() - this.lastTry >= WebhookSecretHolder.RETRY_MS) {
      this.pending = this.load().then(() => {
        this.pending = undefined;
      });
    }
    await this.pending;
    return this.secret;
  }
}
