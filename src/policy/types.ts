import type { HaltTrigger } from '../decisions/types.js';
import type { Capability } from '../tokens/scopes.js';
import type { Environment } from '../tokens/store.js';
import type { PolicyIssue } from './issues.js';

// The policy as the decision pipeline uses it: compiled once per load, with every default applied and
// every lookup precomputed (maps and sets, no per-call parsing or regex building).

export interface ToolScope {
  scope: string;
  capability: Capability;
}

export interface ServerLimits {
  maxCallsPerSession: number | null;
  /** Per session. */
  maxCallsPerMinute: number | null;
  /** Per token, across all of its sessions (so opening new sessions gains nothing). */
  maxCallsPerMinuteAllSessions: number | null;
  maxWriteCallsPerSession: number | null;
  maxReadCallsPerSession: number | null;
  maxRowsReturned: number | null;
  maxExecutionTimeSeconds: number | null;
}

/** `servers.<name>.network` (seed 002: network servers HTTPS only, domain allowlist). */
export interface NetworkRule {
  /** Every http(s), ws(s) or ftp URL a call carries must be https. */
  httpsOnly: boolean;
  /** Hosts (ASCII, lower case, no trailing dot) a URL's host must equal or be a subdomain of; undefined: any. */
  allowedDomains: readonly string[] | undefined;
}

/** `servers.<name>.paths` (seed 002: file servers restricted to allowed directories). */
export interface PathRule {
  /** Absolute, normalised directories, without a trailing `/` (except `/` itself). */
  allowed: readonly string[];
  /** `allowed`, each ending with `/`: a path inside one starts with it. */
  prefixes: readonly string[];
  /** Argument names holding paths (the map's `pathArguments`). */
  arguments: readonly string[];
}

export interface CompiledServer {
  name: string;
  serverClass: string;
  identity: { url?: string; command?: string; args: readonly string[] };
  trustAnnotations: boolean;
  /** Name of the shipped map it uses, if any. */
  mapName: string | undefined;
  /** The shipped map merged with the policy's own `tools` (the policy wins). */
  tools: ReadonlyMap<string, ToolScope>;
  /** Scope of an unmapped tool a trusted annotation says is read-only. */
  readScope: string;
  /** Scope of any other unmapped tool. */
  writeScope: string;
  flags: Readonly<Record<Capability, readonly string[]>>;
  approval: ReadonlySet<string>;
  prohibited: boolean;
  /** Hosts and database names of the server itself (identity URL, connection strings in its args). */
  networkIdentities: readonly string[];
  limits: Readonly<ServerLimits>;
  /** Required restrictions on the URLs a call carries; undefined: none. */
  network: Readonly<NetworkRule> | undefined;
  /** Required restrictions on the local paths a call names; undefined: none. */
  paths: Readonly<PathRule> | undefined;
}

export interface CompiledRole {
  name: string;
  /** True for the built-in presets used directly as a role name. */
  builtIn: boolean;
  presets: readonly string[];
  /** `mcp.read_only`: only the read capability, whatever the servers. */
  readOnly: boolean;
  /** Servers allowed per environment, presets included, forbidden ones NOT removed (checked first). */
  allowed: Readonly<Record<Environment, ReadonlySet<string>>>;
  forbidden: Readonly<Record<Environment, ReadonlySet<string>>>;
  largeResults: boolean;
  cascade: Readonly<CascadeSettings>;
}

export interface CascadeSettings {
  threshold: number;
  windowCalls: number;
}

export interface ProhibitedRule {
  name: string;
  /** Position in the file's list (CompiledPolicy.prohibited): the first matching rule is the one named. */
  order: number;
  /** Matches the server's class or the required scope's class; undefined: any class. */
  serverClass: string | undefined;
  capabilities: ReadonlySet<Capability>;
  /** Only these servers (undefined: every server of the class). */
  servers: ReadonlySet<string> | undefined;
  /** Only servers using one of these shipped maps (file_write: the filesystem map). */
  maps: ReadonlySet<string> | undefined;
}

/**
 * The prohibited capabilities by the one key each is filed under, so a call looks only at rules that can
 * match it: a rule naming servers under each of them; else one naming a class under that class (matched
 * against the server's class and the required scope's); else in `rest`. Each list keeps the file's order.
 */
