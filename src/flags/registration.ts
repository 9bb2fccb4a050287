import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { Config } from '../config.js';
import { normalizeWebhookUrl, secretFingerprint } from './sync.js';

// Whether Unleash knows where to post flag events. Only the process that registers the webhook learns
// whether that worked (the control plane's start, the WORKERS primary, an operator's `flags sync`), and
// the replicas that show it (GET /v1/flags) cannot ask Unleash: they hold only a backend token, which
// cannot read integrations. So each registration attempt is recorded in Redis, under the installation's
// prefix, where every replica reads it (docs/adr/0011-webhook-registration-record.md).
//
// Two records: the latest attempt, and the latest success. A failed attempt removes nothing from Unleash,
// so an earlier success stays worth showing next to it.

export type RegistrationBy = 'start' | 'flags sync';

export interface RegistrationRecord {
  /** Epoch ms of the attempt. */
  at: number;
  by: RegistrationBy;
  host: string;
  /** The receiver URL registered (or asked for), normalised as sync stores it. */
  url: string;
  /** secretFingerprint() of the secret registered with it. */
  secret: string;
  ok: boolean;
  result?: 'created' | 'updated' | 'unchanged';
  error?: string;
}

export type RegistrationState = 'registered' | 'elsewhere' | 'failed' | 'not-attempted' | 'unknown';

/** The registration as GET /v1/flags shows it to one replica. */
export interface RegistrationView {
  /**
   * registered: the latest attempt made Unleash post to this replica's URL with its secret; elsewhere: it
   * succeeded for another URL or secret; failed: it failed; not-attempted: none recorded; unknown: the
   * record cannot be read (Redis).
   */
  state: RegistrationState;
  at: Date | null;
  by: RegistrationBy | null;
  host: string | null;
  result: 'created' | 'updated' | 'unchanged' | null;
  error: string | null;
  url: string | null;
  /** For a success: whether it carries this replica's webhook secret (UNLEASH_WEBHOOK_SECRET or the stored one). */
  sameSecret: boolean | null;
  /** The latest success, also when a later attempt failed. */
  registeredAt: Date | null;
  registeredUrl: string | null;
  /** Whether the latest success carries this replica's secret (false after an upgrade from the published default). */
  registeredSameSecret: boolean | null;
}

/** Redis keys under the installation's prefix (as RedisHandle.key builds them). */
export function registrationKeys(prefix: string): { last: string; ok: string } {
  return { last: `${prefix}flags:webhook-registration:last`, ok: `${prefix}flags:webhook-registration:ok` };
}

/** An error as an operator can act on it: the cause's code too (fetch only says "fetch failed"). */
export function registrationError(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  const message = e instanceof Error ? e.message : String(err);
  const cause = e?.cause?.code ?? e?.cause?.message;
  return (cause && !message.includes(cause) ? `${message} (${cause})` : message).slice(0, 500);
}

export function registrationRecord(
  by: RegistrationBy,
  url: string,
  secret: string,
  outcome: { ok: true; result: 'created' | 'updated' | 'unchanged' } | { ok: false; error: string },
): RegistrationRecord {
  return {
    at: Date.now(),
    by,
    host: hostname(),
    url: normalized(url),
    secret: secretFingerprint(secret),
    ...(outcome.ok ? { ok: true, result: outcome.result } : { ok: false, error: outcome.error }),
  };
}

/**
 * Writes an attempt to the configuration's Redis on a connection of its own (the start's sync runs before
 * the app and its Redis client exist; `flags sync` has none). Resolves with the error, if any: never throws.
 */
