import { type Static, Type } from 'typebox';
import { REASON_PATTERN, REASON_TEXT } from '../tokens/names.js';
import { EnvironmentSchema, Timestamp } from '../tokens/schemas.js';

const Target = Type.Union(
  [
    Type.Literal('everything'),
    Type.Literal('server'),
    Type.Literal('capability'),
    Type.Literal('token'),
    Type.Literal('project'),
    Type.Literal('role'),
    Type.Literal('environment'),
    Type.Literal('session'),
  ],
  { description: 'What to stop. Each target needs its own field(s): server; capability (+ optional server); token_id; project_id; role; environment; session_id.' },
);
const CapabilitySchema = Type.Union([Type.Literal('read'), Type.Literal('write'), Type.Literal('delete')]);
// Reasons are shown to agents in KILL_SWITCH denials, in alerts and one kill a line by `killswitch kills`:
// a line break or an escape sequence would forge a line of its own there.
const Reason = Type.String({ minLength: 1, maxLength: 1000, pattern: REASON_PATTERN, description: `Why. ${REASON_TEXT}` });

// `format: uuid` alone answers `must match format "uuid"`, which does not say where the id is found: the
// same check as a pattern fails first (Ajv checks pattern before format), and the error handler then
// answers with the field's description (src/http/error-handler.ts).
const UUID_PATTERN = '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$';

export const CreateKillBody = Type.Object(
  {
    target: Target,
    server: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$', description: 'A server of the policy.' })),
    capability: Type.Optional(CapabilitySchema),
    token_id: Type.Optional(
      Type.String({
        format: 'uuid',
        pattern: UUID_PATTERN,
        description:
          "The agent token's id, a UUID (not its display prefix such as mcp_rw_XFuj…, and never the token itself): the admin UI's Tokens page shows it, and GET /v1/keys lists it as `id` beside each `display_prefix`. `killswitch kill --token` also takes the display prefix.",
      }),
    ),
    project_id: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._-]+$', description: 'A project some agent token was issued to (revoked ones count).' })),
    role: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9._-]{1,100}$', description: 'A role of the policy.' })),
    environment: Type.Optional(EnvironmentSchema),
    session_id: Type.Optional(
      Type.String({
        format: 'uuid',
        pattern: UUID_PATTERN,
        description: "The session's id, a UUID: the admin UI's Sessions page shows it, and GET /v1/sessions?token=<token id> lists the sessions of a token.",
      }),
    ),
    reason: Type.String({
      minLength: 1,
      maxLength: 1000,
      pattern: REASON_PATTERN,
      description: `Shown in every denial the kill causes, in the audit trail and in the alert; stored and shown with credentials masked (docs/audit.md, "Redaction"). ${REASON_TEXT}`,
    }),
    expires_in: Type.Optional(Type.Integer({ minimum: 1, maximum: 2_592_000, description: 'Seconds until the kill lifts itself. Default: until an operator lifts it.' })),
  },
  { additionalProperties: false },
);
export type CreateKillBody = Static<typeof CreateKillBody>;

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);
const DateTime = Type.Union([Timestamp, Type.Null()]);

export const Kill = Type.Object({
  id: Type.String({ format: 'uuid' }),
  target: Target,
  target_key: Type.String({ description: 'What the gate matches: all, server:<s>, cap:<c>, cap:<s>:<c>, token:<id>, project:<p>, role:<r>, env:<e>, session:<id>.' }),
  description: Type.String({ description: 'The target in words.' }),
  server: Nullable(Type.String()),
  capability: Type.Union([CapabilitySchema, Type.Null()]),
  token_id: Nullable(Type.String()),
  project_id: Nullable(Type.String()),
  role: Nullable(Type.String()),
  environment: Type.Union([EnvironmentSchema, Type.Null()]),
  session_id: Nullable(Type.String()),
  reason: Type.String(),
  created_by: Type.String(),
  created_at: Timestamp,
  expires_at: DateTime,
  lifted_at: DateTime,
  lifted_by: Nullable(Type.String()),
  lift_reason: Nullable(Type.String()),
  state: Type.Union([Type.Literal('active'), Type.Literal('lifted'), Type.Literal('expired')]),
});

export const CreatedKill = Type.Object({
  kill: Kill,
  enforced: Type.Boolean({ description: 'False when Redis did not take the kill: decisions deny anyway while Redis is away (fail closed), and the kill is applied from Postgres when it is back.' }),
  active_tokens: Type.Optional(Type.Integer({ minimum: 0, description: 'Project kills: how many live (neither revoked nor expired) agent tokens of the project it covers now.' })),
  message: Type.String(),
});

export const LiftedKill = Type.Object({ kill: Kill, message: Type.String() });

export const ListKillsQuery = Type.Object(
  {
    state: Type.Optional(Type.Union([Type.Literal('active'), Type.Literal('lifted'), Type.Literal('expired'), Type.Literal('all')], { default: 'active' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })),
    before: Type.Optional(Type.String({ format: 'uuid', description: 'Id of the last kill of the previous page.' })),
  },
  { additionalProperties: false },
);

export const KillList = Type.Object({ kills: Type.Array(Kill), next_before: Type.Union([Type.String(), Type.Null()]) });
export const KillIdParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false });
export const LiftKillBody = Type.Object({ reason: Reason }, { additionalProperties: false });
