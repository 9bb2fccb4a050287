import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger } from 'fastify';
import { v7 as uuidv7 } from 'uuid';
import { AppError, unauthenticated } from '../errors.js';
import { requireOperator } from '../http/auth.js';
import { ErrorBody, NoQuery } from '../http/schemas.js';
import { ENVIRONMENTS } from '../tokens/store.js';
import { FlagsOverview, UnleashEventBody, WebhookResult } from './schemas.js';
import type { PolledFlagChange } from './service.js';
import { webhookUrl } from './setup.js';
import { projectsOfNamedIds, strategiesFor, type WithheldConstraint } from './withheld.js';

const TOKEN_TYPES = ['ro', 'rw', 'admin'] as const;

/** How long the replica that audits a polled flag change holds it, so the others' polls of it write nothing. */
const POLLED_CHANGE_CLAIM_S = 3_600;

/**
 * How long an Unleash event, once applied, is remembered so that another delivery of it (a second
 * integration posting to the same URL, Unleash's retry) writes no second audit row and raises no second
 * alert. Copies of one event arrive within seconds; a fresh Unleash whose event ids start again is
 * told apart by type and flag.
 */
const WEBHOOK_EVENT_CLAIM_S = 3_600;

/** A refused webhook event is logged (warn) at most once in this long, with the count since the last line. */
export const REFUSED_EVENT_LOG_EVERY_MS = 60_000;

function sameSecret(presented: string | undefined, secret: string): boolean {
  if (!presented || !secret) return false;
  // Hash first so the comparison is constant-time whatever the lengths.
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(secret).digest();
  return timingSafeEqual(a, b);
}

function constraintBody(c: WithheldConstraint) {
  return {
    context_name: c.contextName,
    operator: c.operator,
    values: c.values,
    values_total: c.valuesTotal,
    values_withheld: c.valuesWithheld,
    value: c.value,
    inverted: c.inverted,
    case_insensitive: c.caseInsensitive,
  };
}