export interface ProhibitedIndex {
  byServer: ReadonlyMap<string, readonly ProhibitedRule[]>;
  byClass: ReadonlyMap<string, readonly ProhibitedRule[]>;
  rest: readonly ProhibitedRule[];
}

export interface EnvironmentRules {
  forbiddenPatterns: ReadonlySet<string>;
  humanGrantRequired: boolean;
}

export interface GlobalLimits {
  session: { maxCalls: number | null; maxCallsPerMinute: number | null };
  pauseAtPercent: number;
  /** maxOpenSessions / maxNewSessionsPerHour / maxToolReportsPerMinute: undefined when the policy names none (the config's settings apply). */
  token: { maxCallsPerMinute: number | null; maxCallsPerDay: number | null; maxOpenSessions?: number | null | undefined; maxNewSessionsPerHour?: number | null | undefined; maxToolReportsPerMinute?: number | null | undefined };
}

/** What `limitsFor(policy, role, server)` answers: every number the limits step needs for one call. */
export interface EffectiveLimits extends GlobalLimits {
  /** Limits of this server (all null when the server is not in the policy). */
  server: Readonly<ServerLimits>;
  cascade: Readonly<CascadeSettings>;
  largeResultBytes: number;
  /** The role may receive results over largeResultBytes. */
  largeResultsAllowed: boolean;
}

/** One approval rule (`approvals.rules[]`, or a server's `approval:` list); undefined sets match anything. */
export interface ApprovalRule {
  name: string;
  servers: ReadonlySet<string> | undefined;
  tools: ReadonlySet<string> | undefined;
  capabilities: ReadonlySet<Capability> | undefined;
  roles: ReadonlySet<string> | undefined;
  environments: ReadonlySet<Environment> | undefined;
  /** The approver must not be the operator who created the agent token. */
  separateApprover: boolean;
  /** Overrides APPROVAL_TTL_S for requests of this rule. */
  ttlSeconds: number | undefined;
}

/**
 * The approval rules by the one key each is filed under, so a call looks only at rules that can match it
 * (a file with hundreds of rules costs a call no more than one with two): a rule naming servers under
 * each of them; else one naming roles under each role; else one naming tools under each tool; else (only
 * capabilities or environments) in `rest`. Each list keeps the file's order (`order`), and the first
 * matching rule of the file wins across the lists.
 */
export interface ApprovalIndex {
  byServer: ReadonlyMap<string, readonly IndexedApprovalRule[]>;
  byRole: ReadonlyMap<string, readonly IndexedApprovalRule[]>;
  byTool: ReadonlyMap<string, readonly IndexedApprovalRule[]>;
  rest: readonly IndexedApprovalRule[];
}

export interface IndexedApprovalRule {
  /** Position in ApprovalSettings.rules: the lower one wins. */
  order: number;
  rule: ApprovalRule;
}

export interface ApprovalSettings {
  /** Server `approval:` lists first (as rules named `servers.<name>.approval`), then `approvals.rules` in order. */
  rules: readonly ApprovalRule[];
  /** `rules`, filed for lookup per call (approvalRuleFor). */
  index: Readonly<ApprovalIndex>;
  separateApprover: boolean;
  ttlSeconds: number | undefined;
}

export interface CompiledPolicy {
  path: string;
  /** sha256 of the file's bytes, hex. */
  hash: string;
  loadedAt: Date;
  servers: ReadonlyMap<string, CompiledServer>;
  /** Roles of the file plus the built-in presets usable directly as role names. */
  roles: ReadonlyMap<string, CompiledRole>;
  prohibited: readonly ProhibitedRule[];
  /** `prohibited`, filed for lookup per call. */
  prohibitedIndex: Readonly<ProhibitedIndex>;
  environments: Readonly<Record<Environment, EnvironmentRules>>;
  limits: Readonly<GlobalLimits>;
  cascade: Readonly<CascadeSettings>;
  largeResultBytes: number;
  haltTokenOn: ReadonlySet<HaltTrigger>;
  approvals: Readonly<ApprovalSettings>;
  /** The first POLICY_ISSUES_LISTED warnings, then one saying how many more there are (IssueList.warningsListed). */
  warnings: readonly PolicyIssue[];
  /** limitsFor() answers by role, then by server, filled on first use. */
  readonly limitsCache: Map<string, Map<string, Readonly<EffectiveLimits>>>;
}
