import { type Static, Type } from 'typebox';
import { IssuedId } from '../tokens/schemas.js';

const Str = Type.Union([Type.String(), Type.Null()]);
const Num = Type.Union([Type.Number(), Type.Null()]);
const Timestamp = Type.Unsafe<Date | string>({ type: 'string', format: 'date-time' });
const Filter = (description: string) => Type.Optional(Type.String({ minLength: 1, maxLength: 200, description }));

export const AuditEventSchema = Type.Object(
  {
    id: Type.String(),
    ts: Timestamp,
    replica_id: Type.String({ description: 'The hash chain this row belongs to (one per writer lifetime).' }),
    seq: Type.Integer({ description: 'Position in its chain, from 1.' }),
    kind: Type.String({ description: 'INTENT, RESULT, ADMIN, POLICY_RELOAD, CHAIN_START, CHAIN_END ...' }),
    decision_id: Str,
    actor_type: Type.String({ description: 'mcp_token, operator or system.' }),
    actor_id: Str,
    token_id: Str,
    token_type: Str,
    project_id: Str,
    environment: Str,
    session_id: Str,
    gateway_id: Str,
    server: Str,
    tool: Str,
    capability: Str,
    arguments: Type.Unknown({ description: 'The call arguments in full, secrets redacted.' }),
    flags: Type.Unknown({ description: 'Unleash flags evaluated for this call: {"name": enabled}.' }),
    decision: Str,
    code: Str,
    message: Str,
    purpose: Str,
    action: Str,
    target: Str,
    result_status: Str,
    summary: Str,
    duration_ms: Num,
    result_bytes: Num,
    rows: Num,
    ai_client: Str,
    client_name: Str,
    client_version: Str,
    user_agent: Str,
    ip: Str,
    details: Type.Unknown(),
    prev_hash: Type.String(),
    hash: Type.String(),
  },
  { description: 'One audit row; docs/audit.md describes every column.' },
);

const filterFields = {
  token: Type.Optional(IssuedId('Agent token id.', 200)),
  type: Type.Optional(Type.Union([Type.Literal('ro'), Type.Literal('rw'), Type.Literal('admin')], { description: 'Agent token type.' })),
  project: Filter('Project id.'),
  session: Type.Optional(IssuedId('Session id.', 200)),
  server: Filter('MCP server name.'),
  tool: Filter('Tool name.'),
  decision: Type.Optional(Type.Union([Type.Literal('allow'), Type.Literal('deny')])),
  code: Filter('Decision code, e.g. PERMISSION_DENIED.'),
  kind: Type.Optional(Type.String({ pattern: '^[A-Z][A-Z_]*$', maxLength: 50, description: 'INTENT, RESULT, ADMIN ...' })),
  decision_id: Type.Optional(IssuedId('One decision: its INTENT and RESULT rows.', 200)),
  actor: Filter('Actor id (token id, operator key id or system part).'),
  from: Type.Optional(Type.String({ format: 'date-time', description: 'Inclusive lower bound of ts (ISO 8601); before `to` when both are sent (else 400).' })),
  to: Type.Optional(Type.String({ format: 'date-time', description: 'Exclusive upper bound of ts (ISO 8601).' })),
};

export const ListAuditQuery = Type.Object(
  {
    ...filterFields,
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
    cursor: Type.Optional(Type.String({ maxLength: 500, description: 'The `next` value of the previous page.' })),
    after: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 12000,
        description:
          'The `follow` value of an earlier answer: the matching rows committed since that answer began to be read (a row committed late, such as one replayed from a spool after a Postgres outage, is among them whatever its `ts`), each once across the answers of a chain of `follow` values, oldest commit first; not with `cursor`. docs/audit.md, "Following the trail".',
      }),
    ),
  },
  { additionalProperties: false },
);
export type ListAuditQuery = Static<typeof ListAuditQuery>;

export const AuditPage = Type.Object({
  events: Type.Array(AuditEventSchema),
  next: Type.Union([Type.String(), Type.Null()], { description: 'Cursor of the next (older) page; null on the last page, and with `after`.' }),
  follow: Type.String({
    description:
      'Send it as `after` for the matching rows committed after this answer began to be read. With `after`: the next such value; an answer cut at `limit` continues there (ask again at once).',
  }),
});

export const ExportAuditQuery = Type.Object(
  {
    ...filterFields,
    format: Type.Optional(Type.Union([Type.Literal('csv'), Type.Literal('jsonl')], { default: 'csv' })),
  },
  { additionalProperties: false },
);
export type ExportAuditQuery = Static<typeof ExportAuditQuery>;

export const UsageQuery = Type.Object(
  {
    token: filterFields.token,
    type: filterFields.type,
    project: filterFields.project,
    server: filterFields.server,
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Default: 30 days before `to`. Before `to` (else 400).' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: 'Default: now.' })),
    format: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('csv')], { default: 'json' })),
  },
  { additionalProperties: false },
);
export type UsageQuery = Static<typeof UsageQuery>;

const Counts = {
  calls: Type.Integer({ description: 'Decisions (INTENT rows).' }),
  allowed: Type.Integer(),
  denied: Type.Integer(),
  results: Type.Integer({ description: 'RESULT rows reported by the gateway.' }),
  successes: Type.Integer({ description: 'RESULT rows with status success or ok.' }),
  errors: Type.Integer({ description: 'RESULT rows with any other status.' }),
};

export const TokenUsageSchema = Type.Object({
  token_id: Type.String(),
  token_type: Str,
  project_id: Str,
  ...Counts,
  success_rate: Num,
  error_rate: Num,
  avg_duration_ms: Num,
  last_used: Str,
  operations: Type.Array(Type.Object({ server: Str, tool: Str, capability: Str, ...Counts })),
  per_day: Type.Array(Type.Object({ day: Type.String(), ...Counts })),
});

export const UsageReport = Type.Object({
  from: Type.String(),
  to: Type.String(),
  tokens: Type.Array(TokenUsageSchema),
});

export const MonthlyUsageReport = Type.Object({
  months: Type.Array(
    Type.Object({
      month: Type.String(),
      token_id: Str,
      token_type: Str,
      project_id: Str,
      server: Str,
      tool: Str,
      capability: Str,
      ...Counts,
      last_at: Type.Union([Timestamp, Type.Null()]),
    }),
  ),
});

export const VerifyReportSchema = Type.Object({
  ok: Type.Boolean(),
  chains: Type.Integer(),
  rows: Type.Integer(),
  broken_rows: Type.Integer({ description: 'rows that do not verify (a missing run of rows counts once)' }),
  broken: Type.Array(Type.Object({ replica_id: Type.String(), seq: Type.Integer(), id: Str, reason: Type.String() }), { description: 'every break of every chain, up to 100 a chain' }),
  open: Type.Array(Type.Object({ replica_id: Type.String(), last_seq: Type.Integer(), last_ts: Type.String() }), {
    description: 'chains without a CHAIN_END row: being written, or their process stopped without shutting down; rows appended to their end are found only against a witness',
  }),
  heads: Type.Array(Type.Object({ replica_id: Type.String(), seq: Type.Integer(), hash: Type.String(), ts: Type.String() })),
  suspicious: Type.Array(
    Type.Object({ replica_id: Type.String(), seq: Type.Integer(), cut_before: Type.String(), reason: Type.String() }, { description: 'a retention anchor retention cannot have made (docs/audit.md)' }),
  ),
});
