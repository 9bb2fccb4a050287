import { hash as digest } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Pool } from '../db/pool.js';
import { CREDENTIAL_LOOKUP_TIMEOUT_MS } from '../db/query-timeout.js';
import { type AppError, unauthenticated } from '../errors.js';
import { keepSubscribed, type RedisHandle } from '../redis/client.js';
import { timeoutAfterReads } from '../reply-timeout.js';
import { type CredentialKind, hashCredential, parseCredential, sameHash, type TokenType } from './format.js';
import { type CredentialTable, credentialStore, type Environment, type OperatorRole } from './store.js';

export interface AgentPrincipal {
  kind: 'agent';
  id: string;
  tokenType: TokenType;
  scopes: readonly string[];
  role: string;
  projectId: string;
  environment: Environment;
  displayPrefix: string;
  expiresAt: number | null;
}

export interface GatewayPrincipal {
  kind: 'gateway';
  id: string;
  name: string;
  expiresAt: number | null;
}

export interface OperatorPrincipal {
  kind: 'operator';
  id: string;
  name: string;
  role: OperatorRole;
  projects: readonly string[] | null;
  expiresAt: number | null;
}

export type Principal = AgentPrincipal | GatewayPrincipal | OperatorPrincipal;

/** Thrown when the credential store cannot be reached: callers fail closed with their own code. */
export class CredentialStoreUnavailable extends Error {
  constructor(cause: unknown) {
    super(`credential store unavailable: ${(cause as Error)?.message ?? String(cause)}`);
    this.name = 'CredentialStoreUnavailable';
  }
}

/**
 * After a credential lookup timed out, lookups of credentials not in the cache fail at once for this long
 * (503) instead of each waiting CREDENTIAL_LOOKUP_TIMEOUT_MS on a Postgres that hangs; one lookup at a
 * time still goes to Postgres in the background, and the first that answers ends it. Cached credentials
 * are not affected.
 */
export const CREDENTIAL_STORE_COOLDOWN_MS = 5_000;

/** A credential lookup that got no answer in time (the wait for a connection, or for the query). */
function isTimeout(err: unknown): boolean {
  return err instanceof Error && /timeout|timed out/i.test(err.message);
}

/**
 * Rejects after `ms` whatever `work` does (it goes on; its outcome is ignored). With timeoutAfterReads, as
 * the query's own timeout (src/db/pool.ts): after the event loop was held longer than `ms`, a lookup whose
 * reply arrived meanwhile is used, not refused (a decision denied DEPENDENCY_UNAVAILABLE, 5 s of refusals).
 */
