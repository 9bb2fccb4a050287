import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { clockOffWarning } from '../clock/offset.js';
import { registeredWithOtherSecret, WEBHOOK_OTHER_SECRET_WARNING } from '../flags/registration.js';
import type { FlagStatus } from '../flags/service.js';
import { webhookUrl } from '../flags/setup.js';
import { EMBEDDED_UNLEASH_DOWN_WARNING } from '../flags/supervisor.js';
import { divergenceWarning } from '../policy/replicas.js';

const Ready = Type.Object({
  ready: Type.Boolean(),
  checks: Type.Record(
    Type.String(),
    Type.String({ description: '"ok", or why not in a few words (postgres: unreachable, redis: not ready, ...); the driver\'s own error is in the log' }),
  ),
  warnings: Type.Array(Type.String(), {
    description:
      'Degraded but still deciding, so not a failed check (empty when nothing is wrong): "policy file rejected: the last good policy is in force" while the file on disk is broken or unreadable (its errors are in the log); "replicas run 2 different policies: <hash8> on N, <hash8> on M" while live replicas decide with different policy files (GET /v1/policy/replicas lists them); "embedded Unleash down: being restarted; decisions use the last fetched flags, which cannot change until it is back" while the embedded Unleash (no UNLEASH_URL) is down and its supervisor restarts it; "flags stale: no successful Unleash fetch for N s …" otherwise while no Unleash fetch has succeeded for UNLEASH_STALE_AFTER_S (a flag turned off in Unleash does not reach this replica; kills still work); "Unleash webhook registered with another secret: flag events are refused (401), flag changes arrive by polling only" while the latest webhook registration for this replica\'s URL carries a secret it does not accept (GET /v1/flags: same_secret false; read again at most every 10 s); "decisions failed closed in the last 30 s: Redis answered with an error (OOM) …" while decisions meet a dependency failure that the checks do not see (Redis answers PING at maxmemory), one per dependency; "Redis state not loaded from Postgres: every decision is denied …" while Redis answers but the halts and kills in force could not be loaded into it (or checked) from Postgres; "clock off: this replica\'s clock is N s behind Postgres\'s …" while it is more than 1 s off (expiry is then judged, and audit rows stamped, with Postgres\'s time).',
  }),
});

/** How often /readyz reads the webhook registration record again (in the background). */
export const REGISTRATION_REFRESH_MS = 10_000;

/** A /readyz warning: a fixed phrase (no path; the file's errors are in the log). */
/** How far back a decision's failed dependency is listed in `warnings` (DependencyFailureLog.recent). */
export const RECENT_FAILURE_MS = 30_000;

export const POLICY_REJECTED_WARNING = 'policy file rejected: the last good policy is in force';
export const STATE_NOT_LOADED_WARNING =
  'Redis state not loaded from Postgres: every decision is denied (DEPENDENCY_UNAVAILABLE) until it is; the log says why (state epoch check failed)';

/**
 * While the flags are stale (no successful Unleash fetch for UNLEASH_STALE_AFTER_S) and still in force: a
 * flag turned off in Unleash does not reach this replica, which the on-call operator must know before
 * reaching for the Unleash UI (`killswitch status` prints it). Not ready at all is a failed check instead.
 */
export function flagsStaleWarning(s: Pick<FlagStatus, 'ready' | 'stale' | 'fetchAgeS' | 'lastFetchAt'>): string | undefined {
  if (!s.ready || !s.stale) return undefined;
  const since = s.lastFetchAt ? `${s.fetchAgeS ?? '?'} s (last at ${s.lastFetchAt.toISOString()})` : 'since start';
  return `flags stale: no successful Unleash fetch for ${since}; the last fetched flags stay in force and a flag turned off in Unleash does not reach this replica: stop calls with killswitch kill (POST /v1/kills), which needs no Unleash`;
}

export const CHECK_TIMEOUT_MS = 2_000;
/** A failing dependency is logged once per reason in this long, however often the orchestrator probes. */
export const READYZ_LOG_EVERY_MS = 60_000;

/** A check that knows why it is not ready: `reason` is answered, `message` (the details) only logged. */
export class NotReady extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

// Socket-level failures of the pg and ioredis drivers.
const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EPIPE']);

/**
 * What /readyz answers for a failed check: a fixed phrase, never the error's message, which names hosts,
 * ports, users or databases to anyone who can reach the port (it needs no credential).
 */
export function readinessReason(err: unknown): string {
  if (err instanceof NotReady) return err.reason;
  const { code, message } = err as { code?: unknown; message?: unknown };
  const c = typeof code === 'string' ? code : '';
  const m = typeof message === 'string' ? message : '';
  if (UNREACHABLE.has(c) || /Connection terminated|Connection is closed|connection refused/i.test(m)) return 'unreachable';
  if (/timeout|timed out/i.test(m)) return 'timed out';
  // SQLSTATE classes: 28 invalid authorization, 3D000 unknown database, 57P operator intervention (shutting down, starting up).
  if (/^28[0-9A-Z]{3}$/.test(c) || /NOAUTH|WRONGPASS/.test(m)) return 'login refused';
  if (c === '3D000') return 'database missing';
  if (c.startsWith('57P') || /^LOADING/.test(m)) return 'not ready';
  return 'failing';
}

