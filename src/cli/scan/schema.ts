import { type Static, Type } from 'typebox';

// The `killswitch scan --json` output. docs/scan-output.schema.json is this schema as printed by
// `killswitch scan --print-schema`; a test fails when the two drift. Adding an optional field is a
// compatible change; renaming or removing one needs a new schema_version.

export const SCAN_SCHEMA_VERSION = 1;

export const SEVERITIES = ['low', 'medium', 'high', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

/** `gateway`: a `killswitch gateway --config` file, read because a client config starts the gateway with it. */
export const FILE_KINDS = ['claude_desktop', 'cursor', 'vscode', 'mcp_json', 'package_json', 'gateway'] as const;
export type FileKind = (typeof FILE_KINDS)[number];

/** `gateway`: an entry that runs `killswitch gateway`; its upstreams are scanned from its config file. */
export const SERVER_KINDS = ['shell', 'database', 'filesystem', 'github', 'git', 'fetch', 'time', 'memory', 'sdk', 'gateway', 'unknown'] as const;
export type ServerKind = (typeof SERVER_KINDS)[number];

export const FINDING_TYPES = ['shell_execution', 'filesystem_root', 'production_database', 'plaintext_credential', 'unapproved_server'] as const;
export type FindingType = (typeof FINDING_TYPES)[number];

const SeverityT = Type.Enum([...SEVERITIES]);
const Count = Type.Integer({ minimum: 0 });
const Position = { line: Type.Integer({ minimum: 1 }), column: Type.Integer({ minimum: 1 }) };
const BySeverity = Type.Object({ critical: Count, high: Count, medium: Count, low: Count }, { additionalProperties: false });

const ScannedFile = Type.Object(
  {
    path: Type.String({ description: 'Path as given or found (relative to the working directory when under it).' }),
    kind: Type.Enum([...FILE_KINDS]),
    servers: Type.Integer({ minimum: 0, description: 'Servers (or MCP packages, for package.json) found in the file.' }),
  },
  { additionalProperties: false },
);

const PackageInfo = Type.Object(
  {
    name: Type.String(),
    version: Type.String(),
    dependency_type: Type.Enum(['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies']),
  },
  { additionalProperties: false },
);

const Server = Type.Object(
  {
    id: Type.String({ description: 'Stable within one output: file#name.' }),
    name: Type.String({ description: 'The key in the client config, or the package name.' }),
    origin: Type.Enum(['config', 'package']),
    file: Type.String(),
    file_kind: Type.Enum([...FILE_KINDS]),
    ...Position,
    transport: Type.Union([Type.Enum(['stdio', 'http', 'sse', 'unknown']), Type.Null()], { description: 'null for package dependencies.' }),
    command: Type.Union([Type.String(), Type.Null()]),
    args: Type.Array(Type.String(), { description: 'Credentials found in them are masked.' }),
    url: Type.Union([Type.String(), Type.Null()], { description: 'Credentials found in it are masked.' }),
    env_keys: Type.Array(Type.String(), { description: 'Names only: environment values are never printed.' }),
    package: Type.Union([PackageInfo, Type.Null()]),
    kind: Type.Enum([...SERVER_KINDS]),
    read_only: Type.Boolean(),
    risk: SeverityT,
    approved: Type.Union([Type.Boolean(), Type.Null()], { description: 'null when no policy was read, and for the killswitch gateway itself (kind gateway).' }),
    policy_server: Type.Union([Type.String(), Type.Null()], { description: 'The policy server it was matched to (by identity, else by name).' }),
  },
  { additionalProperties: false },
);

const Finding = Type.Object(
  {
    type: Type.Enum([...FINDING_TYPES]),
    severity: SeverityT,
    server_id: Type.String(),
    server: Type.String(),
    file: Type.String(),
    ...Position,
    message: Type.String(),
    evidence: Type.String({ description: 'What was found, with credentials masked (at most the first 4 characters, then ****).' }),
  },
  { additionalProperties: false },
);

const InputError = Type.Object({ file: Type.String(), ...Position, message: Type.String() }, { additionalProperties: false });

export const ScanOutputSchema = Type.Object(
  {
    schema_version: Type.Literal(SCAN_SCHEMA_VERSION),
    generated_at: Type.String({ format: 'date-time' }),
    policy: Type.Union([Type.Object({ file: Type.String(), sha256: Type.String() }, { additionalProperties: false }), Type.Null()]),
    production_patterns: Type.Array(Type.String(), { description: 'Whole host or database-name segments that mark production.' }),
    fail_on: Type.Enum([...SEVERITIES, 'none']),
    files: Type.Array(ScannedFile),
    servers: Type.Array(Server),
    findings: Type.Array(Finding),
    errors: Type.Array(InputError, { description: 'Unreadable or invalid files; any error makes the exit code 2.' }),
    summary: Type.Object(
      {
        files: Count,
        servers: Count,
        packages: Count,
        risk: BySeverity,
        findings: BySeverity,
        unapproved: Type.Union([Count, Type.Null()], { description: 'Servers not in the policy approved list; null without a policy.' }),
        exit_code: Type.Integer({ minimum: 0, maximum: 2, description: '0 clean, 1 a finding at or above fail_on, 2 bad input.' }),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

export type ScanOutput = Static<typeof ScanOutputSchema>;
export type ScannedServer = Static<typeof Server>;
export type Finding = Static<typeof Finding>;
export type InputError = Static<typeof InputError>;
export type ScannedFile = Static<typeof ScannedFile>;

/** The schema as published in docs/scan-output.schema.json. */
export function scanOutputJsonSchema(): Record<string, unknown> {
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'urn:mcp-killswitch:scan-output:1',
    title: 'killswitch scan --json output',
    ...(JSON.parse(JSON.stringify(ScanOutputSchema)) as Record<string, unknown>),
  };
}

export function severityRank(s: Severity): number {
  return SEVERITIES.indexOf(s);
}

export function maxSeverity(a: Severity, b: Severity): Severity {
  return severityRank(a) >= severityRank(b) ? a : b;
}
