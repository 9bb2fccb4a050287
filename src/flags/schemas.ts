import { type Static, Type } from 'typebox';
import { CONSTRAINT_VALUES_SHOWN, PARAMETER_CHARS_SHOWN } from './service.js';

// The webhook body is Unleash's event as Unleash sends it. It is the one input here that allows extra
// properties: Unleash adds fields between versions, and rejecting them would silently turn the
// immediate kill path off. Only the fields we act on are declared and typed.
export const UnleashEventBody = Type.Object(
  {
    id: Type.Optional(Type.Integer()),
    type: Type.String({ minLength: 1, maxLength: 200 }),
    featureName: Type.Optional(Type.Union([Type.String({ maxLength: 300 }), Type.Null()])),
    environment: Type.Optional(Type.Union([Type.String({ maxLength: 200 }), Type.Null()])),
    project: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    createdAt: Type.Optional(Type.String()),
    createdBy: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  },
  { additionalProperties: true },
);
export type UnleashEventBody = Static<typeof UnleashEventBody>;

export const WebhookResult = Type.Object({
  result: Type.Union([Type.Literal('denied'), Type.Literal('cleared'), Type.Literal('ignored'), Type.Literal('duplicate')], {
    description:
      'denied: a local deny override was applied on every replica; cleared: an older override ended; ignored: nothing to do; duplicate: an event of this id (type and flag) was already applied (delivered again, by a second integration or a retry): no audit row, no alert.',
  }),
});

const Timestamp = Type.Union([Type.String({ format: 'date-time' }), Type.Null()]);

export const FlagOverrideView = Type.Object({
  flag: Type.String(),
  reason: Type.Union([Type.Literal('disabled'), Type.Literal('archived')]),
  event_id: Type.Union([Type.Integer(), Type.Null()]),
  at: Type.String({ format: 'date-time' }),
});

const ByEnvironment = Type.Object({ development: Type.Boolean(), staging: Type.Boolean(), production: Type.Boolean() });

export const FlagConstraintView = Type.Object({
  context_name: Type.String({ description: 'The context field: userId (the agent token id), tokenType, role, mcpEnvironment, projectId, server, tool, capability, sessionId, ...' }),
  operator: Type.String({ description: 'Unleash operator: IN, NOT_IN, STR_CONTAINS, NUM_GT, DATE_AFTER, SEMVER_EQ, ...' }),
  values: Type.Array(Type.String(), { description: `The first ${CONSTRAINT_VALUES_SHOWN} values, in Unleash's order (values_total says how many there are).` }),
  values_total: Type.Integer({ description: 'How many values the constraint has; more than listed in values: see the rest in Unleash.' }),
  values_withheld: Type.Integer({
    description:
      'For a key limited to projects: how many of the first values were withheld from values because they name a token, session or project outside its projects (userId, sessionId, projectId constraints). 0 for other keys.',
  }),
  value: Type.Union([Type.String(), Type.Null()], { description: 'The single value of NUM_*, DATE_* and SEMVER_* operators.' }),
  inverted: Type.Boolean({ description: 'True: the constraint is negated (matches when the operator does not).' }),
  case_insensitive: Type.Boolean(),
});

export const FlagStrategyView = Type.Object({
  name: Type.String({ description: 'Unleash strategy: flexibleRollout, default, ...' }),
  parameters: Type.Record(Type.String(), Type.String(), { description: `Its parameters (rollout percentage, stickiness, ...), each cut at ${PARAMETER_CHARS_SHOWN} characters.` }),
  parameters_withheld: Type.Integer({ description: 'For a key limited to projects: how many token ids were withheld from the userIds parameter (userWithId strategy), as for values_withheld. 0 for other keys.' }),
  constraints: Type.Array(FlagConstraintView, { description: 'All must match for the strategy to be on for a call.' }),
  segments: Type.Array(
    Type.Object({
      id: Type.Integer(),
      constraints: Type.Union([Type.Array(FlagConstraintView), Type.Null()], { description: 'Null: the segment is not in the data this replica has, so the strategy is never on.' }),
    }),
    { description: 'Segments it uses: their constraints must match too.' },
  ),
});

export const FlagEntry = Type.Object({
  name: Type.String(),
  description: Type.Union([Type.String(), Type.Null()]),
  type: Type.Union([Type.String(), Type.Null()]),
  enabled: Type.Boolean({ description: 'On in the Unleash environment the control plane reads (before strategy constraints); false while a webhook deny is in force (source webhook), before the next poll shows the flag off.' }),
  source: Type.Union([Type.Literal('poll'), Type.Literal('bootstrap'), Type.Literal('webhook'), Type.Literal('none')], {
    description: 'Where the state in force comes from: the last poll, the backup at start (backup.from: the file or the Redis copy), or a webhook override.',
  }),
  strategies: Type.Integer(),
  constraints: Type.Integer({
    description:
      'Constraints on its active strategies (those of the segments they use included). More than 0: the flag is on only for some calls (a targeted kill, say), which enabled and evaluations do not show; active_strategies lists them.',
  }),
  active_strategies: Type.Array(FlagStrategyView, {
    description: 'Its strategies in force in this environment, with their constraints: the flag is on for a call when any strategy is on for it.',
  }),
  evaluations: Type.Union(
    [
      Type.Object(
        { ro: ByEnvironment, rw: ByEnvironment, admin: ByEnvironment },
        {
          description:
            'Result for each token type and agent environment, for a made-up token with no role, project, session, server or tool: a constraint on any of those (userId NOT_IN [a token], say) does not show here. Not counted in the usage metrics the SDK reports to Unleash.',
        },
      ),
      Type.Null(),
    ],
    { description: "Null: this flag cannot be evaluated without counting it in Unleash's usage metrics (unleash-client's internals changed; the start log says so)." },
  ),
});

