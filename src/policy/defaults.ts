import type { HaltTrigger } from '../decisions/types.js';
import type { Capability } from '../tokens/scopes.js';
import type { Environment } from '../tokens/store.js';
import type { CascadeSettings, GlobalLimits, ServerLimits } from './types.js';

// Every default of the policy file, in one place; docs/policy.md lists the same numbers.

/**
 * Scopes of an unmapped tool, per server class: the read scope when a trusted annotation says
 * read-only, else the write scope. Classes without a read action (exec, auth) use the write scope for
 * both. `net:write`, `realtime:publish` and `secrets:write` are in no token's scope table, so an
 * unmapped write on those classes is refused to every token until the policy maps the tool.
 */
export const CLASS_SCOPES: Readonly<Record<string, { read: string; write: string }>> = {
  db: { read: 'db:select', write: 'db:update' },
  storage: { read: 'storage:read', write: 'storage:write' },
  realtime: { read: 'realtime:subscribe', write: 'realtime:publish' },
  graphql: { read: 'graphql:query', write: 'graphql:mutate' },
  vcs: { read: 'vcs:read', write: 'vcs:write' },
  net: { read: 'net:read', write: 'net:write' },
  exec: { read: 'exec:run', write: 'exec:run' },
  cloud: { read: 'cloud:read', write: 'cloud:write' },
  secrets: { read: 'secrets:read', write: 'secrets:write' },
  auth: { read: 'auth:*', write: 'auth:*' },
};

/**
 * User management by name (DESIGN.md §4: "user-management tools map to `auth:*`"): a tool the map does
 * not name needs `auth:*` when its name, split into words (snake_case, kebab-case, camelCase, dots),
 * holds a management verb and a user or credential noun (or a qualifier followed by key/token, as in
 * `api_key`). Pure reads (`get_user`, `list_users`) have no such verb. docs/policy.md lists the same words.
 */
export const USER_MANAGEMENT_VERBS: ReadonlySet<string> = new Set([
  'activate', 'add', 'assign', 'attach', 'ban', 'block', 'change', 'create', 'deactivate', 'delete', 'demote',
  'deprovision', 'destroy', 'detach', 'disable', 'drop', 'edit', 'enable', 'expire', 'generate', 'grant',
  'impersonate', 'insert', 'invite', 'issue', 'kick', 'link', 'lock', 'modify', 'patch', 'promote', 'provision',
  'purge', 'put', 'regenerate', 'register', 'remove', 'rename', 'reset', 'revoke', 'rotate', 'save', 'set',
  'suspend', 'transfer', 'unassign', 'unban', 'unblock', 'unlink', 'unlock', 'unsuspend', 'update', 'upsert',
]);

export const USER_MANAGEMENT_NOUNS: ReadonlySet<string> = new Set([
  '2fa', 'account', 'accounts', 'acl', 'acls', 'admin', 'admins', 'apikey', 'apikeys', 'collaborator',
  'collaborators', 'credential', 'credentials', 'creds', 'group', 'groups', 'invitation', 'invitations', 'login',
  'logins', 'member', 'members', 'membership', 'memberships', 'mfa', 'passphrase', 'passwd', 'password',
  'passwords', 'permission', 'permissions', 'principal', 'principals', 'privilege', 'privileges', 'role', 'roles',
  'saml', 'sso', 'totp', 'user', 'username', 'usernames', 'users',
]);

/** `api key`, `access_token`, `sshKey`...: a qualifier word directly followed by one of USER_MANAGEMENT_KEY_WORDS. */
export const USER_MANAGEMENT_KEY_QUALIFIERS: ReadonlySet<string> = new Set(['access', 'api', 'deploy', 'secret', 'signing', 'ssh']);
export const USER_MANAGEMENT_KEY_WORDS: ReadonlySet<string> = new Set(['key', 'keys', 'token', 'tokens']);

/** Seed 001 pattern 3 plus DESIGN.md §4: `main` is a production branch name used as a host segment. */
export const DEFAULT_ENVIRONMENTS: Readonly<Record<Environment, { forbiddenPatterns: readonly string[]; humanGrantRequired: boolean }>> = {
  development: { forbiddenPatterns: ['prod', 'production', 'live', 'main'], humanGrantRequired: false },
  staging: { forbiddenPatterns: ['prod', 'production', 'live', 'main'], humanGrantRequired: false },
  production: { forbiddenPatterns: [], humanGrantRequired: true },
};

