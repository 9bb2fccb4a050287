import { type Static, Type } from 'typebox';
import { HALT_TRIGGERS } from '../decisions/types.js';
import { SCOPES } from '../tokens/scopes.js';

// The shape of a policy file as written (snake_case, the seed documents' names). Defaults are applied
// when the file is compiled (compile.ts), not here, so the schema stays a plain description of what an
// operator may write. A `hint` on a schema is the message shown when a value fails it; a `nameHint` on a
// map is the message shown for a key that is not a valid name.

export const ENVIRONMENT_NAMES = ['development', 'staging', 'production'] as const;
export const CAPABILITIES = ['read', 'write', 'delete'] as const;

/** Built-in presets of seed 003: roles may use them, a policy may not redefine or delete them. */
export const PRESETS = ['mcp.empty', 'mcp.read_only', 'mcp.full_internal'] as const;
export type Preset = (typeof PRESETS)[number];

/** Scope classes come from the scope table: `db:select` → `db`. */
export const SERVER_CLASSES: readonly string[] = [...new Set(SCOPES.map((s) => s.scope.split(':')[0] as string))];

/** Seed 002's prohibited capabilities, by name. */
export const BUILTIN_PROHIBITED = ['shell_execution', 'file_write', 'database_write'] as const;

const NAME_HINT = 'use lowercase letters, digits, "_" and "-" (it becomes part of Unleash flag names)';
export const SERVER_NAME_PATTERN = '^[a-z0-9][a-z0-9_-]{0,62}$';
const ServerName = Type.String({ pattern: SERVER_NAME_PATTERN });
const ROLE_NAME_PATTERN = '^[A-Za-z0-9._-]{1,100}$';
const FlagName = Type.String({
  pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$',
  hint: 'an Unleash flag name: letters, digits, ".", "_" and "-"',
});
const Text = Type.String({ maxLength: 2000 });

/** An optional limit of rows or seconds: a whole number (0 allows nothing) or null for "no limit". */
const Limit = Type.Unsafe<number | null>({ type: ['integer', 'null'], minimum: 0, hint: 'a whole number of 0 or more, or null for no limit' });
// A count of calls or sessions. 0 is refused rather than read: the counters treat a missing limit and 0
// alike (no counter), so `0` would allow everything to someone who meant "nothing".
const CountLimit = Type.Unsafe<number | null>({
  type: ['integer', 'null'],
  minimum: 1,
  hint: 'a whole number of 1 or more, or null (or no key) for no limit',
  minimumHint: '0 is not a limit here (it would count nothing); use null for no limit, and `prohibited: true` or a kill to stop a server',
});

const Identity = Type.Object(
  {
    url: Type.Optional(Type.String({ minLength: 1, maxLength: 2000 })),
    command: Type.Optional(Type.String({ minLength: 1, maxLength: 2000 })),
    args: Type.Optional(Type.Array(Type.String({ maxLength: 2000 }), { maxItems: 200 })),
  },
  { additionalProperties: false },
);

const CapabilityFlags = Type.Object(
  {
    read: Type.Optional(Type.Array(FlagName, { uniqueItems: true })),
    write: Type.Optional(Type.Array(FlagName, { uniqueItems: true })),
    delete: Type.Optional(Type.Array(FlagName, { uniqueItems: true })),
  },
  { additionalProperties: false },
);

/**
 * Seed 002's required restriction for network servers. Host names are checked (and IDNs turned into
 * their ASCII form) when the file is compiled, where the message can say what is wrong with one.
 */
const ServerNetwork = Type.Object(
  {
    https_only: Type.Optional(Type.Boolean()),
    allowed_domains: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 253 }), {
        minItems: 1,
        uniqueItems: true,
        hint: 'a list of one or more host names such as example.com (each allows its subdomains); leave the key out to allow any host',
      }),
    ),
  },
  { additionalProperties: false },
);

/** Seed 002's required restriction for file servers: the directories a call's paths must lie in. */
const ServerPaths = Type.Object(
  {
    allowed: Type.Array(
      Type.String({
        pattern: '^/',
        maxLength: 4096,
        hint: 'an absolute directory, starting with / (e.g. /srv/data): a relative one would depend on where the server runs',
      }),
      { minItems: 1, uniqueItems: true, hint: 'a list of one or more absolute directories; to refuse every call to the server, use `prohibited: true`' },
    ),
  },
  { additionalProperties: false },
);

export const ServerSchema = Type.Object(
  {
    description: Type.Optional(Text),
    identity: Identity,
    class: Type.Optional(Type.Enum([...SERVER_CLASSES])),
    trust_annotations: Type.Optional(Type.Boolean()),
    map: Type.Optional(Type.String({ minLength: 1 })),
    tools: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 200 }), Type.String({ minLength: 1 }))),
    flags: Type.Optional(CapabilityFlags),
    approval: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { uniqueItems: true })),
    prohibited: Type.Optional(Type.Boolean()),
    network: Type.Optional(ServerNetwork),
    paths: Type.Optional(ServerPaths),
  },
  { additionalProperties: false },
);

const ServerList = Type.Array(Type.String({ minLength: 1 }), { uniqueItems: true });
/** Either one list for every environment, or a list per environment. */
const ServersByEnvironment = Type.Union(
  [
    ServerList,
    Type.Object(
      { development: Type.Optional(ServerList), staging: Type.Optional(ServerList), production: Type.Optional(ServerList) },
      { additionalProperties: false },
    ),
  ],
  { hint: 'a list of servers, or a map of environment (development, staging, production) to a list of servers' },
);

const Cascade = Type.Object(
  {
    threshold: Type.Optional(Type.Integer({ minimum: 1 })),
    window_calls: Type.Optional(Type.Integer({ minimum: 1 })),
  },
  { additionalProperties: false },
);

