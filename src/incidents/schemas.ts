import { Type } from 'typebox';
import { TIMELINE_MAX_LIMIT, TIMELINE_TYPES, type TimelineType } from './service.js';

const Nullable = Type.Union([Type.String(), Type.Null()]);

export const TimelineQuerySchema = Type.Object(
  {
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Inclusive start (ISO 8601). Default: one hour before `to`.' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: 'Exclusive end (ISO 8601). Default: now.' })),
    target: Type.Optional(
      Type.String({
        maxLength: 300,
        pattern: '^(server|token|project|session|environment):.+$',
        description: 'Only what concerns this: server:<name>, token:<id>, project:<id>, session:<id> or environment:<name>. Kills that cover it (e.g. a kill of everything) and installation-wide events (flag changes, policy reloads) are always included.',
      }),
    ),
    decisions: Type.Optional(
      Type.Union([Type.Literal('all'), Type.Literal('denials'), Type.Literal('none')], { default: 'all', description: 'Which decisions to include: all, only denials, or none.' }),
    ),
    format: Type.Optional(
      Type.Union([Type.Literal('json'), Type.Literal('jsonl'), Type.Literal('csv')], {
        default: 'json',
        description:
          'json (this schema), or an export: jsonl (one event per line) or csv. Every format answers the header `X-Truncated: true` when the window holds more than `limit` events; a truncated export then ends with a line (jsonl) or row (csv) of type `truncated` saying so and how to get the rest.',
      }),
    ),
    limit: Type.Optional(
      Type.Integer({ minimum: 1, maximum: TIMELINE_MAX_LIMIT, default: 1_000, description: `Most events to return (at most ${TIMELINE_MAX_LIMIT}). Exports of a whole incident should ask for the maximum.` }),
    ),
  },
  { additionalProperties: false },
);

export const TimelineEventSchema = Type.Object({
  at: Type.String({ format: 'date-time' }),
  type: Type.Unsafe<TimelineType>({ type: 'string', enum: [...TIMELINE_TYPES] }),
  source: Type.Union([Type.Literal('audit'), Type.Literal('alert'), Type.Literal('kill')]),
  id: Type.String(),
  summary: Type.String(),
  actor: Nullable,
  severity: Nullable,
  decision: Nullable,
  code: Nullable,
  token_id: Nullable,
  project_id: Nullable,
  session_id: Nullable,
  server: Nullable,
  tool: Nullable,
  kill_id: Nullable,
  decision_id: Nullable,
});

export const TimelineSchema = Type.Object({
  from: Type.String(),
  to: Type.String(),
  target: Nullable,
  events: Type.Array(TimelineEventSchema),
  truncated: Type.Boolean({ description: 'More events than `limit` in the window: continue from the last event’s `at`.' }),
  counts: Type.Record(Type.String(), Type.Integer()),
});