export const WebhookRegistrationView = Type.Object(
  {
    state: Type.Union([Type.Literal('registered'), Type.Literal('elsewhere'), Type.Literal('failed'), Type.Literal('not-attempted'), Type.Literal('unknown')], {
      description:
        "The latest attempt to register the webhook in Unleash (by any replica's start or a flags sync): registered — Unleash posts to url with this replica's secret; elsewhere — it succeeded for another URL or secret (registration.url, same_secret), so events do not reach url; failed — see error (an earlier success stays in Unleash: registered_at); not-attempted — none recorded (a start whose sync stopped before the webhook, or an app started without it); unknown — the record cannot be read (Redis).",
    }),
    at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'When the latest attempt was made.' }),
    by: Type.Union([Type.Literal('start'), Type.Literal('flags sync'), Type.Null()], { description: "start: a control plane's start; flags sync: killswitch flags sync from a shell." }),
    host: Type.Union([Type.String(), Type.Null()], { description: 'Host name of the process that made it.' }),
    result: Type.Union([Type.Literal('created'), Type.Literal('updated'), Type.Literal('unchanged'), Type.Null()], { description: 'For a success: what it did in Unleash.' }),
    error: Type.Union([Type.String(), Type.Null()], { description: 'For failed (Unleash unreachable, UNLEASH_ADMIN_TOKEN refused, ...) and unknown.' }),
    url: Type.Union([Type.String(), Type.Null()], { description: 'The receiver URL that attempt registered or asked for.' }),
    same_secret: Type.Union([Type.Boolean(), Type.Null()], { description: "For a success: whether it registered this replica's webhook secret (UNLEASH_WEBHOOK_SECRET, or the one stored in the database when it is unset)." }),
    registered_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'The latest successful registration, also when a later attempt failed.' }),
    registered_url: Type.Union([Type.String(), Type.Null()]),
    registered_same_secret: Type.Union([Type.Boolean(), Type.Null()], {
      description: "Whether the latest success registered this replica's secret. False: Unleash's integration carries another one (e.g. the old published default after an upgrade) and its events are refused: run flags sync --replace-webhook.",
    }),
  },
  { description: 'Whether Unleash was told where to post flag events, by whom and when. No event since: see last_event_at.' },
);

export const FlagsOverview = Type.Object({
  environment: Type.String({ description: 'The Unleash environment the control plane reads: toggle flags in this one.' }),
  ready: Type.Boolean({ description: 'False: flags never loaded; every decision is DEPENDENCY_UNAVAILABLE.' }),
  source: Type.Union([Type.Literal('poll'), Type.Literal('bootstrap'), Type.Literal('none')]),
  last_fetch_at: Timestamp,
  age_s: Type.Union([Type.Integer(), Type.Null()], {
    description: 'Seconds since the last successful fetch; normally 0-2 (a fetch every UNLEASH_REFRESH_MS). More than a few: flag changes are not arriving. Null: no fetch since start.',
  }),
  fetch_failing: Type.Boolean({ description: 'The latest fetch failed (last_error). False once a later fetch succeeded: last_error is then past.' }),
  last_error_at: Timestamp,
  last_error: Type.Union([Type.String(), Type.Null()], { description: 'The latest fetch failure since start, kept after fetches succeed again (see fetch_failing).' }),
  stale: Type.Boolean({ description: 'No successful fetch for stale_after_s (the FLAGS_STALE alarm): the last fetched state stays in force. Use age_s to see it sooner.' }),
  stale_after_s: Type.Integer(),
  revision: Type.Union([Type.Integer(), Type.Null()], { description: 'Unleash revision (event id) of the polled data.' }),
  backup: Type.Object(
    {
      state: Type.String({ description: 'What this replica found at start: none, loaded, too-old, other-source, unreadable, disabled.' }),
      age_s: Type.Union([Type.Integer(), Type.Null()], { description: 'Seconds since Unleash last confirmed that backup, at start.' }),
      from: Type.Union([Type.Literal('file'), Type.Literal('redis'), Type.Null()], {
        description: 'Which backup state and age_s are about: the file in DATA_DIR or the copy in Redis (whichever Unleash confirmed later). Null: there was none (state none or disabled).',
      }),
    },
    { description: 'The backup a replica starts from while it cannot reach Unleash.' },
  ),
  overrides: Type.Array(FlagOverrideView),
  webhook: Type.Object({
    url: Type.String({ description: 'Where this control plane registers the Unleash webhook at start: PUBLIC_URL, else http://HOST:PORT.' }),
    registration: WebhookRegistrationView,
    last_event_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
      description: 'When the last Unleash webhook event reached any replica (as far as this replica heard since it started). Null: none yet.',
    }),
    last_event_type: Type.Union([Type.String(), Type.Null()]),
    last_event_flag: Type.Union([Type.String(), Type.Null()]),
  }),
  flags: Type.Array(FlagEntry),
});
