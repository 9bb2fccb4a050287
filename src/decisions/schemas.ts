import { type Static, Type } from 'typebox';
import { DECISION_CODES, type DecisionCode } from '../errors.js';
import { COUNTER_LABELS } from '../limits/limits.js';
import { CallSummarySchema } from '../sessions/schemas.js';
import { ONE_LINE, TEXT_PATTERN } from '../tokens/names.js';
import { EnvironmentSchema, IssuedId } from '../tokens/schemas.js';

const ServerName = Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9._-]+$', description: 'Server name as in the policy file.' });
// Any name an upstream may give (MCP's own rule is narrower, and a gateway may pass older names
// through), but nothing that makes an audit row, alert or message read as something else.
const ToolName = Type.String({
  minLength: 1,
  maxLength: 200,
  pattern: TEXT_PATTERN,
  description: 'As the upstream lists it (or resources/read, prompts/get). No control characters, line or paragraph separators, or bidirectional marks, embeddings, overrides or isolates.',
});
const ToolHash = Type.String({ pattern: '^sha256:[0-9a-f]{64}$', description: 'Hash of the tool definition the agent saw (see POST /v1/gateway/tools).' });

export const Annotations = Type.Object(
  {
    title: Type.Optional(Type.String({ maxLength: 500 })),
    readOnlyHint: Type.Optional(Type.Boolean()),
    destructiveHint: Type.Optional(Type.Boolean()),
    idempotentHint: Type.Optional(Type.Boolean()),
    openWorldHint: Type.Optional(Type.Boolean()),
  },
  {
    // MCP lets servers add their own annotations; a gateway may forward them verbatim. Only the hints
    // above are read (and only for servers whose annotations the policy trusts); the rest are ignored.
    additionalProperties: true,
    maxProperties: 32,
    description: 'The tool\'s MCP annotations. Only the four hints (and title) are read, and only for servers the policy trusts; other annotations are accepted and ignored.',
  },
);

export const DecisionBody = Type.Object(
  {
    server: ServerName,
    tool: ToolName,
    arguments: Type.Record(Type.String(), Type.Unknown(), { description: 'The tool call arguments, in full (secrets are redacted in the audit trail); objects and arrays nested at most 64 levels deep (else 400 naming arguments).' }),
    session_id: IssuedId('Issued by POST /v1/sessions.'),
    environment: Type.Optional(EnvironmentSchema),
    tool_hash: Type.Optional(ToolHash),
    resources: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { maxItems: 100, description: 'Resources the call touches, normalised by the gateway.' })),
    annotations: Type.Optional(Annotations),
    client: Type.Optional(
      Type.Object(
        {
          name: Type.Optional(Type.String({ maxLength: 200, pattern: TEXT_PATTERN, description: `The MCP client's name (clientInfo.name). ${ONE_LINE}` })),
          version: Type.Optional(Type.String({ maxLength: 100, pattern: TEXT_PATTERN, description: `The MCP client's version (clientInfo.version). ${ONE_LINE}` })),
          user_agent: Type.Optional(Type.String({ maxLength: 1000, pattern: TEXT_PATTERN, description: `The HTTP client's User-Agent. ${ONE_LINE}` })),
        },
        {
          additionalProperties: false,
          description: 'Who the agent says it is, for the audit trail. The fields are one line each: a gateway should make the characters refused here spaces rather than fail every call of a client (the reference gateway does).',
        },
      ),
    ),
  },
  { additionalProperties: false },
);
export type DecisionBody = Static<typeof DecisionBody>;

export const SessionInAnswer = Type.Object({
  id: Type.String(),
  state: Type.String(),
  trigger: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  last_calls: Type.Optional(Type.Array(CallSummarySchema, { description: 'On a halt: the last 3 calls of the session, newest first.' })),
});

/** Every decision code (the one table in src/errors.ts): a string enum, cheap to serialise. */
const DecisionCodeSchema = Type.Unsafe<DecisionCode>({
  type: 'string',
  enum: Object.keys(DECISION_CODES),
  description: 'Stable decision code (docs/errors.md): OK for an allow, the reason for a denial.',
});

const LimitUse = Type.Object({ used: Type.Integer(), max: Type.Integer() }, { additionalProperties: false });

// One optional key per counter of src/limits/limits.ts (COUNTER_LABELS names them); a counter this
// version does not name would still be answered, in the same shape.
const LimitsSchema = Type.Object(
  Object.fromEntries(Object.entries(COUNTER_LABELS).map(([name, label]) => [name, Type.Optional(Type.Object(LimitUse.properties, { additionalProperties: false, description: `${label.replace('{server}', 'the server')}: used (this call included) and the maximum.` }))])),
  {
    additionalProperties: LimitUse,
    description:
      'The limits that apply to this call and how much of each is used, by counter: only the counters the policy sets for this role and server appear, and only when the call reached the limit check (empty on earlier denials). Session totals (session_calls, server_calls, server_reads, server_writes) halt the session when exceeded (SESSION_LIMIT); the per-minute and per-day ones answer RATE_LIMITED.',
  },
);

export const DecisionAnswer = Type.Object({
  decision: Type.Union([Type.Literal('allow'), Type.Literal('deny')]),
  code: DecisionCodeSchema,
  decision_id: Type.String(),
  message: Type.String(),
  session: Type.Optional(SessionInAnswer),
  limits: LimitsSchema,
  warning: Type.Optional(Type.String()),
  retry_after_s: Type.Optional(Type.Integer()),
  approval_id: Type.Optional(Type.String()),
});
export type DecisionAnswer = Static<typeof DecisionAnswer>;