function within<T>(work: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = timeoutAfterReads(
      ms,
      () => settled,
      () => {
        settled = true;
        reject(new Error(`credential lookup timed out after ${ms} ms`));
      },
    );
    work.then(
      (value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/**
 * Redis did not take a revocation announcement. The revocation itself stands (it is in Postgres): other
 * replicas drop their cached copy when it expires, within `staleForMs` (TOKEN_CACHE_TTL_MS), not at once.
 */
export class RevocationNotAnnounced extends Error {
  constructor(
    cause: unknown,
    readonly staleForMs: number,
  ) {
    super(`revocation not announced to the other replicas: ${(cause as Error)?.message ?? String(cause)}`);
    this.name = 'RevocationNotAnnounced';
  }
}

const TABLE: Record<CredentialKind, CredentialTable> = { agent: 'agent_tokens', gateway: 'gateway_keys', operator: 'operator_keys' };
const NEGATIVE_TTL_MS = 1_000;
const TOUCH_INTERVAL_MS = 10_000;
/** At least this long between sweeps of expired cache entries: a sweep walks the whole cache. */
const MIN_PURGE_INTERVAL_MS = 10_000;

/**
 * Why a credential was refused, for the audit trail and the log (src/http/auth.ts). Known (its hash matched
 * a row): revoked or expired, with the row's id. Unknown: well formed, no row. Malformed: no credential,
 * or not one by prefix and checksum.
 */
export type CredentialRefusal =
  | { reason: 'revoked' | 'expired'; kind: CredentialKind; id: string; tokenType?: TokenType; projectId?: string }
  | { reason: 'unknown'; kind: CredentialKind }
  | { reason: 'malformed' };

const refusals = new WeakMap<object, CredentialRefusal>();

/** The refusal behind a 401 thrown by Authenticator.authenticate, if it was one. */
export function refusalOf(err: unknown): CredentialRefusal | undefined {
  return typeof err === 'object' && err !== null ? refusals.get(err) : undefined;
}

/** The 401 error Authenticator.authenticate throws for `refusal` (refusalOf reads it back). */
export function refused(refusal: CredentialRefusal, message?: string): AppError {
  const err = unauthenticated(message);
  refusals.set(err, refusal);
  return err;
}

/** The negative entry of a credential whose row matched but is revoked keeps its id: the failure path needs no query. */
type CacheEntry = { kind: CredentialKind; principal: Principal } | { kind: CredentialKind; principal: null; revoked?: { id: string; tokenType?: TokenType; projectId?: string } };

function toPrincipal(kind: CredentialKind, row: Record<string, unknown>): Principal | null {
  if (row['revoked_at']) return null;
  const expiresAt = row['expires_at'] ? (row['expires_at'] as Date).getTime() : null;
  const id = row['id'] as string;
  if (kind === 'agent') {
    return {
      kind,
      id,
      tokenType: row['type'] as TokenType,
      scopes: row['scopes'] as string[],
      role: row['role'] as string,
      projectId: row['project_id'] as string,
      environment: row['environment'] as Environment,
      displayPrefix: row['display_prefix'] as string,
      expiresAt,
    };
  }
  if (kind === 'gateway') return { kind, id, name: row['name'] as string, expiresAt };
  return { kind, id, name: row['name'] as string, role: row['role'] as OperatorRole, projects: (row['projects'] as string[] | null) ?? null, expiresAt };
}

/**
 * Authenticates raw credentials of all three kinds: checksum before any lookup, keyed-hash lookup through
 * a short-lived cache, constant-time compare, revocation and expiry. Revocation on any replica clears the
 * cache on every replica through Redis pub/sub; the TTL bounds staleness if a message is missed.
 */
export class Authenticator {
  private readonly cache: LRUCache<string, CacheEntry>;
  private readonly ttlMs: number;
  /** Lookups in flight by cache key: concurrent misses of one credential share a single query. */
  private readonly inFlight = new Map<string, Promise<CacheEntry>>();
  /** Bumped by every revocation seen here: a lookup that started before one does not fill the cache. */
  private revocations = 0;
  /** Credential id -> cache key of its positive entry, for revocation by id; pruned when the entry leaves the cache. */
  private readonly idToKey = new Map<string, string>();
  private readonly used: Record<CredentialTable, Set<string>> = { agent_tokens: new Set(), gateway_keys: new Set(), operator_keys: new Set() };
  private touchTimer: NodeJS.Timeout | undefined;
  private purgeTimer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly channel: string;
  /** Until when lookups fail at once (a lookup timed out: see CREDENTIAL_STORE_COOLDOWN_MS); 0 while Postgres answers. */
  private storeFailingUntil = 0;
  /** The background lookup that tells when Postgres answers again, while lookups fail at once. */
  private probe: Promise<unknown> | undefined;
  /** authenticate() outcomes since start, by the credential's kind (from its prefix), for /metrics. */
  readonly outcomes: Record<CredentialKind | 'malformed', { ok: number; failed: number; unavailable: number }> = {
    agent: { ok: 0, failed: 0, unavailable: 0 },
    gateway: { ok: 0, failed: 0, unavailable: 0 },
    operator: { ok: 0, failed: 0, unavailable: 0 },
    malformed: { ok: 0, failed: 0, unavailable: 0 },
  };
  private readonly onMessage = (channel: string, message: string) => {
    if (channel === this.channel) this.forgetLocally(message);
  };

  constructor(
    private readonly pool: Pool,
    private readonly redis: RedisHandle,
    private readonly secret: string,
    ttlMs: number,
    private readonly log?: Pick<Logger, 'warn' | 'info'>,
    /** The time expiry is judged by (ClockOffset.now: Postgres's while this clock is off). */
    private readonly now: () => number = Date.now,
  ) {
    this.ttlMs = Math.max(ttlMs, 1);
    this.cache = new LRUCache<string, CacheEntry>({
      max: 100_000,
      ttl: this.ttlMs,
      ttlAutopurge: false,
      // Runs only when an entry leaves (evicted, expired, deleted, replaced), never on a hit. The id may
      // already point at another key (a newer lookup of the same id): that mapping stays.
      dispose: (entry, key) => {
        if (entry.principal && this.idToKey.get(entry.principal.id) === key) this.idToKey.delete(entry.principal.id);
      },
    });
    this.channel = redis.channel('credentials:revoked');
  }

  async start(): Promise<void> {
    this.redis.sub.on('message', this.onMessage);
    // Revocations reach this replica once Redis answers; until then its cache entries live TOKEN_CACHE_TTL_MS.
    this.unsubscribe = await keepSubscribed(this.redis, this.channel, () => {});
    this.touchTimer = setInterval(() => void this.flushLastUsed(), TOUCH_INTERVAL_MS);
    this.touchTimer.unref();
    // Expired entries are otherwise only dropped when touched again: sweep them, and their ids, off the request path.
    this.purgeTimer = setInterval(() => this.purgeStale(), Math.max(this.ttlMs, MIN_PURGE_INTERVAL_MS));
    this.purgeTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.touchTimer) clearInterval(this.touchTimer);
    if (this.purgeTimer) clearInterval(this.purgeTimer);
    this.redis.sub.off('message', this.onMessage);
    await this.unsubscribe?.();
    await this.flushLastUsed();
  }

  /** Drops expired cache entries and the ids that pointed at them (start() runs it on an interval). */
  purgeStale(): void {
    this.cache.purgeStale();
  }

  /** How many credential ids this replica can drop from its cache on revocation (for tests and soak checks). */
  get cachedIds(): number {
    return this.idToKey.size;
  }

  hash(raw: string): Buffer {
    return hashCredential(this.secret, raw);
  }

  /** Resolves a raw credential or throws 401 UNAUTHENTICATED (one body for every failure). */
  async authenticate(raw: string | undefined): Promise<Principal> {
    let kind: CredentialKind | 'malformed' = 'malformed';
    try {
      if (!raw) throw refused({ reason: 'malformed' });
      // The cache is keyed by a plain SHA-256 of the credential (~0.4 µs): the keyed hash (HMAC, ~3 µs) and
      // the checksum are only computed on a miss, when the credential store is asked. Only credentials that
      // passed the checksum are ever cached, so a hit implies a well-formed credential.
      const cacheKey = digest('sha256', raw, 'base64');
      let entry = this.cache.get(cacheKey);
      if (!entry) {
        const parsed = parseCredential(raw);
        if (!parsed) throw refused({ reason: 'malformed' });
        kind = parsed.kind;
        entry = await this.lookupOnce(parsed.kind, raw, cacheKey);
      } else if (entry.principal && !this.inFlight.has(cacheKey) && this.cache.getRemainingTTL(cacheKey) < this.ttlMs / 2) {
        // Refresh ahead: a credential in use is looked up again in the background during the second half
        // of its TTL, so under load it never expires into a burst of requests waiting on Postgres. The
        // answer is still the cached one, never older than the TTL (a failed refresh changes nothing).
        this.lookupOnce(entry.kind, raw, cacheKey).catch(() => {});
      }
      kind = entry.kind;
      const principal: Principal | null = entry.principal;
      if (!principal) {
        const r = 'revoked' in entry ? entry.revoked : undefined;
        throw refused(r ? { reason: 'revoked', kind: entry.kind, ...r } : { reason: 'unknown', kind: entry.kind });
      }
      if (principal.expiresAt !== null && principal.expiresAt <= this.now()) {
        const agent = principal.kind === 'agent' ? { tokenType: principal.tokenType, projectId: principal.projectId } : {};
        throw refused({ reason: 'expired', kind: principal.kind, id: principal.id, ...agent });
      }
      this.used[TABLE[principal.kind]].add(principal.id);
      this.outcomes[kind].ok++;
      return principal;
    } catch (err) {
      this.outcomes[kind][err instanceof CredentialStoreUnavailable ? 'unavailable' : 'failed']++;
      throw err;
    }
  }

  /**
   * The agent token behind a credential that has ended (revoked or expired), found by its hash, uncached.
   * Only for the results of calls it was allowed before it ended (POST /v1/decisions/:id/result): a call in
   * flight when its token is revoked still ran, and its RESULT belongs in the audit trail. Undefined when
   * the credential is not one of our agent tokens.
   */
  async endedAgent(raw: string | undefined): Promise<AgentPrincipal | undefined> {
    const parsed = raw ? parseCredential(raw) : undefined;
    if (!raw || !parsed || parsed.kind !== 'agent') return undefined;
    const hash = this.hash(raw);
    let row: (Record<string, unknown> & { key_hash: Buffer }) | undefined;
    try {
      row = await credentialStore.findByHash(this.pool, TABLE.agent, hash);
    } catch (err) {
      throw new CredentialStoreUnavailable(err);
    }
    if (!row || !sameHash(row.key_hash, hash)) return undefined;
    const principal = toPrincipal('agent', { ...row, revoked_at: null });
    return principal?.kind === 'agent' ? principal : undefined;
  }

  /** True while lookups of uncached credentials fail at once because one timed out (CREDENTIAL_STORE_COOLDOWN_MS). */
  get failingFast(): boolean {
    return Date.now() < this.storeFailingUntil;
  }

  private lookupOnce(kind: CredentialKind, raw: string, cacheKey: string): Promise<CacheEntry> {
    const shared = this.inFlight.get(cacheKey);
    if (shared) return shared;
    if (this.failingFast) {
      // Postgres did not answer a lookup lately: answer now (503) rather than make every request wait for
      // the timeout again. This credential's lookup goes on in the background, one at a time: when it
      // answers, lookups go to Postgres again and the credential is cached.
      this.probe ??= this.lookup(kind, this.hash(raw), cacheKey)
        .catch(() => {})
        .finally(() => {
          this.probe = undefined;
        });
      return Promise.reject(new CredentialStoreUnavailable(new Error(`Postgres did not answer a credential lookup within ${CREDENTIAL_LOOKUP_TIMEOUT_MS} ms; failing at once for ${CREDENTIAL_STORE_COOLDOWN_MS} ms`)));
    }
    const pending: Promise<CacheEntry> = this.lookup(kind, this.hash(raw), cacheKey).finally(() => {
      if (this.inFlight.get(cacheKey) === pending) this.inFlight.delete(cacheKey);
    });
    this.inFlight.set(cacheKey, pending);
    return pending;
  }

  private async lookup(kind: CredentialKind, hash: Buffer, cacheKey: string): Promise<CacheEntry> {
    const revocationsBefore = this.revocations;
    let row: (Record<string, unknown> & { key_hash: Buffer }) | undefined;
    try {
      row = await within(credentialStore.findByHash(this.pool, TABLE[kind], hash, CREDENTIAL_LOOKUP_TIMEOUT_MS), CREDENTIAL_LOOKUP_TIMEOUT_MS);
    } catch (err) {
      if (isTimeout(err)) {
        if (!this.failingFast) {
          this.log?.warn(
            { err: (err as Error).message, cooldown_ms: CREDENTIAL_STORE_COOLDOWN_MS },
            `a credential lookup got no answer from Postgres within ${CREDENTIAL_LOOKUP_TIMEOUT_MS} ms: credentials not in the cache are refused at once (503 SERVICE_UNAVAILABLE) until a lookup answers again`,
          );
        }
        this.storeFailingUntil = Date.now() + CREDENTIAL_STORE_COOLDOWN_MS;
      }
      throw new CredentialStoreUnavailable(err);
    }
    if (this.storeFailingUntil !== 0) {
      this.storeFailingUntil = 0;
      this.log?.info('credential lookups answered by Postgres again');
    }
    const found = row && sameHash(row.key_hash, hash) ? row : undefined;
    const principal = found ? toPrincipal(kind, found) : null;
    const entry: CacheEntry =
      principal || !found
        ? { kind, principal }
        : { kind, principal: null, revoked: { id: found['id'] as string, ...(kind === 'agent' ? { tokenType: found['type'] as TokenType, projectId: found['project_id'] as string } : {}) } };
    // A revocation announced while the query ran may not be in the row it read: answer, but do not cache.
    if (this.revocations !== revocationsBefore) return entry;
    this.cache.set(cacheKey, entry, principal ? {} : { ttl: NEGATIVE_TTL_MS });
    if (principal) this.idToKey.set(principal.id, cacheKey);
    return entry;
  }

  /**
   * Call after revoking in Postgres: drops the credential from this replica's cache at once, then asks
   * every other replica to drop it. Rejects with RevocationNotAnnounced when Redis does not take the
   * message; this replica has forgotten the credential all the same.
   */
  async announceRevoked(id: string): Promise<void> {
    this.forgetLocally(id);
    try {
      await this.redis.redis.publish(this.channel, id);
    } catch (err) {
      throw new RevocationNotAnnounced(err, this.ttlMs);
    }
  }

  private forgetLocally(id: string): void {
    // Lookups already running may have read the row before the revocation: later requests must not join
    // them, and they must not fill the cache.
    this.revocations++;
    this.inFlight.clear();
    const key = this.idToKey.get(id);
    if (key) this.cache.delete(key);
    this.idToKey.delete(id);
  }

  /** last_used_at is written in batches, off the request path. */
  async flushLastUsed(): Promise<void> {
    for (const table of Object.keys(this.used) as CredentialTable[]) {
      const ids = [...this.used[table]];
      this.used[table].clear();
      await credentialStore.touchLastUsed(this.pool, table, ids).catch(() => {});
    }
  }
}
