import { type Static, Type } from 'typebox';
import { NAME_MAX_LENGTH, NAME_PATTERN, ONE_LINE, REASON_PATTERN, REASON_TEXT, TEXT_PATTERN } from './names.js';

export const Id = Type.String({ format: 'uuid' });
/**
 * An id the control plane issued (a uuid) where an invented one must still be answered as unknown
 * (SESSION_UNKNOWN, 404, no rows) rather than refused as malformed: any string, read in lower case like
 * every `format: uuid` (the x-lowercase keyword, src/app.ts), so one sent in upper case names the same
 * session or decision.
 */
export const IssuedId = (description: string, maxLength = 100) => Type.String({ minLength: 1, maxLength, 'x-lowercase': true, description });
export const IdParams = Type.Object({ id: Id }, { additionalProperties: false });
export const TokenTypeSchema = Type.Union([Type.Literal('ro'), Type.Literal('rw'), Type.Literal('admin')]);
export const EnvironmentSchema = Type.Union([Type.Literal('development'), Type.Literal('staging'), Type.Literal('production')]);
export const OperatorRoleSchema = Type.Union([Type.Literal('viewer'), Type.Literal('operator'), Type.Literal('owner')]);
// Blank names and names of invisible characters only are refused by CredentialService (nameProblem),
// with a message a pattern's description could not give.
const Name = Type.String({
  minLength: 1,
  maxLength: NAME_MAX_LENGTH,
  pattern: NAME_PATTERN,
  description: 'Not blank; no control characters, line separators or bidirectional marks/overrides; at least one visible character, not only spaces or zero-width ones (it is echoed in alerts and audit rows).',
});
const ProjectId = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._-]+$' });
const ExpiresIn = Type.Integer({ minimum: 60, maximum: 31_536_000, description: 'Lifetime in seconds.' });
// Quoted in alerts, audit rows and (tool rejections) to agents.
const Reason = Type.String({ minLength: 1, maxLength: 1000, pattern: REASON_PATTERN, description: `Why. ${REASON_TEXT}` });

export const CreateAgentTokenBody = Type.Object(
  {
    type: TokenTypeSchema,
    role: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._-]+$', description: 'Policy role of the agent, e.g. code_agent.' }),
    project_id: ProjectId,
    environment: EnvironmentSchema,
    description: Type.Optional(Type.String({ maxLength: 1000, pattern: TEXT_PATTERN, description: `What the token is for. ${ONE_LINE}` })),
    scopes: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 100 }), { maxItems: 50, uniqueItems: true })),
    expires_in: Type.Optional(ExpiresIn),
    acknowledge_write_risk: Type.Optional(Type.Boolean({ description: 'Required (true) for rw and admin tokens: they can modify data (without it: 400 with the warning text).' })),
    confirm_admin: Type.Optional(Type.Boolean({ description: 'Required (true) for admin tokens, in addition to acknowledge_write_risk.' })),
    confirm_project_id: Type.Optional(Type.String({ description: 'For admin tokens: project_id repeated.' })),
  },
  { additionalProperties: false },
);
export type CreateAgentTokenBody = Static<typeof CreateAgentTokenBody>;

// Rows carry Date objects; the serializer writes them as ISO strings.
export const Timestamp = Type.Unsafe<Date | string>({ type: 'string', format: 'date-time' });
const DateTime = Type.Union([Timestamp, Type.Null()]);

export const AgentToken = Type.Object({
  id: Id,
  type: TokenTypeSchema,
  key_prefix: Type.String(),
  display_prefix: Type.String(),
  scopes: Type.Array(Type.String()),
  role: Type.String(),
  project_id: Type.String(),
  environment: EnvironmentSchema,
  description: Type.String(),
  created_by: Type.String(),
  rotated_by: Type.Array(Type.String(), {
    description: 'Operators who rotated this token or a token it was rotated from (each received a raw secret of it); with separate_approver, they may not approve its calls, like its creator.',
  }),
  rotated_to: Type.Union([Id, Type.Null()], {
    description: 'The token this one was rotated into (POST /v1/keys/{id}/rotate), or null. A rotated token cannot be rotated again (409): rotate its successor.',
  }),
  rotated_at: DateTime,
  created_at: Timestamp,
  expires_at: DateTime,
  revoked_at: DateTime,
  revoked_by: Type.Union([Type.String(), Type.Null()]),
  revoke_reason: Type.Union([Type.String(), Type.Null()]),
  last_used_at: DateTime,
});

/** POST /v1/keys/:id/revoke: the token as revoked, and whether every replica was told at once. */
export const RevokedAgentToken = Type.Object({
  ...AgentToken.properties,
  announced: Type.Boolean({
    description:
      'Whether the revocation reached the other replicas at once (through Redis). false: this replica refuses the token already and the others when their cached entry of it expires (TOKEN_CACHE_TTL_MS); `warning` says so. Revoking again (200, the first revocation kept) announces it again.',
  }),
  warning: Type.Optional(Type.String({ description: 'Present when `announced` is false: what that means and until when other replicas may still accept the token.' })),
});

