import { Command, Redis } from 'ioredis';

// Every key and pub/sub channel goes through `key()` / `channel()` so one Redis can host several
// installations (and every test file) side by side. We prefix explicitly instead of using ioredis's
// keyPrefix because that option applies neither to pub/sub channels nor to keys built inside Lua.

export interface RedisHandle {
  /** Command connection (fails fast: no offline queue, bounded command time). */
  redis: Redis;
  /** Subscriber connection for cross-replica messages. */
  sub: Redis;
  prefix: string;
  key(...parts: string[]): string;
  channel(name: string): string;
  /**
   * Why the command connection last failed to connect or was refused (a TLS verification error, a refused
   * password ...), with what to change when that is known (redisConnectionHint); undefined once it is ready
   * again, and before any failure. Never holds REDIS_URL or its password: ioredis's errors do not quote them.
   */
  lastError(): string | undefined;
  close(): Promise<void>;
}

type TimedCommand = { isResolved: boolean; reject(err: Error): void; _commandTimeoutTimer?: NodeJS.Timeout };
const READS_BEFORE_TIMEOUT = Symbol.for('killswitch.redis.readsBeforeTimeout');

/**
 * ioredis times a command out with a timer (`commandTimeout`, REDIS_TIMEOUT_MS) armed when the command is
 * issued, and each turn of Node's event loop runs the timers that are due before it reads the sockets. So
 * after the loop was held longer than the timeout (a burst of requests read in one turn, a machine short of
 * CPU, a long synchronous task), every command in flight failed as timed out although Redis's replies were
 * waiting in the socket, or had not even been sent (ioredis writes at setImmediate, after the burst):
 * decisions denied DEPENDENCY_UNAVAILABLE by the thousand, and each gate check among them cost a second
 * script to give back what it had counted (overload runs of 2026-12-07, docs/performance.md "Overload").
 * Here a timeout first lets the sockets be read once (a setImmediate runs right after that read), so a
 * reply that has arrived is used; and a timer that fired later than the timeout itself (the loop was held)
 * gives the command one more full timeout from then. A command Redis does not answer fails as before, at
 * most one turn of the event loop later, or after one more timeout when the control plane itself stalled.
 * Installed once, for every client.
 */
function readRepliesBeforeTimeouts(): void {
  const proto = Command.prototype as unknown as { setTimeout(ms: number): void; [READS_BEFORE_TIMEOUT]?: true };
  if (proto[READS_BEFORE_TIMEOUT]) return;
  proto.setTimeout = function setTimeout(this: TimedCommand, ms: number): void {
    if (this._commandTimeoutTimer) return;
    let extended = false;
    const arm = () => {
      const due = performance.now() + ms;
      this._commandTimeoutTimer = globalThis.setTimeout(() => {
        const late = performance.now() - due;
        setImmediate(() => {
          if (this.isResolved) return;
          if (!extended && late >= ms) {
            extended = true;
            arm();
            return;
          }
          this.reject(new Error('Command timed out'));
        });
      }, ms);
    };
    arm();
  };
  proto[READS_BEFORE_TIMEOUT] = true;
}

export function createRedis(url: string, prefix: string, commandTimeoutMs: number): RedisHandle {
  readRepliesBeforeTimeouts();
  const common = {
    lazyConnect: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000),
  };
  // No offline queue: while Redis is down a command fails at once instead of waiting, so decisions deny fast.
  // Auto-pipelining: the commands issued in one turn of the event loop go out in one socket write (each
  // write that wakes Redis costs tens of µs here; ADR 0005). The per-decision gate script bypasses it and
  // is batched the same way by src/redis/raw-script.ts (ADR 0006).
  const redis = new Redis(url, { ...common, enableOfflineQueue: false, commandTimeout: commandTimeoutMs, enableAutoPipelining: true });
  // No autoResubscribe: keepSubscribed() subscribes each channel again on every 'ready', with its failure
  // handled. ioredis's own re-subscribe of all channels in one command left its rejection unhandled: a
  // Redis that refused it (an ACL change dropping the channels: Redis 7 then disconnects the subscriber)
  // crashed the process (an unhandled rejection), seen in CI at 7262fee.
  const sub = new Redis(url, { ...common, enableOfflineQueue: true, autoResubscribe: false });
  let lastError: string | undefined;
  const tls = redis.options.tls !== undefined;
  redis.on('error', (err: Error) => {
    const hint = redisConnectionHint(err, tls);
    lastError = hint ? `${err.message.split('\n')[0]} (${hint})` : err.message.split('\n')[0];
  });
  redis.on('ready', () => {
    lastError = undefined;
  });
  sub.on('error', () => {});
  return {
    redis,
    sub,
    prefix,
    key: (...parts) => prefix + parts.join(':'),
    channel: (name) => `${prefix}ch:${name}`,
    lastError: () => lastError,
    async close() {
      redis.disconnect();
      sub.disconnect();
    },
  };
}