/** The Unleash webhook receiver and the operators' view of the flags. */
export const flagRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const flags = ctx.flags;
  const tags = ['flags'];
  // A Map: the event type is Unleash's (or whoever holds the secret) text, and a plain object answered
  // `__proto__` or `constructor` with a member of Object.prototype (an audit row that broke its chain).
  const FLAG_ACTIONS = new Map<string, string>([
    ['feature-environment-disabled', 'flag.disabled'],
    ['feature-environment-enabled', 'flag.enabled'],
    ['feature-archived', 'flag.archived'],
    ['feature-revived', 'flag.revived'],
  ]);

  // A change every replica's poll sees: written by the one replica that claims it in Redis, keyed by the
  // flag, its new state and Unleash's revision (the same for every replica that read that state). Without
  // a revision, or while Redis does not answer, each replica writes its own row (details.replica says which).
  const auditPolledChange = async (c: PolledFlagChange) => {
    const state = c.enabled === null ? 'gone' : c.enabled ? 'on' : 'off';
    const claimed =
      c.revision === null
        ? false
        : await ctx.redis.redis
            .set(ctx.redis.key('flags', 'polled-change', c.flag, state, String(c.revision)), '1', 'EX', POLLED_CHANGE_CLAIM_S, 'NX')
            .then((r) => (r === 'OK' ? true : null))
            .catch(() => false);
    if (claimed === null) return; // another replica wrote it
    // Back on, seen only by polling (no FLAG_ENABLED from the webhook to answer them): the flag's open
    // FLAG_DISABLED and KILL_SWITCH alerts are over too, or the next off period would count into them.
    if (c.enabled === true && c.previous === false) {
      for (const kind of ['FLAG_DISABLED', 'KILL_SWITCH'] as const) {
        await ctx.alerts
          .resolve({ kind, details: { flag: c.flag }, before: uuidv7(), actor: 'system:flags-poll', note: 'flag turned back on (seen by polling)', audit: { source: 'poll', revision: c.revision } })
          .catch(() => []);
      }
    }
    await ctx.audit
      .recordAdmin({
        actor: 'flags-poll',
        action: 'flag.changed',
        target: `flag:${c.flag}`,
        details: { source: 'poll', enabled: c.enabled, previous: c.previous, environment: flags.environment, revision: c.revision, ...(claimed ? {} : { replica: ctx.audit.writer.replicaId }) },
      })
      .catch(() => {});
  };
  // Events refused for their secret: Unleash's webhook carries another one (registered by a replica with
  // another UNLEASH_WEBHOOK_SECRET, or moved by hand) and every event is lost to this replica. Said at warn,
  // at most once a minute, and the registration record is read again for GET /v1/flags and /readyz.
  let refusedSince = 0;
  let refusedLoggedAt = Number.NEGATIVE_INFINITY;
  const noteRefused = (log: FastifyBaseLogger, presented: boolean, secret: string) => {
    refusedSince++;
    const now = Date.now();
    if (now - refusedLoggedAt < REFUSED_EVENT_LOG_EVERY_MS) return;
    refusedLoggedAt = now;
    const count = refusedSince;
    refusedSince = 0;
    void flags.webhookRegistration(secret).catch(() => undefined);
    log.warn(
      { refused: count, authorization: presented ? 'another secret' : 'missing', every_ms: REFUSED_EVENT_LOG_EVERY_MS },
      `flags: refused ${count} Unleash webhook event(s) (401): ${presented ? 'the Authorization is not' : 'no Authorization, expected'} this replica's webhook secret (UNLEASH_WEBHOOK_SECRET, or the one stored in its database). If Unleash's webhook was registered by a replica or shell with another secret, flag changes reach this replica by polling only: give every replica the same secret, then restart one (or run killswitch flags sync --replace-webhook with this replica's). GET /v1/flags shows the registration (same_secret). At most one line a minute while it lasts`,
    );
  };

  const onPolledChange = (c: PolledFlagChange) => void auditPolledChange(c);
  flags.on('polled-change', onPolledChange);
  app.addHook('onClose', async () => {
    flags.off('polled-change', onPolledChange);
  });

  app.post(
    '/v1/flags/events',
    {
      schema: {
        operationId: 'receiveUnleashEvent',
        tags,
        summary: 'Unleash webhook: a flag turned off or archived is denied at once on every replica',
        description:
          'Registered by flags sync as an Unleash webhook integration. Authorization carries the shared secret: UNLEASH_WEBHOOK_SECRET, or, when it is unset, the one generated at the first start and stored in the database. Only makes decisions stricter. 503 when this replica cannot read the stored secret (it accepts no event then; flag changes still arrive by polling).',
        security: [{ unleashWebhookSecret: [] }],
        body: UnleashEventBody,
        response: { 200: WebhookResult, 400: ErrorBody, 401: ErrorBody, 503: ErrorBody },
      },
      // The secret is checked before the body is even parsed. No secret known: nothing is accepted.
      onRequest: async (req) => {
        const secret = await ctx.webhookSecret.current();
        if (secret === undefined) throw new AppError('SERVICE_UNAVAILABLE', 'The webhook secret cannot be read from the database: flag events are refused until it can (flag changes still arrive by polling).');
        const auth = req.headers.authorization;
        if (!sameSecret(typeof auth === 'string' ? auth : undefined, secret)) {
          noteRefused(req.log, typeof auth === 'string' && auth !== '', secret);
          throw unauthenticated();
        }
      },
    },
    async (req) => {
      const e = req.body;
      // Claimed in Redis by the first delivery of an event id: another one (a second integration posting
      // here, replicas that registered one each) applies nothing again. Redis not answering: applied (a
      // duplicate row is better than a lost one).
      const claim = typeof e.id === 'number' ? ctx.redis.key('flags', 'webhook-event', String(e.id), e.type, e.featureName ?? '') : undefined;
      const first = claim
        ? await ctx.redis.redis
            .set(claim, '1', 'EX', WEBHOOK_EVENT_CLAIM_S, 'NX')
            .then((r) => r === 'OK')
            .catch(() => true)
        : true;
      if (!first) {
        req.log.info({ unleash_event: e.type, flag: e.featureName, event_id: e.id }, 'flags: Unleash webhook event delivered again (already applied): ignored');
        return { result: 'duplicate' as const };
      }
      let result: Awaited<ReturnType<typeof flags.applyWebhookEvent>>;
      try {
        result = await flags.applyWebhookEvent({
          type: e.type,
          featureName: e.featureName ?? undefined,
          environment: e.environment ?? undefined,
          id: e.id,
        });
      } catch (err) {
        // Not applied: a retry by Unleash must not be taken for a copy.
        if (claim) await ctx.redis.redis.del(claim).catch(() => {});
        throw err;
      }
      req.log.info({ unleash_event: e.type, flag: e.featureName, environment: e.environment, event_id: e.id, result }, 'flags: Unleash webhook');
      // One row per event (Unleash posts to one replica): the incident timeline and reviewers see flag changes.
      const action = FLAG_ACTIONS.get(e.type) ?? 'flag.changed';
      void ctx.audit
        .recordAdmin({
          actor: 'unleash-webhook',
          action,
          target: `flag:${e.featureName ?? ''}`,
          // Who changed it in Unleash (its `createdBy`), as Unleash says: masked and made storable like any text.
          details: { unleash_event: e.type, environment: e.environment ?? null, event_id: e.id ?? null, unleash_user: typeof e.createdBy === 'string' ? e.createdBy.slice(0, 200) : null, result },
        })
        .catch(() => {});
      return { result };
    },
  );

  app.get(
    '/v1/flags',
    {
      onRequest: requireOperator(ctx.auth, 'viewer'),
      schema: { operationId: 'getFlags', tags, summary: 'Flags as the control plane sees them: state, source, strategies and constraints, overrides, age of the last fetch, webhook registration and last event', querystring: NoQuery, response: { 200: FlagsOverview, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody } },
    },
    async (req) => {
      const status = flags.status();
      const views = flags.flags();
      // A key limited to projects sees no other project's token, session or project in a constraint (withheld.ts).
      const projects = req.operator!.projects;
      const owners = projects === null ? null : await projectsOfNamedIds(ctx.pool, views.flatMap((f) => f.activeStrategies));
      const registration = await flags.webhookRegistration(await ctx.webhookSecret.current());
      const iso = (d: Date | null) => (d ? d.toISOString() : null);
      return {
        environment: status.environment,
        ready: status.ready,
        source: status.source,
        last_fetch_at: iso(status.lastFetchAt),
        age_s: status.fetchAgeS,
        fetch_failing: status.fetchFailing,
        last_error_at: iso(status.lastErrorAt),
        last_error: status.lastError,
        stale: status.stale,
        stale_after_s: status.staleAfterS,
        revision: status.revision,
        backup: { state: status.backup.state, age_s: status.backup.ageS ?? null, from: status.backup.from ?? null },
        overrides: status.overrides.map((o) => ({ flag: o.flag, reason: o.reason, event_id: o.eventId, at: new Date(o.at).toISOString() })),
        webhook: {
          url: webhookUrl(ctx.config),
          registration: {
            state: registration.state,
            at: iso(registration.at),
            by: registration.by,
            host: registration.host,
            result: registration.result,
            error: registration.error,
            url: registration.url,
            same_secret: registration.sameSecret,
            registered_at: iso(registration.registeredAt),
            registered_url: registration.registeredUrl,
            registered_same_secret: registration.registeredSameSecret,
          },
          last_event_at: status.lastWebhook ? new Date(status.lastWebhook.at).toISOString() : null,
          last_event_type: status.lastWebhook?.type ?? null,
          last_event_flag: status.lastWebhook?.flag ?? null,
        },
        flags: views.map((f) => {
          // Uncounted: Unleash's usage metrics (the flags' use in its UI) count agents' calls, not an open Flags page.
          let evaluable = true;
          const evaluations = Object.fromEntries(
            TOKEN_TYPES.map((tokenType) => [
              tokenType,
              Object.fromEntries(
                ENVIRONMENTS.map((env) => {
                  const on = flags.isEnabledUncounted(f.name, flags.callContext({ userId: 'flags-overview', tokenType, mcpEnvironment: env }));
                  if (on === undefined) evaluable = false;
                  return [env, on === true];
                }),
              ),
            ]),
          ) as { ro: Record<(typeof ENVIRONMENTS)[number], boolean>; rw: Record<(typeof ENVIRONMENTS)[number], boolean>; admin: Record<(typeof ENVIRONMENTS)[number], boolean> };
          return {
            name: f.name,
            description: f.description,
            type: f.type,
            enabled: f.enabled,
            source: f.override ? ('webhook' as const) : status.source,
            strategies: f.strategies,
            constraints: f.constraints,
            active_strategies: strategiesFor(f.activeStrategies, projects, owners).map((st) => ({
              name: st.name,
              parameters: st.parameters,
              parameters_withheld: st.parametersWithheld,
              constraints: st.constraints.map(constraintBody),
              segments: st.segments.map((sg) => ({ id: sg.id, constraints: sg.constraints ? sg.constraints.map(constraintBody) : null })),
            })),
            evaluations: evaluable ? evaluations : null,
          };
        }),
      };
    },
  );
};
