import { type Static, Type } from 'typebox';
import { REASON_PATTERN, REASON_TEXT } from '../tokens/names.js';
import { Timestamp } from '../tokens/schemas.js';

const Str = Type.Union([Type.String(), Type.Null()]);
const When = Type.Union([Timestamp, Type.Null()]);

export const QueueKindSchema = Type.Union([Type.Literal('call'), Type.Literal('production_grant'), Type.Literal('tool_definition')]);
export const QueueStateSchema = Type.Union([
  Type.Literal('pending'),
  Type.Literal('approved'),
  Type.Literal('rejected'),
  Type.Literal('expired'),
  Type.Literal('used'),
  Type.Literal('superseded'),
]);

export const ApprovalItem = Type.Object(
  {
    id: Type.String(),
    kind: QueueKindSchema,
    grant_id: Type.Union([Type.String(), Type.Null()], { description: 'production_grant, once approved: the grant it created (GET /v1/grants).' }),
    state: QueueStateSchema,
    server: Type.String(),
    tool: Type.String(),
    token_id: Str,
    project_id: Str,
    environment: Str,
    role: Str,
    session_id: Str,
    gateway_id: Str,
    capability: Str,
    arguments: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], { description: 'The call arguments in full (secrets redacted as in the audit trail); null for tool definitions.' }),
    arguments_hash: Type.Union([Type.String(), Type.Null()], { description: 'sha256 of the canonical JSON of the real arguments: what the approval covers.' }),
    tool_hash: Type.Union([Type.String(), Type.Null()], { description: 'Tool definitions: the hash of the changed definition.' }),
    definition: Type.Unknown({ description: 'Tool definitions: the changed definition; null for calls.' }),
    rule: Type.Union([Type.String(), Type.Null()], { description: 'The policy rule that asked for approval.' }),
    separate_approver: Type.Boolean({ description: "The approver must not be an operator who held the agent token's secret: its creator, or one who rotated it (rotated_by)." }),
    requested_decision_id: Str,
    created_at: Timestamp,
    expires_at: Type.Union([Timestamp, Type.Null()], { description: 'Pending: decide before this. Approved: the call must run before this. Rejected: identical calls are refused until this.' }),
    decided_at: When,
    decided_by: Str,
    decided_by_name: Str,
    reason: Str,
    used_at: When,
    used_decision_id: Str,
  },
  { description: 'One entry of the approval queue: a tool call waiting for a human, or a changed tool definition.' },
);
export type ApprovalItem = Static<typeof ApprovalItem>;

export const ListApprovalsQuery = Type.Object(
  {
    kind: Type.Optional(QueueKindSchema),
    state: Type.Optional(QueueStateSchema),
    token: Type.Optional(Type.String({ format: 'uuid', description: 'Agent token id (calls only).' })),
    server: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })),
  },
  { additionalProperties: false },
);

export const DecideBody = Type.Object(
  {
    reason: Type.String({ minLength: 3, maxLength: 1000, pattern: REASON_PATTERN, description: `Why; recorded in the audit trail and shown to the agent on a rejection. ${REASON_TEXT}` }),
    expires_in: Type.Optional(
      Type.Integer({ minimum: 60, description: 'Approving a production_grant request: how long the grant lasts, in seconds (at most GRANT_MAX_SECONDS; default the smaller of one hour and GRANT_MAX_SECONDS).' }),
    ),
  },
  { additionalProperties: false },
);

export const ApprovalIdParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false });

export const ApprovalStatusSchema = Type.Object({
  id: Type.String(),
  state: Type.Union([Type.Literal('pending'), Type.Literal('approved'), Type.Literal('rejected'), Type.Literal('expired'), Type.Literal('used')]),
  expires_at: Timestamp,
  reason: Str,
  message: Type.String({ description: 'One line the gateway can show the agent while it waits.' }),
});