export async function saveRegistration(config: Pick<Config, 'redisUrl' | 'redisPrefix'>, record: RegistrationRecord): Promise<string | null> {
  const redis = new Redis(config.redisUrl, { lazyConnect: true, connectTimeout: 2_000, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    await redis.connect();
    const keys = registrationKeys(config.redisPrefix);
    const value = JSON.stringify(record);
    if (record.ok) await redis.mset(keys.last, value, keys.ok, value);
    else await redis.set(keys.last, value);
    return null;
  } catch (err) {
    return registrationError(err);
  } finally {
    redis.disconnect();
  }
}

/** Reads both records on a connection of its own, as a replica at `mine` sees them; undefined when Redis cannot be read. */
export async function loadRegistration(config: Pick<Config, 'redisUrl' | 'redisPrefix'>, mine: { url: string; secret: string }): Promise<RegistrationView | undefined> {
  const redis = new Redis(config.redisUrl, { lazyConnect: true, connectTimeout: 2_000, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    await redis.connect();
    const keys = registrationKeys(config.redisPrefix);
    return describeRegistration((await redis.mget(keys.last, keys.ok)) as [string | null, string | null], mine);
  } catch {
    return undefined;
  } finally {
    redis.disconnect();
  }
}

/**
 * What a start about to register the webhook with its secret logs (error) when that cuts off replicas
 * that accept another one: the database stores a generated secret other than UNLEASH_WEBHOOK_SECRET, or
 * the webhook to this URL was last registered, successfully, with another secret. Not refused: rotating
 * the secret is a rolling restart that goes through exactly this (docs/flags.md).
 */
export function takeoverWarning(opts: { storedDiffers: boolean; before: RegistrationView | undefined; url: string }): string | undefined {
  const { storedDiffers, before, url } = opts;
  const registeredOther = before?.state === 'elsewhere' && before.sameSecret === false && before.url === normalized(url);
  if (!storedDiffers && !registeredOther) return undefined;
  const why = storedDiffers
    ? "UNLEASH_WEBHOOK_SECRET differs from the webhook secret stored in the database, which replicas without UNLEASH_WEBHOOK_SECRET accept"
    : `the Unleash webhook posting to ${normalized(url)} was registered with another secret (by ${before?.by ?? 'unknown'} on ${before?.host ?? 'unknown host'}${before?.at ? ` at ${before.at.toISOString()}` : ''})`;
  return (
    `flags: ${why}. This start registers the webhook with its own secret, so every replica that accepts the other one refuses each flag event from now on (401; flag changes reach it by polling only, 1–2 s later), and a start of one of those takes the webhook back. ` +
    'Give every replica the same secret (the same UNLEASH_WEBHOOK_SECRET everywhere, or unset everywhere); while rotating it, this lasts until every replica runs with the new one'
  );
}

function normalized(url: string): string {
  try {
    return normalizeWebhookUrl(url);
  } catch {
    return url;
  }
}

function parse(raw: string | null): RegistrationRecord | null {
  if (!raw) return null;
  try {
    const r = JSON.parse(raw) as Partial<RegistrationRecord>;
    if (typeof r.at !== 'number' || typeof r.url !== 'string' || typeof r.ok !== 'boolean') return null;
    return r as RegistrationRecord;
  } catch {
    return null;
  }
}

/** Reads both records ([last, ok] raw values from MGET) and says what they mean for a replica at `mine`. */
export function describeRegistration(raw: [string | null, string | null], mine: { url: string; secret: string }): RegistrationView {
  const last = parse(raw[0]);
  const ok = parse(raw[1]);
  const view: RegistrationView = {
    state: 'not-attempted',
    at: null,
    by: null,
    host: null,
    result: null,
    error: null,
    url: null,
    sameSecret: null,
    registeredAt: ok ? new Date(ok.at) : null,
    registeredUrl: ok?.url ?? null,
    registeredSameSecret: ok ? ok.secret === secretFingerprint(mine.secret) : null,
  };
  if (!last) return view;
  Object.assign(view, { at: new Date(last.at), by: last.by ?? null, host: last.host ?? null, url: last.url });
  if (!last.ok) return { ...view, state: 'failed', error: last.error ?? 'unknown error' };
  const sameSecret = last.secret === secretFingerprint(mine.secret);
  const here = last.url === normalized(mine.url) && sameSecret;
  return { ...view, state: here ? 'registered' : 'elsewhere', result: last.result ?? null, sameSecret };
}

export function unknownRegistration(error: string): RegistrationView {
  return { state: 'unknown', at: null, by: null, host: null, result: null, error, url: null, sameSecret: null, registeredAt: null, registeredUrl: null, registeredSameSecret: null };
}

/**
 * Whether Unleash's webhook to this replica's URL, as last registered, carries another secret than the one
 * it accepts (`same_secret: false` in GET /v1/flags): every event it posts is then refused (401).
 */
export function registeredWithOtherSecret(view: RegistrationView, mine: string): boolean {
  return view.state === 'elsewhere'
    ? view.sameSecret === false && view.url === normalized(mine)
    : view.state === 'failed' && view.registeredSameSecret === false && view.registeredUrl === normalized(mine);
}

/** The /readyz warning while registeredWithOtherSecret holds: a fixed phrase (GET /v1/flags has the details). */
export const WEBHOOK_OTHER_SECRET_WARNING = 'Unleash webhook registered with another secret: flag events are refused (401), flag changes arrive by polling only';

/**
 * What a starting replica logs when Unleash's webhook, as last registered, carries another secret than the
 * one it accepts: every event is then refused (401). After an upgrade from the published default with a
 * start that could not re-register it (an external Unleash without the admin token), this is how the
 * operator learns to run `flags sync --replace-webhook`. Undefined when nothing is wrong that way.
 */
export function otherSecretWarning(view: RegistrationView, mine: string): string | undefined {
  if (!registeredWithOtherSecret(view, mine)) return undefined;
  return (
    `flags: the Unleash webhook posting to ${mine} was registered with another secret than the one this control plane accepts (UNLEASH_WEBHOOK_SECRET, or the one stored in its database; an installation upgraded from the old published default), so its flag events are refused (401) and flag changes arrive by polling only. ` +
    `Register it again from a shell with the Unleash admin token and this control plane's DATABASE_URL (or UNLEASH_WEBHOOK_SECRET): killswitch flags sync --replace-webhook --webhook-url ${mine}`
  );
}
