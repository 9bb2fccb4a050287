import { Type } from 'typebox';
import { TIMELINE_MAX_LIMIT, TIMELINE_TYPES, type TimelineType } from './service.js';

const Nullable = Type.Union([Type.String(), Type.Null()]);

export const TimelineQuerySchema = Type.Object(
  {
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Inclusive start (ISO 8601). Default: one hour before `to`. With `cursor`: leave it out, or send the same.' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: 'Exclusive end (ISO 8601). Default: now. With `cursor`: leave it out, or send the same.' })),
    target: Type.Optional(
      Type.String({
        maxLength: 300,
        pattern: '^(server|token|project|session|environment):.+$',
        description:
          'Only what concerns this: server:<name>, token:<id>, project:<id>, session:<id> or environment:<name>. Kills that cover it (e.g. a kill of everything) and installation-wide events (flag changes, policy reloads) are always included. A token or session that does not exist, or a project no agent token or kill names (or outside the projects of a limited key), is 404. With `cursor`: leave it out, or send the same.',
      }),
    ),
    decisions: Type.Optional(
      // No schema default: with a cursor, a decisions left out means the cursor's, not `all`.
      Type.Union([Type.Literal('all'), Type.Literal('denials'), Type.Literal('none')], {
        description: 'Which decisions to include: all (the default), only denials, or none. With `cursor`: leave it out, or send the same.',
      }),
    ),
    format: Type.Optional(
      Type.Union([Type.Literal('json'), Type.Literal('jsonl'), Type.Literal('csv')], {
        default: 'json',
        description:
          'json (this schema), or an export: jsonl (one event per line) or csv. Every format answers the header `X-Truncated: true` when the window holds more than `limit` events, and then `X-Next-Cursor`, the cursor of the rest; a truncated export ends with a line (jsonl, with `next`) or row (csv) of type `truncated` saying so and how to get the rest.',
      }),
    ),
    limit: Type.Optional(
      Type.Integer({ minimum: 1, maximum: TIMELINE_MAX_LIMIT, default: 1_000, description: `Most events to return (at most ${TIMELINE_MAX_LIMIT}). Exports of a whole incident should ask for the maximum.` }),
    ),
    cursor: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 1_000,
        description:
          'Continue a truncated answer: its `next` (JSON), `X-Next-Cursor` header or `next` of its `truncated` line, unchanged. It carries the window, target and decisions; the answer lists the events after the last one of the previous answer, each exactly once, also when many share one millisecond. Any `limit` and `format`.',
      }),
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
  truncated: Type.Boolean({ description: 'More events than `limit` in the window (after the cursor, when one was given): ask again with `cursor` set to `next`.' }),
  next: Type.Union([Type.String(), Type.Null()], { description: 'When truncated: the cursor of the rest (pass it as `cursor`); null on the last page.' }),
  counts: Type.Record(Type.String(), Type.Integer()),
});
