import { Type } from 'typebox';
import { REASON_PATTERN, REASON_TEXT } from '../tokens/names.js';
import { IssuedId, Timestamp } from '../tokens/schemas.js';
import { ALERT_KIND_NAMES, ALERT_SEVERITIES, type AlertKind, type AlertSeverity } from './kinds.js';

const Id = Type.String({ format: 'uuid' });
const Text = (max: number) => Type.String({ minLength: 1, maxLength: max });
const NullableText = Type.Union([Type.String(), Type.Null()]);

export const AlertKindSchema = Type.Unsafe<AlertKind>({ type: 'string', enum: [...ALERT_KIND_NAMES], description: 'An alert kind (docs/alerts.md lists them).' });
export const AlertSeveritySchema = Type.Unsafe<AlertSeverity>({ type: 'string', enum: [...ALERT_SEVERITIES] });

export const AlertSchema = Type.Object({
  id: Id,
  kind: Type.String(),
  severity: AlertSeveritySchema,
  token_id: NullableText,
  project_id: NullableText,
  session_id: NullableText,
  server: NullableText,
  numbers: Type.Record(Type.String(), Type.Number(), { description: 'The figures behind the alert, e.g. {"used":161,"max":200,"percent":81}.' }),
  details: Type.Record(Type.String(), Type.Unknown(), { description: 'References such as kill_id, trigger, decision_id, tool.' }),
  message: Type.String(),
  created_at: Timestamp,
  acknowledged_at: Type.Union([Timestamp, Type.Null()]),
  acknowledged_by: NullableText,
  ack_note: NullableText,
});

export const ListAlertsQuery = Type.Object(
  {
    kind: Type.Optional(Type.Array(AlertKindSchema, { description: 'Repeat for several kinds: ?kind=SESSION_HALTED&kind=KILL_SWITCH' })),
    severity: Type.Optional(Type.Array(AlertSeveritySchema)),
    token: Type.Optional(IssuedId('Agent token id.', 200)),
    session: Type.Optional(IssuedId('Session id.', 200)),
    server: Type.Optional(Text(200)),
    project: Type.Optional(Text(100)),
    acknowledged: Type.Optional(Type.Boolean()),
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Inclusive lower bound on created_at; before `to` when both are sent (else 400).' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: 'Exclusive upper bound on created_at.' })),
    before: Type.Optional(Type.String({ format: 'uuid', description: 'Keyset cursor: next_before of the previous page.' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })),
  },
  { additionalProperties: false },
);

export const AlertPageSchema = Type.Object({
  alerts: Type.Array(AlertSchema),
  next_before: Type.Union([Id, Type.Null()], { description: 'Pass as `before` for the next (older) page; null on the last page.' }),
});

export const AlertIdParams = Type.Object({ id: Id }, { additionalProperties: false });

export const AckBody = Type.Object(
  { note: Type.Optional(Type.String({ maxLength: 2000, pattern: REASON_PATTERN, description: `Stored with the alert and in the audit row (credentials masked). ${REASON_TEXT}` })) },
  { additionalProperties: false },
);

export const AckMatchingBody = Type.Object(
  {
    kind: Type.Optional(Type.Array(AlertKindSchema, { minItems: 1, description: 'A kind or a list of kinds: "KILL_SWITCH" or ["KILL_SWITCH","FLAG_DISABLED"].' })),
    severity: Type.Optional(Type.Array(AlertSeveritySchema, { minItems: 1, description: 'A severity or a list of them.' })),
    before: Type.Optional(Type.String({ format: 'date-time', description: 'Only alerts raised before this instant (exclusive), e.g. when you started reading the inbox.' })),
    project_id: Type.Optional(Text(100)),
    all: Type.Optional(Type.Literal(true, { description: 'Required when no filter is given: every open alert you may acknowledge.' })),
    note: Type.String({ minLength: 1, maxLength: 2000, pattern: REASON_PATTERN, description: `Why: stored with each alert and in each audit row (credentials masked). ${REASON_TEXT}` }),
  },
  { additionalProperties: false },
);

export const AckMatchingResultSchema = Type.Object({
  acknowledged: Type.Integer({ description: 'How many alerts this request acknowledged.' }),
  ids: Type.Array(Id, { description: 'Their ids, oldest first.' }),
  remaining: Type.Integer({
    description: 'Open alerts that still match: more than one request acknowledges (1,000), or, for a key limited to projects, alerts of no project. Repeat the request (or use a key without a project limit).',
  }),
});

export const StreamQuery = Type.Object(
  {
    kind: Type.Optional(Type.Array(AlertKindSchema)),
    severity: Type.Optional(Type.Array(AlertSeveritySchema)),
  },
  { additionalProperties: false },
);