/** An agent token as GET /v1/keys and GET /v1/keys/:id show it: with its halt in force, if any. */
export const ListedAgentToken = Type.Object({
  ...AgentToken.properties,
  halt: Type.Union(
    [
      Type.Object({
        trigger: Type.String({ description: 'The kill-switch trigger that halted it, e.g. WRITE_IN_READ_SESSION.' }),
        halted_at: Timestamp,
      }),
      Type.Null(),
    ],
    { description: 'The halt in force on this token (every call refused with SESSION_HALTED until an operator resumes it: POST /v1/keys/{id}/resume), or null.' },
  ),
});

export const CreatedAgentToken = Type.Object({
  token: Type.String({ description: 'The raw token. Shown once; only a keyed hash is stored.' }),
  key: AgentToken,
  warning: Type.Optional(
    Type.String({ description: 'For rw and admin tokens, the write-risk warning; for a role the policy in force does not define, which roles it does (the token is issued all the same).' }),
  ),
});

export const ListAgentTokensQuery = Type.Object(
  {
    type: Type.Optional(TokenTypeSchema),
    project: Type.Optional(ProjectId),
    revoked: Type.Optional(Type.Boolean()),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })),
    before: Type.Optional(Id),
  },
  { additionalProperties: false },
);

export const ReasonBody = Type.Object({ reason: Reason }, { additionalProperties: false });

export const CreateGatewayKeyBody = Type.Object({ name: Name, expires_in: Type.Optional(ExpiresIn) }, { additionalProperties: false });
export const GatewayKey = Type.Object({
  id: Id,
  name: Type.String(),
  display_prefix: Type.String(),
  created_by: Type.String(),
  created_at: Timestamp,
  expires_at: DateTime,
  revoked_at: DateTime,
  last_used_at: DateTime,
});
export const CreatedGatewayKey = Type.Object({ key: Type.String(), gateway_key: GatewayKey });

export const CreateOperatorKeyBody = Type.Object(
  {
    name: Name,
    role: OperatorRoleSchema,
    projects: Type.Optional(Type.Array(ProjectId, { minItems: 1, maxItems: 100, uniqueItems: true })),
    expires_in: Type.Optional(ExpiresIn),
  },
  { additionalProperties: false },
);
export const OperatorKey = Type.Object({
  ...GatewayKey.properties,
  role: OperatorRoleSchema,
  projects: Type.Union([Type.Array(Type.String()), Type.Null()]),
});
/** GET /v1/operator-keys/me: the key that made the request, as the control plane knows it. */
export const CurrentOperatorKey = Type.Object({
  id: Type.String({ format: 'uuid' }),
  name: Type.String(),
  role: OperatorRoleSchema,
  projects: Type.Union([Type.Array(Type.String()), Type.Null()], { description: 'The projects this key is limited to; null: every project.' }),
  expires_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'When this key stops working; null: never.' }),
});
export const CreatedOperatorKey = Type.Object({ key: Type.String(), operator_key: OperatorKey });

export const ScopeCatalogue = Type.Object({
  scopes: Type.Array(
    Type.Object({
      scope: Type.String(),
      capability: Type.String(),
      allowed_types: Type.Array(TokenTypeSchema),
      doc: Type.String(),
    }),
  ),
  defaults: Type.Object({ ro: Type.Array(Type.String()), rw: Type.Array(Type.String()), admin: Type.Array(Type.String()) }),
  write_risk_warning: Type.String(),
});

export const BulkRevokeBody = Type.Object(
  {
    dry_run: Type.Boolean({ description: 'true: only count (and list the first 100). false: revoke; needs reason and expected_count from the dry run.' }),
    project_id: Type.Optional(ProjectId),
    type: Type.Optional(TokenTypeSchema),
    created_by: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'Creator as stored ("operator:<id>"), or an operator key id.' })),
    created_before: Type.Optional(Type.String({ format: 'date-time' })),
    last_used_before: Type.Optional(Type.String({ format: 'date-time', description: 'Idle since before this: last used before it, or never used and created before it.' })),
    reason: Type.Optional(Reason),
    expected_count: Type.Optional(Type.Integer({ minimum: 0, description: 'The count the dry run answered; if the filter now matches another number, nothing is revoked (409).' })),
  },
  { additionalProperties: false },
);
export type BulkRevokeBody = Static<typeof BulkRevokeBody>;

export const BulkRevokeResult = Type.Object({
  dry_run: Type.Boolean(),
  count: Type.Integer({ description: 'Dry run: tokens that would be revoked. Otherwise: tokens revoked.' }),
  tokens: Type.Array(AgentToken, { description: 'The first 100 of them, oldest first.' }),
  message: Type.String(),
});

export const RotateBody = Type.Object(
  {
    grace_seconds: Type.Integer({ minimum: 0, maximum: 604_800, description: 'How long the old token keeps working (0: it stops now).' }),
    reason: Type.Optional(Reason),
  },
  { additionalProperties: false },
);

export const RotatedAgentToken = Type.Object({
  token: Type.String({ description: 'The new raw token. Shown once.' }),
  key: AgentToken,
  previous: AgentToken,
  grace_until: Timestamp,
  warning: Type.Optional(Type.String()),
  message: Type.String(),
});