/** /healthz: the process is up. /readyz: Postgres, Redis and every registered dependency are ready. */
export const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  ctx.readiness.set('postgres', async () => {
    await ctx.pool.query('SELECT 1');
    return true;
  });
  // The command connection fails fast while it reconnects; its last error says why (for the log).
  ctx.readiness.set('redis', async () => {
    const { status } = ctx.redis.redis;
    const lastRedisError = ctx.redis.lastError();
    if (status !== 'ready') throw new NotReady('not ready', `connection ${status}${lastRedisError ? `; last error: ${lastRedisError}` : ''}`);
    return (await ctx.redis.redis.ping()) === 'PONG' ? true : 'no PONG';
  });

  const logged = new Map<string, number>();
  const logFailure = (name: string, reason: string, err: unknown) => {
    const key = `${name}\u0000${reason}`;
    const now = Date.now();
    if (now - (logged.get(key) ?? Number.NEGATIVE_INFINITY) < READYZ_LOG_EVERY_MS) return;
    logged.set(key, now);
    ctx.log.warn(
      { check: name, reason, err: (err as Error)?.message ?? String(err) },
      `readyz: ${name} ${reason} (this line at most once a minute per reason while it lasts; /readyz answers only "${reason}")`,
    );
  };

  let registrationReadAt = 0;

  app.get('/healthz', { schema: { operationId: 'checkHealth', tags: ['health'], summary: 'Liveness: 200 while the process answers (no dependency is checked)', security: [], response: { 200: Type.Object({ ok: Type.Boolean() }) } } }, async () => ({ ok: true }));

  app.get(
    '/readyz',
    {
      schema: {
        operationId: 'checkReadiness',
        tags: ['health'],
        summary: 'Readiness: 200 when this replica can decide (Postgres, Redis, flags, audit), 503 with the checks that fail',
        security: [],
        description:
          'Unauthenticated, for load balancers and orchestrators: each check is "ok" or a short reason (postgres: unreachable, timed out, login refused, database missing, not ready, failing; redis: not ready, ...; flags, audit: what decisions miss). Driver errors, with hosts and ports, go to the log only (warn, `readyz: <check> <reason>`, at most once a minute per reason). `warnings` lists what is degraded while decisions go on, which never makes the answer 503: a rejected policy file (the last good policy is in force), live replicas that decide with different policy files (as this replica saw them at its last heartbeat, every 10 s), an embedded Unleash that is down and being restarted (the flags in memory stay in force), stale flags (no Unleash fetch for UNLEASH_STALE_AFTER_S: a flag turned off there does not reach this replica), an Unleash webhook registered with a secret this replica does not accept (its events are refused; read from Redis at most every 10 s), a Redis state that could not be loaded from Postgres (every decision denied), a clock more than 1 s off Postgres\'s (measured every 30 s).',
        response: { 200: Ready, 503: Ready },
      },
    },
    async (_req, reply) => {
      const checks: Record<string, string> = {};
      let ready = true;
      await Promise.all(
        [...ctx.readiness].map(async ([name, check]) => {
          let timer: NodeJS.Timeout | undefined;
          const result = await Promise.race([
            check().catch((err: unknown) => {
              const reason = readinessReason(err);
              logFailure(name, reason, err);
              return reason;
            }),
            new Promise<string>((r) => {
              timer = setTimeout(() => {
                const reason = `timed out after ${CHECK_TIMEOUT_MS / 1000} s`;
                logFailure(name, reason, new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`));
                r(reason);
              }, CHECK_TIMEOUT_MS);
              timer.unref();
            }),
          ]);
          clearTimeout(timer);
          checks[name] = result === true ? 'ok' : result;
          if (result !== true) ready = false;
        }),
      );
      // The control plane still decides with the last good policy: a warning, never a failed check.
      const warnings = ctx.policy.status().lastError === null ? [] : [POLICY_REJECTED_WARNING];
      // As the last heartbeat saw it: a probe never waits for Redis for this.
      const replicas = ctx.policyReplicas.view();
      const diverged = replicas && divergenceWarning(replicas);
      if (diverged) warnings.push(diverged);
      // Flags keep working from memory (see EMBEDDED_UNLEASH_DOWN_WARNING for why not a failed check).
      if (ctx.flags.embeddedUnleash()?.up === false) warnings.push(EMBEDDED_UNLEASH_DOWN_WARNING);
      else {
        const stale = flagsStaleWarning(ctx.flags.status());
        if (stale) warnings.push(stale);
      }
      // Redis answers, but its halts and kills could not be loaded (or checked) from Postgres: the gate denies
      // every call while every check passes. A restore drill met it for good (a halt journal Postgres could
      // not take); a warning, not a failed check, like the other states every replica shares.
      if (ctx.sessions.epoch.failingNow && ctx.redis.redis.status === 'ready') warnings.push(STATE_NOT_LOADED_WARNING);
      // Read again from Redis in the background at most every REGISTRATION_REFRESH_MS: a probe never waits for it.
      if (Date.now() - registrationReadAt >= REGISTRATION_REFRESH_MS) {
        registrationReadAt = Date.now();
        void ctx.webhookSecret
          .current()
          .then((secret) => ctx.flags.webhookRegistration(secret))
          .catch(() => {});
      }
      // Checks that pass do not mean decisions do: Redis answers PING at maxmemory and refuses the gate's
      // writes (OOM). What failed a decision lately is said here, in product words (the log has the rest).
      for (const what of ctx.dependencyFailures?.recent(RECENT_FAILURE_MS) ?? []) warnings.push(`decisions failed closed in the last ${RECENT_FAILURE_MS / 1000} s: ${what} (the log has each failure: decision denied (DEPENDENCY_UNAVAILABLE))`);
      // Measured every 30 s (src/clock/offset.ts): a probe costs no query for it.
      const clock = ctx.clock.last();
      if (ctx.clock.isOff && clock) warnings.push(clockOffWarning(clock));
      const registration = ctx.flags.lastRegistrationView();
      if (registration && registeredWithOtherSecret(registration, webhookUrl(ctx.config))) warnings.push(WEBHOOK_OTHER_SECRET_WARNING);
      return reply.code(ready ? 200 : 503).send({ ready, checks, warnings });
    },
  );
};