/** Waits until the command connection is ready (or throws after `timeoutMs`, with the connection's last error). */
export async function waitForRedis(handle: RedisHandle, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (handle.redis.status === 'ready') return;
    if (Date.now() > deadline) {
      const last = handle.lastError?.();
      throw new Error(`Redis not reachable (status ${handle.redis.status}${last ? `; last error: ${last}` : ''})`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

const UNTRUSTED_CERTIFICATE = new Set(['SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY']);

/**
 * What to change when connecting to Redis failed in a way the operator fixes in the configuration (the
 * driver's words alone name an OpenSSL routine, or only "Connection is closed"); undefined otherwise.
 * `tls`: REDIS_URL is rediss://. docs/operations.md, "Managed Redis".
 */
export function redisConnectionHint(err: { code?: unknown; message?: unknown }, tls: boolean): string | undefined {
  const code = typeof err.code === 'string' ? err.code : '';
  const message = typeof err.message === 'string' ? err.message : '';
  if (UNTRUSTED_CERTIFICATE.has(code)) return "Redis's TLS certificate is not signed by a CA this process trusts: set NODE_EXTRA_CA_CERTS to the PEM file of the CA that issued it";
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return "Redis's TLS certificate is expired or not yet valid (or this machine's clock is off)";
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return "the host in REDIS_URL is not one Redis's TLS certificate names: use the host name the certificate was issued for (the endpoint the provider gives), not an IP address or an alias";
  if (code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' || /alert certificate required/i.test(message)) return 'Redis requires a client certificate (tls-auth-clients yes), which the control plane does not present: set tls-auth-clients no (or optional) on that Redis';
  if (/^WRONGPASS/.test(message)) return "Redis refused REDIS_URL's user name or password (rediss://user:password@host:port; an ACL user needs its name too)";
  if (/^NOAUTH/.test(message)) return 'Redis requires a password: put it in REDIS_URL (rediss://user:password@host:port)';
  if (/^NOPERM/.test(message)) return "REDIS_URL's user lacks a permission the control plane needs (docs/operations.md, \"Managed Redis\", has the ACL rule)";
  if (tls && code === 'ETIMEDOUT') return 'no TLS handshake within the connect timeout: does Redis listen with TLS on that port (rediss:// needs its tls-port)?';
  if (!tls && (code === 'ECONNRESET' || code === 'EPIPE')) return 'Redis closed the connection at once: if it listens with TLS on that port, REDIS_URL must start with rediss://';
  return undefined;
}

/**
 * Why Redis's `maxmemory-policy` endangers what the gate keeps, or undefined when it does not. Kills that
 * expire are stored with a TTL, as are sessions, counters and decisions: a `volatile-*` or `allkeys-*`
 * policy may evict a kill before it ends (lifting it until the next reconcile) or a live session.
 */
export function evictionRisk(policy: string | undefined): string | undefined {
  if (policy === undefined || policy === 'noeviction') return undefined;
  return `Redis maxmemory-policy is ${policy}: when Redis is full it may evict a kill that has an expiry before it ends (lifted until the next reconcile, ~5 s), a live session or a counter. Set maxmemory-policy noeviction (Redis then refuses writes when full, and decisions deny)`;
}

/** Logs evictionRisk() for the Redis connected to; nothing when CONFIG GET is not allowed (managed Redis). */
export async function warnOnEviction(handle: RedisHandle, log: { warn(obj: object, msg: string): void }): Promise<void> {
  try {
    const reply = (await handle.redis.config('GET', 'maxmemory-policy')) as string[];
    const risk = evictionRisk(reply[1]);
    if (risk) log.warn({ maxmemory_policy: reply[1] }, risk);
  } catch {
    // CONFIG is often disabled on managed Redis: docs/operations.md says what to set.
  }
}

/** A subscribe Redis refused on a connection that stays up (NOPERM: the channel taken from the ACL user) is tried again this often. */
export const RESUBSCRIBE_RETRY_MS = 5_000;

/**
 * Subscribes `channel` on the subscriber connection now and again on every reconnect: ioredis re-subscribes
 * channels it had, but not a subscribe that failed while Redis was away. Never rejects, so a control plane
 * starts with Redis down (decisions deny until it is back; messages of other replicas arrive once it is).
 * Returns the function that stops it.
 *
 * While Redis is away a subscribe (the subscriber connection queues commands) waits until a reconnect
 * attempt fails, ~2 s: neither the start nor the stop waits for one then. A replica started during a
 * Redis outage listened only after ~17 s (one wait per subscriber) and took as long again to stop.
 *
 * A subscribe refused while the connection stays up (the ACL user lost the channel: Redis 7 disconnects
 * a subscriber when its channels are taken away, and the re-subscribe is refused) is tried again every
 * RESUBSCRIBE_RETRY_MS, so once the permission is given back the replica hears the others again without
 * waiting for a reconnect that granting a permission never causes. `onFailure` is told the first failure of
 * a run, not every retry.
 */
export async function keepSubscribed(handle: RedisHandle, channel: string, onFailure: (err: Error) => void): Promise<() => Promise<void>> {
  let stopped = false;
  let failing = false;
  let retry: NodeJS.Timeout | undefined;
  const subscribe = (): Promise<void> =>
    handle.sub.subscribe(channel).then(
      () => {
        failing = false;
      },
      (err: Error) => {
        if (!failing) onFailure(err);
        failing = true;
        // A connection that is down re-subscribes on 'ready'; one that is up must be asked again.
        if (stopped || retry !== undefined || handle.sub.status !== 'ready') return;
        retry = setTimeout(() => {
          retry = undefined;
          if (!stopped && handle.sub.status === 'ready') void subscribe();
        }, RESUBSCRIBE_RETRY_MS);
        retry.unref();
      },
    );
  const onReady = () => void subscribe();
  handle.sub.on('ready', onReady);
  if (handle.sub.status === 'ready') await subscribe();
  else void subscribe();
  return async () => {
    stopped = true;
    if (retry !== undefined) clearTimeout(retry);
    handle.sub.off('ready', onReady);
    if (handle.sub.status === 'ready') await handle.sub.unsubscribe(channel).catch(() => {});
  };
}