/** Seed 001 pattern 6 (global) plus per-token limits so cycling sessions escapes nothing. */
export const DEFAULT_GLOBAL_LIMITS: GlobalLimits = {
  session: { maxCalls: 200, maxCallsPerMinute: 30 },
  pauseAtPercent: 80,
  // Session caps per token are not here: SESSION_MAX_OPEN_PER_TOKEN and SESSION_MAX_NEW_PER_HOUR (config) apply unless the policy names them.
  token: { maxCallsPerMinute: 120, maxCallsPerDay: 5000 },
};

export const NO_SERVER_LIMITS: ServerLimits = {
  maxCallsPerSession: null,
  maxCallsPerMinute: null,
  maxCallsPerMinuteAllSessions: null,
  maxWriteCallsPerSession: null,
  maxReadCallsPerSession: null,
  maxRowsReturned: null,
  maxExecutionTimeSeconds: null,
};

/**
 * Seed 001's per-server numbers, applied by kind: the github map (or a server named github), the
 * filesystem map (or a server named filesystem), any db-class server, any exec-class server. The
 * file's `rate_limits.per_server.<name>` overrides them field by field.
 */
export function defaultServerLimits(name: string, serverClass: string, mapName: string | undefined): ServerLimits {
  const kind = mapName ?? name;
  const out: ServerLimits = { ...NO_SERVER_LIMITS };
  if (kind === 'github') Object.assign(out, { maxCallsPerSession: 50, maxCallsPerMinute: 10 });
  else if (kind === 'filesystem') Object.assign(out, { maxWriteCallsPerSession: 30, maxReadCallsPerSession: 200 });
  else if (serverClass === 'db') Object.assign(out, { maxCallsPerSession: 100, maxRowsReturned: 10_000 });
  else if (serverClass === 'exec') Object.assign(out, { maxCallsPerSession: 20, maxExecutionTimeSeconds: 30 });
  return out;
}

/** A seed 001 kill switch a server answers to by default, for some capabilities, and why. */
export interface SeedFlag {
  flag: string;
  capabilities: readonly Capability[];
  /** What gives it to the server, for `policy check` (e.g. `class db`, `map github`). */
  because: string;
}

const ALL_CAPABILITIES: readonly Capability[] = ['read', 'write', 'delete'];
const CHANGES: readonly Capability[] = ['write', 'delete'];

/**
 * Seed 001's kill switches (DESIGN.md §5, flags/capabilities.yaml) a server answers to unless its
 * `flags:` names the capability: by class (db writes and deletes → mcp.database.write; every exec call
 * → mcp.shell.execute; every cloud call → mcp.cloud.infra) and by kind, as for the per-server limits
 * (the map, else the server's name: github → mcp.github.api for every call, filesystem →
 * mcp.filesystem.write for writes and deletes). A flag that is the server's own
 * `mcp.<server>.<capability>` is left out: that one is checked anyway.
 */
export function seedFlags(name: string, serverClass: string, mapName: string | undefined): SeedFlag[] {
  const out: SeedFlag[] = [];
  const add = (flag: string, capabilities: readonly Capability[], because: string) => {
    const caps = capabilities.filter((c) => flag !== `mcp.${name}.${c}`);
    if (caps.length > 0) out.push({ flag, capabilities: caps, because });
  };
  if (serverClass === 'db') add('mcp.database.write', CHANGES, 'class db');
  if (serverClass === 'exec') add('mcp.shell.execute', ALL_CAPABILITIES, 'class exec');
  if (serverClass === 'cloud') add('mcp.cloud.infra', ALL_CAPABILITIES, 'class cloud');
  const kind = mapName ?? name;
  const byKind = mapName !== undefined ? `map ${mapName}` : `server name ${name}`;
  if (kind === 'github') add('mcp.github.api', ALL_CAPABILITIES, byKind);
  if (kind === 'filesystem') add('mcp.filesystem.write', CHANGES, byKind);
  return out;
}

export const DEFAULT_CASCADE: CascadeSettings = { threshold: 3, windowCalls: 5 };
export const DEFAULT_LARGE_RESULT_BYTES = 1_048_576;

/** Seed 001's six triggers halt every session of the token, not only the one that fired. */
export const DEFAULT_HALT_TOKEN_ON: readonly HaltTrigger[] = [
  'UNAUTHORIZED_SERVER',
  'WRITE_IN_READ_SESSION',
  'PRODUCTION_ENVIRONMENT',
  'SESSION_LIMIT',
  'LARGE_RESULT',
  'CASCADE_WRITE',
];

/** Environments `mcp.full_internal` opens every non-prohibited server in. */
export const FULL_INTERNAL_ENVIRONMENTS: readonly Environment[] = ['development', 'staging'];
