import { type Static, Type } from 'typebox';

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
  result: Type.Union([Type.Literal('denied'), Type.Literal('cleared'), Type.Literal('ignored')], {
    description: 'denied: a local deny override was applied on every replica; cleared: an older override ended; ignored: nothing to do.',
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

export const FlagEntry = Type.Object({
  name: Type.String(),
  description: Type.Union([Type.String(), Type.Null()]),
  type: Type.Union([Type.String(), Type.Null()]),
  enabled: Type.Boolean({ description: 'On in the Unleash environment the control plane reads (before strategy constraints).' }),
  source: Type.Union([Type.Literal('poll'), Type.Literal('bootstrap'), Type.Literal('webhook'), Type.Literal('none')], {
    description: 'Where the state in force comes from: the last poll, the backup file at start, or a webhook override.',
  }),
  strategies: Type.Integer(),
  evaluations: Type.Object(
    { ro: ByEnvironment, rw: ByEnvironment, admin: ByEnvironment },
    { description: 'Result for each token type and agent environment, with no other context (constraints on role, server, tool... are not applied).' },
  ),
});

export const FlagsOverview = Type.Object({
  environment: Type.String({ description: 'The Unleash environment the control plane reads: toggle flags in this one.' }),
  ready: Type.Boolean({ description: 'False: flags never loaded; every decision is DEPENDENCY_UNAVAILABLE.' }),
  source: Type.Union([Type.Literal('poll'), Type.Literal('bootstrap'), Type.Literal('none')]),
  last_fetch_at: Timestamp,
  last_error_at: Timestamp,
  last_error: Type.Union([Type.String(), Type.Null()]),
  stale: Type.Boolean({ description: 'No successful fetch for stale_after_s: the last fetched state stays in force.' }),
  stale_after_s: Type.Integer(),
  revision: Type.Union([Type.Integer(), Type.Null()], { description: 'Unleash revision (event id) of the polled data.' }),
  backup: Type.Object({ state: Type.String(), age_s: Type.Union([Type.Integer(), Type.Null()]) }),
  overrides: Type.Array(FlagOverrideView),
  flags: Type.Array(FlagEntry),
});
