import { type Static, Type } from 'typebox';
import { ARGUMENTS_MAX_CHARS } from '../limits/summary.js';
import { REASON_PATTERN, REASON_TEXT, TEXT_PATTERN } from '../tokens/names.js';
import { Timestamp } from '../tokens/schemas.js';

const Id = Type.String({ format: 'uuid' });
const DateTime = Type.Union([Timestamp, Type.Null()]);
const ServerName = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._-]+$' });
const State = Type.Union([Type.Literal('active'), Type.Literal('halted'), Type.Literal('closed')]);

export const OpenSessionBody = Type.Object(
  {
    read_only: Type.Optional(Type.Boolean({ description: 'Any write or delete call in this session halts it (WRITE_IN_READ_SESSION). Always true for mcp_ro_ tokens.' })),
    servers: Type.Optional(Type.Array(ServerName, { minItems: 1, maxItems: 50, uniqueItems: true, description: 'The only servers this session may call; another server halts it (UNAUTHORIZED_SERVER). One this token will be refused (not in the policy, prohibited, forbidden or not allowed for its role in its environment) is accepted, named in `warnings` of the answer: its calls are denied and halt as usual.' })),
    purpose: Type.Optional(
      Type.String({
        maxLength: 1000,
        pattern: TEXT_PATTERN,
        description: 'Declared purpose, kept with the session and in the audit trail. One line: no control characters (line breaks included), line or paragraph separators, or bidirectional marks, embeddings, overrides or isolates.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type OpenSessionBody = Static<typeof OpenSessionBody>;

export const OpenedSession = Type.Object({
  session_id: Id,
  state: Type.Union([Type.Literal('active'), Type.Literal('halted')]),
  trigger: Type.Union([Type.String(), Type.Null()]),
  read_only: Type.Boolean(),
  servers: Type.Union([Type.Array(Type.String()), Type.Null()]),
  purpose: Type.String(),
  created_at: Timestamp,
  idle_timeout_s: Type.Integer(),
  message: Type.String(),
  warnings: Type.Optional(
    Type.Array(
      Type.Object({
        field: Type.String({ description: 'The declared item: `servers.<i>`, its index in the request.' }),
        problem: Type.String({ description: 'Why every call to it will be refused, in the words a decision would use, and what that call does.' }),
        code: Type.String({ description: 'The decision code every call to that server gets: UNKNOWN_SERVER or PERMISSION_DENIED.' }),
        trigger: Type.Union([Type.String(), Type.Null()], { description: 'The kill-switch trigger that call fires (UNAUTHORIZED_SERVER), or null when it is refused without a halt (a prohibited capability).' }),
        halts_token: Type.Boolean({ description: 'The trigger halts every session of the token too (policy halt_token_on).' }),
      }),
      {
        description:
          "Present when the declared scope names a server this token will be refused, checked as a decision would check a call to it: one the policy does not list (UNKNOWN_SERVER), one it prohibits, one the token's role may not use in the token's environment (in its forbidden servers, or not in its allowed servers: default deny), or one whose every capability a prohibited capability refuses (PERMISSION_DENIED). One per such server, in the order declared. The session is opened all the same (a declaration is not a call, and a gateway declares every server of its config); the first call to such a server is denied and, except for a prohibited capability, halts the session (and, with halt_token_on, the token). Flags, kills, limits, grants and scopes are checked per call and not here.",
      },
    ),
  ),
});

// The entries of a session's last-calls list (src/limits/summary.ts, CallSummary and CallOutcome), as
// GET /v1/sessions/:id and a decision's `session.last_calls` show them: closed, every field described.
const Outcome = Type.Object(
  {
    status: Type.String({ description: 'The status the gateway reported (POST /v1/decisions/:id/result): success, error, timeout, withheld or cancelled.' }),
    duration_ms: Type.Optional(Type.Integer()),
    result_bytes: Type.Optional(Type.Integer()),
    rows: Type.Optional(Type.Integer()),
    error: Type.Optional(Type.String({ description: 'The reported error, cut to 500 characters.' })),
  },
  { additionalProperties: false, description: 'What the gateway reported after the call; absent until a result is reported (and for denied calls).' },
);

export const CallSummarySchema = Type.Object(
  {
    id: Type.String({ description: 'The decision id of the call.' }),
    at: Type.Integer({ description: 'When the control plane saw the call: milliseconds since the Unix epoch (Redis time), not an ISO date.' }),
    server: Type.String(),
    tool: Type.String(),
    args: Type.String({
      description: `The call's arguments as a JSON-encoded string (not an object), secrets redacted; longer than ${ARGUMENTS_MAX_CHARS} characters, it is cut to ${ARGUMENTS_MAX_CHARS} ending in "…" and no longer parses as JSON.`,
    }),
    decision: Type.Union([Type.Literal('allow'), Type.Literal('deny')]),
    code: Type.String({ description: 'The decision code of the call (docs/errors.md).' }),
    outcome: Type.Optional(Outcome),
  },
  { additionalProperties: false, description: 'One recent call of the session, newest first.' },
);

const SessionFields = {
  id: Id,
  token_id: Id,
  project_id: Type.String(),
  gateway_id: Type.Union([Id, Type.Null()]),
  read_only: Type.Boolean(),
  servers: Type.Union([Type.Array(Type.String()), Type.Null()]),
  purpose: Type.String(),
  state: State,
  trigger: Type.Union([Type.String(), Type.Null()]),
  halted_by: Type.Union([Type.Literal('session'), Type.Literal('token'), Type.Null()]),
  halted_at: DateTime,
  token_halt: Type.Union([Type.Object({ trigger: Type.String(), halted_at: Timestamp }), Type.Null()]),
  created_at: Timestamp,
  closed_at: DateTime,
  closed_by: Type.Union([Type.String(), Type.Null()], {
    description:
      'Who closed it: `gateway:<gateway key id>` (its gateway), `operator:<operator key id>` or `idle-sweep` (SESSION_IDLE_TIMEOUT_S without an allowed call); the actor of its session.closed audit row. Null while open, and for sessions closed before this field existed.',
  }),
};

export const SessionSummary = Type.Object(SessionFields);

export const SessionDetail = Type.Object({
  ...SessionFields,
  halt_summary: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  last_calls: Type.Array(CallSummarySchema, {
    description:
      "The session's last 3 calls, newest first: every allowed call; the calls the Redis step denied (an operator kill's KILL_SWITCH, a read-only or undeclared-server PERMISSION_DENIED, a limit, a cascade); a call an earlier step denied with a halt; a call denied after the Redis step allowed it (APPROVAL_USED, DEPENDENCY_UNAVAILABLE). Not the other denials of earlier steps (an Unleash flag's KILL_SWITCH, an unknown or changed tool, a missing grant or scope), nor calls of a session or token halted already: the audit trail has every call. From Redis, or the snapshot taken at the halt once Redis no longer has them (docs/sessions-and-limits.md).",
  }),
  halts: Type.Array(
    Type.Object({
      trigger: Type.String(),
      halted_at: Timestamp,
      resumed_at: DateTime,
      resumed_by: Type.Union([Type.String(), Type.Null()]),
      resume_reason: Type.Union([Type.String(), Type.Null()]),
    }),
  ),
});

export const ListSessionsQuery = Type.Object(
  {
    state: Type.Optional(State),
    token: Type.Optional(Id),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 50 })),
    cursor: Type.Optional(Id),
  },
  { additionalProperties: false },
);
export type ListSessionsQuery = Static<typeof ListSessionsQuery>;

export const SessionList = Type.Object({ sessions: Type.Array(SessionSummary), next_cursor: Type.Union([Id, Type.Null()]) });

export const IdParams = Type.Object({ id: Id }, { additionalProperties: false });
export const ResumeBody = Type.Object(
  { reason: Type.String({ minLength: 1, maxLength: 1000, pattern: REASON_PATTERN, description: `Why it is safe to continue (audited). ${REASON_TEXT}` }) },
  { additionalProperties: false },
);

export const ResumedSession = Type.Object({
  session: SessionDetail,
  resumed_trigger: Type.String(),
  token_still_halted: Type.Boolean(),
  message: Type.String(),
});

export const ResumedToken = Type.Object({
  token_id: Id,
  token_halt: Type.Union([Type.Object({ trigger: Type.String(), halted_at: Timestamp, session_id: Type.Union([Id, Type.Null()]) }), Type.Null()]),
  sessions_resumed: Type.Array(Id),
  message: Type.String(),
});

export const ClosedSession = Type.Object({
  session: SessionSummary,
  already_closed: Type.Boolean({ description: 'It was closed before this request (idled out, or closed by an earlier request); nothing changed.' }),
  message: Type.String(),
});