export const RoleSchema = Type.Object(
  {
    description: Type.Optional(Text),
    presets: Type.Optional(Type.Array(Type.Enum([...PRESETS]), { uniqueItems: true })),
    allowed_servers: Type.Optional(ServersByEnvironment),
    forbidden_servers: Type.Optional(ServersByEnvironment),
    large_results: Type.Optional(Type.Boolean()),
    cascade: Type.Optional(Cascade),
  },
  { additionalProperties: false },
);

const CustomProhibited = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    class: Type.Optional(Type.Enum([...SERVER_CLASSES])),
    capabilities: Type.Optional(Type.Array(Type.Enum([...CAPABILITIES]), { uniqueItems: true, minItems: 1 })),
    servers: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { uniqueItems: true, minItems: 1 })),
  },
  { additionalProperties: false },
);

const Prohibited = Type.Union([Type.Enum([...BUILTIN_PROHIBITED]), CustomProhibited], {
  hint: `one of ${BUILTIN_PROHIBITED.join(', ')}, or { name, class?, capabilities?, servers? }`,
});

const EnvironmentRules = Type.Object(
  {
    forbidden_patterns: Type.Optional(
      Type.Array(
        Type.String({
          pattern: '^[A-Za-z0-9]+$',
          hint: 'a pattern is one whole segment of a host or database name (letters and digits, e.g. prod), not a glob',
        }),
        { uniqueItems: true },
      ),
    ),
    human_grant_required: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

const ServerLimitsSchema = Type.Object(
  {
    max_calls_per_session: Type.Optional(CountLimit),
    max_calls_per_minute: Type.Optional(CountLimit),
    max_calls_per_minute_all_sessions: Type.Optional(CountLimit),
    max_write_calls_per_session: Type.Optional(CountLimit),
    max_read_calls_per_session: Type.Optional(CountLimit),
    max_rows_returned: Type.Optional(Limit),
    max_execution_time_seconds: Type.Optional(Limit),
  },
  { additionalProperties: false },
);

const RateLimits = Type.Object(
  {
    global: Type.Optional(
      Type.Object(
        {
          max_calls_per_session: Type.Optional(CountLimit),
          max_calls_per_minute: Type.Optional(CountLimit),
          pause_at_percent: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
        },
        { additionalProperties: false },
      ),
    ),
    per_token: Type.Optional(
      Type.Object(
        {
          max_calls_per_minute: Type.Optional(CountLimit),
          max_calls_per_day: Type.Optional(CountLimit),
          max_open_sessions: Type.Optional(CountLimit),
          max_new_sessions_per_hour: Type.Optional(CountLimit),
          max_tool_reports_per_minute: Type.Optional(CountLimit),
        },
        { additionalProperties: false },
      ),
    ),
    per_server: Type.Optional(Type.Record(Type.String({ minLength: 1 }), ServerLimitsSchema)),
  },
  { additionalProperties: false },
);

/** A call that matches every key given needs a human to approve its exact arguments (src/approvals). */
const ApprovalRule = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    servers: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { uniqueItems: true, minItems: 1 })),
    tools: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { uniqueItems: true, minItems: 1 })),
    capabilities: Type.Optional(Type.Array(Type.Enum([...CAPABILITIES]), { uniqueItems: true, minItems: 1 })),
    roles: Type.Optional(Type.Array(Type.String({ pattern: ROLE_NAME_PATTERN }), { uniqueItems: true, minItems: 1 })),
    environments: Type.Optional(Type.Array(Type.Enum([...ENVIRONMENT_NAMES]), { uniqueItems: true, minItems: 1 })),
    separate_approver: Type.Optional(Type.Boolean()),
    ttl_seconds: Type.Optional(Type.Integer({ minimum: 10, maximum: 86_400 })),
  },
  { additionalProperties: false },
);

const Approvals = Type.Object(
  {
    separate_approver: Type.Optional(Type.Boolean()),
    ttl_seconds: Type.Optional(Type.Integer({ minimum: 10, maximum: 86_400 })),
    rules: Type.Optional(Type.Array(ApprovalRule)),
  },
  { additionalProperties: false },
);

export const PolicyFileSchema = Type.Object(
  {
    version: Type.Optional(Type.Literal(1)),
    description: Type.Optional(Text),
    servers: Type.Record(ServerName, ServerSchema, { additionalProperties: false, nameHint: `server names: ${NAME_HINT}` }),
    roles: Type.Record(Type.String({ pattern: ROLE_NAME_PATTERN }), RoleSchema, {
      additionalProperties: false,
      nameHint: 'role names use letters, digits, ".", "_" and "-" (at most 100)',
    }),
    prohibited_capabilities: Type.Optional(Type.Array(Prohibited)),
    environments: Type.Optional(
      Type.Object(
        {
          development: Type.Optional(EnvironmentRules),
          staging: Type.Optional(EnvironmentRules),
          production: Type.Optional(EnvironmentRules),
        },
        { additionalProperties: false },
      ),
    ),
    rate_limits: Type.Optional(RateLimits),
    cascade: Type.Optional(Cascade),
    large_result_bytes: Type.Optional(Type.Integer({ minimum: 1 })),
    halt_token_on: Type.Optional(Type.Array(Type.Enum([...HALT_TRIGGERS]), { uniqueItems: true })),
    approvals: Type.Optional(Approvals),
  },
  { additionalProperties: false },
);

export type PolicyFile = Static<typeof PolicyFileSchema>;
export type ServerEntry = Static<typeof ServerSchema>;
export type RoleEntry = Static<typeof RoleSchema>;
export type ServerLimitsEntry = Static<typeof ServerLimitsSchema>;
export type ApprovalsEntry = Static<typeof Approvals>;