const UNSAFE_KEPT_OUT =
  'Stored with line feeds and tabs as sent; every run of other control characters (ESC, a lone CR ...; CRLF is stored as a line feed), line or paragraph separators and bidirectional marks, embeddings, overrides or isolates is stored as one space (never refused: the result would be lost).';

export const ResultBody = Type.Object(
  {
    status: Type.Union([Type.Literal('success'), Type.Literal('error'), Type.Literal('timeout'), Type.Literal('withheld'), Type.Literal('cancelled')]),
    duration_ms: Type.Integer({ minimum: 0, maximum: 86_400_000 }),
    result_bytes: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    rows: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    // Multi-line by nature (an upstream's stack trace), and refusing it would lose the result report:
    // the route keeps line feeds and tabs and makes the rest of TEXT_PATTERN's characters spaces.
    error: Type.Optional(Type.String({ maxLength: 4000, description: UNSAFE_KEPT_OUT })),
    summary: Type.Optional(Type.String({ maxLength: 4000, description: UNSAFE_KEPT_OUT })),
  },
  { additionalProperties: false },
);
export type ResultBody = Static<typeof ResultBody>;

export const ResultAnswer = Type.Object({
  decision_id: Type.String(),
  recorded: Type.Boolean(),
  repeated: Type.Optional(Type.Boolean({ description: 'This report repeats the one already recorded for the decision (a retry): the answer is that first report\'s, nothing was recorded or halted again.' })),
  action: Type.Union([Type.Literal('none'), Type.Literal('withhold_and_halt')], { description: 'withhold_and_halt: the gateway must not pass the result to the agent.' }),
  trigger: Type.Optional(Type.String()),
  message: Type.String(),
  session: Type.Optional(SessionInAnswer),
});

export const DecisionIdParams = Type.Object({ id: IssuedId('The decision_id of the allowed call.') }, { additionalProperties: false });

export const ExplainBody = Type.Object(
  {
    token_id: Type.String({ format: 'uuid' }),
    server: ServerName,
    tool: ToolName,
    arguments: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    session_id: Type.Optional(
      IssuedId(
        'Explain the call in this session. Without it, the call is run in each open session of the token (the 100 most recently active; 400 naming session_id when it has more and all of those would allow) and as the first call of a new session: the answer is allow only if all would be allowed. A token that cannot open a session now (max_open_sessions, max_new_sessions_per_hour) gets TOO_MANY_SESSIONS for the new session, and the answer is the open sessions\' (deny TOO_MANY_SESSIONS with none open).',
      ),
    ),
    environment: Type.Optional(EnvironmentSchema),
    tool_hash: Type.Optional(ToolHash),
    resources: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { maxItems: 100 })),
    annotations: Type.Optional(Annotations),
  },
  { additionalProperties: false },
);

export const ExplainAnswer = Type.Object({
  decision: Type.Union([Type.Literal('allow'), Type.Literal('deny')]),
  code: Type.String(),
  message: Type.String(),
  steps: Type.Array(
    Type.Object({ step: Type.String(), verdict: Type.String(), code: Type.Optional(Type.String()), message: Type.Optional(Type.String()), micros: Type.Number() }),
  ),
  session_id: Type.Union([Type.String(), Type.Null()], {
    description:
      'The session the verdict, steps and flags are for: the session_id asked about; without one, the first open session of the token whose call would be denied (the most recently active first), or the most recently active one when none would; null: a new session of the token.',
  }),
  open_sessions: Type.Optional(Type.Integer({ description: 'Without a session_id: how many open sessions (active or halted) the token has.' })),
  sessions: Type.Optional(
    Type.Array(
      Type.Object({
        session_id: Type.Union([Type.String(), Type.Null()], { description: 'null: the first call of a new session of the token.' }),
        last_active_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'Its last call, else its opening (null: unknown, or a new session).' }),
        decision: Type.Union([Type.Literal('allow'), Type.Literal('deny')]),
        code: Type.String(),
        message: Type.String(),
      }),
      { description: 'Without a session_id: the verdict in each open session checked, the most recently active first, then in a new session.' },
    ),
  ),
  call: Type.Optional(
    Type.Object(
      {
        server: Type.String(),
        server_class: Type.String({ description: "The server's scope class in the policy (storage, memory, database ...)." }),
        tool: Type.String(),
        required_scope: Type.String({ description: 'The scope the call needs, e.g. storage:write.' }),
        capability: Type.String({ description: 'read, write, delete or admin.' }),
        scope_source: Type.String({ description: "Where the scope came from: map (the policy's tool map), protocol, user-management-name, annotation (a trusted server's hints) or untrusted-default." }),
        extra_flags: Type.Array(Type.String(), { description: 'Unleash flags the policy names for this server and capability, checked besides the built-in ones.' }),
        resource_ids: Type.Array(Type.String(), { description: 'Identities of the resources the call touches (cascade detection).' }),
        network_identities: Type.Array(Type.String(), { description: 'Hosts and database names the production patterns are matched against.' }),
      },
      { description: 'How the policy resolved the call (absent when it stopped before: an unknown server or tool).' },
    ),
  ),
  flags: Type.Array(Type.Object({ name: Type.String(), enabled: Type.Boolean() })),
  halt: Type.Optional(
    Type.Object(
      {
        trigger: Type.String({ description: 'The kill-switch trigger this denial would fire (docs/sessions-and-limits.md).' }),
        token: Type.Boolean({ description: 'True when the policy halts the token too (every session of it), not only the session.' }),
      },
      { description: 'Present when the real call would not only be denied but halt: nothing was halted by this explain.' },
    ),
  ),
});
