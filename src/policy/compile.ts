import { posix } from 'node:path';
import type { HaltTrigger } from '../decisions/types.js';
import { type Capability, SCOPE_BY_NAME } from '../tokens/scopes.js';
import type { Environment } from '../tokens/store.js';
import {
  CLASS_SCOPES,
  DEFAULT_CASCADE,
  DEFAULT_ENVIRONMENTS,
  DEFAULT_GLOBAL_LIMITS,
  DEFAULT_HALT_TOKEN_ON,
  DEFAULT_LARGE_RESULT_BYTES,
  defaultServerLimits,
  FULL_INTERNAL_ENVIRONMENTS,
  seedFlags,
} from './defaults.js';
import type { IssueList, PathSegment } from './issues.js';
import { SHIPPED_MAPS, type ToolMap } from './maps/index.js';
import { upstreamIdentitiesOf } from './resources.js';
import { type ApprovalsEntry, CAPABILITIES, ENVIRONMENT_NAMES, type PolicyFile, PRESETS, type RoleEntry, type ServerEntry, type ServerLimitsEntry } from './schema.js';
import type {
  ApprovalIndex,
  ApprovalRule,
  ApprovalSettings,
  CascadeSettings,
  CompiledPolicy,
  CompiledRole,
  CompiledServer,
  EnvironmentRules,
  IndexedApprovalRule,
  NetworkRule,
  PathRule,
  ProhibitedIndex,
  ProhibitedRule,
  ServerLimits,
  ToolScope,
} from './types.js';

// Turns a schema-valid policy file into the CompiledPolicy the pipeline reads: checks what the schema
// cannot (references between sections, scope names, reserved names), applies every default and
// precomputes the lookups.

const ENVS = ENVIRONMENT_NAMES as readonly Environment[];

/** Whether a scope grants read, write or delete. Scopes outside the table (net:write...) are writes. */
export function capabilityOf(scope: string): Capability {
  return SCOPE_BY_NAME.get(scope)?.capability ?? 'write';
}

function pick<T>(value: T | null | undefined, fallback: T): T {
  return value === undefined ? fallback : (value as T);
}

/**
 * The extra flags of each capability: the list the entry gives under `flags:`, else the seed 001 kill
 * switches its class or kind imply (defaults.ts, seedFlags). A list that leaves one of those out opts
 * the server out of it: a warning, since turning that flag off during an incident then misses it.
 */
function serverFlags(name: string, serverClass: string, entry: ServerEntry, issues: IssueList, at: (...p: PathSegment[]) => PathSegment[]): CompiledServer['flags'] {
  const seeds = seedFlags(name, serverClass, entry.map);
  const out = { read: [] as string[], write: [] as string[], delete: [] as string[] };
  for (const cap of CAPABILITIES) {
    const implied = seeds.filter((s) => s.capabilities.includes(cap));
    const listed = entry.flags?.[cap];
    if (listed === undefined) {
      out[cap] = implied.map((s) => s.flag);
      continue;
    }
    out[cap] = [...listed];
    for (const s of implied) {
      if (listed.includes(s.flag)) continue;
      const what = cap === 'read' ? 'reads' : cap === 'write' ? 'writes' : 'deletes';
      issues.warning(
        at('flags', cap),
        `does not list ${s.flag}, which this server's ${what} answer to by default (${s.because}): turning ${s.flag} off in Unleash will not stop them; add it to the list, or leave \`${cap}\` out to get the default`,
      );
    }
  }
  return out;
}

const HOST_LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const NOT_A_HOST = /[/:@?#\\\s*[\]]/;
const NUMERIC_LABEL = /^\d+$/;

/**
 * An `allowed_domains` entry as WHATWG `new URL` writes a host (what the URLs of calls are compared
 * in): IDNs in their ASCII form, lower case, without a trailing dot. Or why it is not a host name.
 */
export function allowedDomainOf(entry: string): { domain: string } | { problem: string } {
  if (entry.startsWith('*.')) return { problem: `write "${entry.slice(2)}": an entry already allows its subdomains` };
  if (entry.includes('://')) return { problem: 'give a host name, not a URL (no scheme, no path)' };
  if (NOT_A_HOST.test(entry)) return { problem: 'a host name has no scheme, port, path, user, wildcard or spaces' };
  let host: string;
  try {
    host = new URL(`https://${entry}/`).hostname;
  } catch {
    return { problem: 'not a host name' };
  }
  if (host.endsWith('.')) host = host.slice(0, -1);
  const labels = host.split('.');
  if (host.length === 0 || host.length > 253 || !labels.every((l) => HOST_LABEL.test(l))) return { problem: 'not a host name' };
  // WHATWG reads a host ending in a number as an IPv4 address (10.1, 0x7f.1): not a domain.
  if (NUMERIC_LABEL.test(labels[labels.length - 1] as string)) return { problem: 'an IP address, not a domain name' };
  return { domain: host };
}

function compileNetwork(entry: ServerEntry, issues: IssueList, at: (...p: PathSegment[]) => PathSegment[]): NetworkRule | undefined {
  const network = entry.network;
  if (network === undefined) return undefined;
  if (network.https_only === undefined && network.allowed_domains === undefined) {
    issues.warning(at('network'), 'restricts nothing: give `https_only: true`, `allowed_domains: [...]` or both');
  }
  let allowedDomains: string[] | undefined;
  if (network.allowed_domains !== undefined) {
    allowedDomains = [];
    for (const [i, entryDomain] of network.allowed_domains.entries()) {
      const d = allowedDomainOf(entryDomain);
      if ('problem' in d) issues.error(at('network', 'allowed_domains', i), `"${entryDomain}" is not a domain: ${d.problem}`);
      else if (!allowedDomains.includes(d.domain)) allowedDomains.push(d.domain);
    }
  }
  return Object.freeze({ httpsOnly: network.https_only ?? false, allowedDomains });
}

function compilePaths(entry: ServerEntry, map: ToolMap | undefined, issues: IssueList, at: (...p: PathSegment[]) => PathSegment[]): PathRule | undefined {
  if (entry.paths === undefined) return undefined;
  const allowed: string[] = [];
  for (const [i, dir] of entry.paths.allowed.entries()) {
    if (dir.includes('\0')) {
      issues.error(at('paths', 'allowed', i), 'holds a NUL character: not a directory');
      continue;
    }
    // `..` and `//` resolved, no trailing `/`: what call paths are compared with.
    const normalised = posix.resolve(dir);
    if (!allowed.includes(normalised)) allowed.push(normalised);
  }
  const args = map?.pathArguments ?? [];
  if (args.length === 0) {
    issues.warning(
      at('paths'),
      `${entry.map === undefined ? 'the server has no shipped map' : `map ${entry.map} names no path arguments`}: only the \`file:\` resources a gateway sends are checked against it, not the call's arguments`,
    );
  }
  return Object.freeze({ allowed, prefixes: allowed.map((d) => (d === '/' ? '/' : `${d}/`)), arguments: args });
}

function compileServer(name: string, entry: ServerEntry, issues: IssueList, perServer: ServerLimitsEntry | undefined): CompiledServer | undefined {
  const at = (...p: PathSegment[]): PathSegment[] => ['servers', name, ...p];
  let ok = true;
  const { url, command, args } = entry.identity;
  if (url === undefined && command === undefined) {
    issues.error(at('identity'), 'needs `url` (a remote server) or `command` with optional `args` (a local one)');
    ok = false;
  } else if (url !== undefined && command !== undefined) {
    issues.error(at('identity'), 'give `url` or `command`, not both');
    ok = false;
  } else if (url !== undefined && args !== undefined) {
    issues.error(at('identity', 'args'), '`args` go with `command`, not with `url`');
    ok = false;
  }
  if (url !== undefined) {
    try {
      new URL(url);
    } catch {
      issues.error(at('identity', 'url'), `"${url}" is not a URL`);
      ok = false;
    }
  }

  const map = entry.map !== undefined ? SHIPPED_MAPS.get(entry.map) : undefined;
  if (entry.map !== undefined && !map) {
    issues.error(at('map'), `unknown map "${entry.map}"; shipped maps: ${[...SHIPPED_MAPS.keys()].join(', ')}`);
    ok = false;
  }
  const serverClass = entry.class ?? map?.serverClass;
  if (serverClass === undefined) {
    if (entry.map === undefined) issues.error(at(), 'missing required key "class" (a server without a shipped `map` must name its scope class)', 'key');
    ok = false;
  }

  const tools = new Map<string, ToolScope>();
  for (const [tool, scope] of Object.entries(map?.tools ?? {})) tools.set(tool, { scope, capability: capabilityOf(scope) });
  for (const [tool, scope] of Object.entries(entry.tools ?? {})) {
    if (!SCOPE_BY_NAME.has(scope)) {
      issues.error(at('tools', tool), `unknown scope "${scope}"; scopes: ${[...SCOPE_BY_NAME.keys()].join(', ')}`);
      ok = false;
      continue;
    }
    tools.set(tool, { scope, capability: capabilityOf(scope) });
  }
  for (const [i, tool] of (entry.approval ?? []).entries()) {
    if (!tools.has(tool)) issues.warning(at('approval', i), `tool "${tool}" is not in this server's map; approval still applies if it is called`);
  }
  if (!ok || serverClass === undefined) return undefined;

  const networkIdentities = upstreamIdentitiesOf({ url, args });

  const limits: ServerLimits = defaultServerLimits(name, serverClass, entry.map);
  if (perServer) {
    limits.maxCallsPerSession = pick(perServer.max_calls_per_session, limits.maxCallsPerSession);
    limits.maxCallsPerMinute = pick(perServer.max_calls_per_minute, limits.maxCallsPerMinute);
    limits.maxCallsPerMinuteAllSessions = pick(perServer.max_calls_per_minute_all_sessions, limits.maxCallsPerMinuteAllSessions);
    limits.maxWriteCallsPerSession = pick(perServer.max_write_calls_per_session, limits.maxWriteCallsPerSession);
    limits.maxReadCallsPerSession = pick(perServer.max_read_calls_per_session, limits.maxReadCallsPerSession);
    limits.maxRowsReturned = pick(perServer.max_rows_returned, limits.maxRowsReturned);
    limits.maxExecutionTimeSeconds = pick(perServer.max_execution_time_seconds, limits.maxExecutionTimeSeconds);
  }
  // The per-session minute limit also holds per token, unless set otherwise, so a new session per call gains nothing.
  if (perServer?.max_calls_per_minute_all_sessions === undefined) limits.maxCallsPerMinuteAllSessions = limits.maxCallsPerMinute;

  const classScopes = CLASS_SCOPES[serverClass] ?? { read: `${serverClass}:write`, write: `${serverClass}:write` };
  const identity: CompiledServer['identity'] = { args: Object.freeze([...(args ?? [])]) };
  if (url !== undefined) identity.url = url;
  if (command !== undefined) identity.command = command;
  return {
    name,
    serverClass,
    identity,
    trustAnnotations: entry.trust_annotations ?? false,
    mapName: entry.map,
    tools,
    readScope: classScopes.read,
    writeScope: classScopes.write,
    flags: serverFlags(name, serverClass, entry, issues, at),
    approval: new Set(entry.approval ?? []),
    prohibited: entry.prohibited ?? false,
    networkIdentities: [...networkIdentities],
    limits: Object.freeze(limits),
    network: compileNetwork(entry, issues, at),
    paths: compilePaths(entry, map, issues, at),
  };
}

/** How many server names an "unknown server" error lists: all of a small file, the nearest of a large one. */
export const NAMES_LISTED = 10;
/** Name comparisons (edit distance) one compile may spend on "unknown server" hints; past it the first names are listed. */
const HINT_COMPARISONS = 200_000;

/** Levenshtein distance of two short names (at most 63 characters each). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length] as number;
}

/**
 * What follows `unknown server "x"`: every server of a small file; in a large one (300 servers) the
 * NAMES_LISTED nearest to the name written and how many there are, so that one typo is one readable line,
 * not a list of every server repeated on each error. `budget` bounds the comparisons of one compile.
 */
function knownServersHint(name: string, known: ReadonlyMap<string, unknown>, budget: { comparisons: number }): string {
  const all = [...known.keys()];
  if (all.length <= NAMES_LISTED) return `servers in this policy: ${all.join(', ') || '(none)'}`;
  let shown = all.slice(0, NAMES_LISTED);
  let which = 'the first';
  if (budget.comparisons + all.length <= HINT_COMPARISONS) {
    budget.comparisons += all.length;
    shown = all
      .map((k) => ({ k, d: editDistance(name, k) }))
      .sort((x, y) => x.d - y.d || (x.k < y.k ? -1 : 1))
      .slice(0, NAMES_LISTED)
      .map((x) => x.k);
    which = 'the nearest';
  }
  return `${all.length} servers in this policy, ${which} ${NAMES_LISTED}: ${shown.join(', ')}`;
}

function serversByEnvironment(
  value: RoleEntry['allowed_servers'],
  path: PathSegment[],
  known: ReadonlyMap<string, unknown>,
  issues: IssueList,
  budget: { comparisons: number },
): Record<Environment, Set<string>> {
  const out = { development: new Set<string>(), staging: new Set<string>(), production: new Set<string>() };
  if (value === undefined) return out;
  const add = (env: Environment | 'all', list: readonly string[], listPath: PathSegment[]) => {
    for (const [i, server] of list.entries()) {
      if (!known.has(server)) {
        issues.error([...listPath, i], `unknown server "${server}"; ${knownServersHint(server, known, budget)}`);
        continue;
      }
      for (const e of env === 'all' ? ENVS : [env]) out[e].add(server);
    }
  };
  if (Array.isArray(value)) add('all', value, path);
  else for (const env of ENVS) if (value[env]) add(env, value[env], [...path, env]);
  return out;
}

function compileRole(
  name: string,
  entry: RoleEntry,
  servers: ReadonlyMap<string, CompiledServer>,
  known: ReadonlyMap<string, unknown>,
  cascade: CascadeSettings,
  issues: IssueList,
  budget: { comparisons: number },
): CompiledRole {
  const at = (...p: PathSegment[]): PathSegment[] => ['roles', name, ...p];
  const presets = entry.presets ?? [];
  // mcp.empty means "no server": combined with anything that opens servers, one of the two is a mistake.
  if (presets.includes('mcp.empty')) {
    const others = presets.filter((p) => p !== 'mcp.empty');
    const value = entry.allowed_servers;
    const listed = value === undefined ? [] : Array.isArray(value) ? value : ENVS.flatMap((e) => value[e] ?? []);
    const combined = [...others.map((p) => `preset ${p}`), ...(listed.length > 0 ? ['allowed_servers'] : [])];
    if (combined.length > 0) {
      issues.error(
        at(),
        `mcp.empty means "no server" and cannot be combined with ${combined.join(' or ')}; drop mcp.empty to let the role use servers, or keep it alone to let it use none`,
        'key',
      );
    }
  }
  const allowed = serversByEnvironment(entry.allowed_servers, at('allowed_servers'), known, issues, budget);
  const forbidden = serversByEnvironment(entry.forbidden_servers, at('forbidden_servers'), known, issues, budget);
  if (presets.includes('mcp.full_internal')) {
    for (const env of FULL_INTERNAL_ENVIRONMENTS) for (const s of servers.values()) if (!s.prohibited) allowed[env].add(s.name);
  }
  if (entry.allowed_servers !== undefined) {
    const list = Array.isArray(entry.allowed_servers) ? entry.allowed_servers : ENVS.flatMap((e) => (entry.allowed_servers as Record<string, string[]>)[e] ?? []);
    for (const s of new Set(list)) {
      if (servers.get(s)?.prohibited) issues.warning(at('allowed_servers'), `server "${s}" is prohibited: calls to it are refused whatever the role allows`);
    }
  }
  return {
    name,
    builtIn: false,
    presets,
    readOnly: presets.includes('mcp.read_only'),
    allowed,
    forbidden,
    largeResults: entry.large_results ?? false,
    cascade: Object.freeze({ threshold: entry.cascade?.threshold ?? cascade.threshold, windowCalls: entry.cascade?.window_calls ?? cascade.windowCalls }),
  };
}

function builtInRole(preset: string, servers: ReadonlyMap<string, CompiledServer>, cascade: CascadeSettings): CompiledRole {
  const allowed = { development: new Set<string>(), staging: new Set<string>(), production: new Set<string>() };
  if (preset === 'mcp.full_internal') {
    for (const env of FULL_INTERNAL_ENVIRONMENTS) for (const s of servers.values()) if (!s.prohibited) allowed[env].add(s.name);
  }
  return {
    name: preset,
    builtIn: true,
    presets: [preset],
    readOnly: preset === 'mcp.read_only',
    allowed,
    forbidden: { development: new Set(), staging: new Set(), production: new Set() },
    largeResults: false,
    cascade,
  };
}

const BUILTIN_PROHIBITED_RULES: Record<string, Omit<ProhibitedRule, 'name' | 'order'>> = {
  shell_execution: { serverClass: 'exec', capabilities: new Set(['read', 'write', 'delete']), servers: undefined, maps: undefined },
  file_write: { serverClass: 'storage', capabilities: new Set(['write', 'delete']), servers: undefined, maps: new Set(['filesystem']) },
  database_write: { serverClass: 'db', capabilities: new Set(['write', 'delete']), servers: undefined, maps: undefined },
};

function compileProhibited(list: PolicyFile['prohibited_capabilities'], known: ReadonlyMap<string, unknown>, issues: IssueList): ProhibitedRule[] {
  const out: ProhibitedRule[] = [];
  const names = new Set<string>();
  for (const [i, item] of (list ?? []).entries()) {
    const path: PathSegment[] = ['prohibited_capabilities', i];
    const name = typeof item === 'string' ? item : item.name;
    if (names.has(name)) issues.warning(path, `"${name}" is listed twice`);
    names.add(name);
    if (typeof item === 'string') {
      const rule = BUILTIN_PROHIBITED_RULES[item];
      if (rule) out.push({ name, order: out.length, ...rule });
      continue;
    }
    if (BUILTIN_PROHIBITED_RULES[item.name]) {
      issues.error([...path, 'name'], `"${item.name}" is a built-in prohibited capability; list it as a plain name, or give this rule another name`);
      continue;
    }
    if (item.class === undefined && item.servers === undefined) {
      issues.error(path, 'a custom prohibited capability needs `class`, `servers` or both');
      continue;
    }
    let ok = true;
    for (const [j, s] of (item.servers ?? []).entries()) {
      if (!known.has(s)) {
        issues.error([...path, 'servers', j], `unknown server "${s}"`);
        ok = false;
      }
    }
    if (!ok) continue;
    out.push({
      name: item.name,
      order: out.length,
      serverClass: item.class,
      capabilities: new Set(item.capabilities ?? ['read', 'write', 'delete']),
      servers: item.servers ? new Set(item.servers) : undefined,
      maps: undefined,
    });
  }
  return out;
}

/** ProhibitedIndex of `rules`: each filed under its servers, else its class. */
export function indexProhibitedRules(rules: readonly ProhibitedRule[]): ProhibitedIndex {
  const byServer = new Map<string, ProhibitedRule[]>();
  const byClass = new Map<string, ProhibitedRule[]>();
  const rest: ProhibitedRule[] = [];
  const file = (map: Map<string, ProhibitedRule[]>, key: string, rule: ProhibitedRule) => {
    const list = map.get(key);
    if (list) list.push(rule);
    else map.set(key, [rule]);
  };
  for (const rule of rules) {
    if (rule.servers) for (const s of rule.servers) file(byServer, s, rule);
    else if (rule.serverClass !== undefined) file(byClass, rule.serverClass, rule);
    else rest.push(rule);
  }
  return { byServer, byClass, rest };
}

/** Server `approval:` lists and `approvals.rules`, checked against the servers and roles of the file. */
function compileApprovals(
  entry: ApprovalsEntry | undefined,
  servers: ReadonlyMap<string, CompiledServer>,
  known: ReadonlyMap<string, unknown>,
  roles: ReadonlyMap<string, CompiledRole>,
  issues: IssueList,
): ApprovalSettings {
  const separateApprover = entry?.separate_approver ?? false;
  const ttlSeconds = entry?.ttl_seconds;
  const rules: ApprovalRule[] = [];
  for (const s of servers.values()) {
    if (s.approval.size === 0) continue;
    rules.push({ name: `servers.${s.name}.approval`, servers: new Set([s.name]), tools: s.approval, capabilities: undefined, roles: undefined, environments: undefined, separateApprover, ttlSeconds });
  }
  const names = new Set<string>();
  for (const [i, rule] of (entry?.rules ?? []).entries()) {
    const at: PathSegment[] = ['approvals', 'rules', i];
    if (names.has(rule.name)) issues.error([...at, 'name'], `rule name "${rule.name}" is used twice`);
    names.add(rule.name);
    if (!rule.servers && !rule.tools && !rule.capabilities && !rule.roles && !rule.environments) {
      issues.error(at, 'a rule needs at least one of servers, tools, capabilities, roles, environments (to ask for approval of every call, say `environments: [development, staging, production]`)');
    }
    for (const [j, name] of (rule.servers ?? []).entries()) {
      if (!known.has(name)) issues.error([...at, 'servers', j], `unknown server "${name}"`);
    }
    for (const [j, name] of (rule.roles ?? []).entries()) {
      if (!roles.has(name)) issues.warning([...at, 'roles', j], `role "${name}" is not in this policy; the rule applies if a token has it`);
    }
    rules.push({
      name: rule.name,
      servers: rule.servers ? new Set(rule.servers) : undefined,
      tools: rule.tools ? new Set(rule.tools) : undefined,
      capabilities: rule.capabilities ? new Set(rule.capabilities) : undefined,
      roles: rule.roles ? new Set(rule.roles) : undefined,
      environments: rule.environments ? new Set(rule.environments) : undefined,
      separateApprover: rule.separate_approver ?? separateApprover,
      ttlSeconds: rule.ttl_seconds ?? ttlSeconds,
    });
  }
  return { rules, index: indexApprovalRules(rules), separateApprover, ttlSeconds };
}

/** ApprovalIndex of `rules`: each rule filed under the first of servers, roles, tools it names. */
export function indexApprovalRules(rules: readonly ApprovalRule[]): ApprovalIndex {
  const byServer = new Map<string, IndexedApprovalRule[]>();
  const byRole = new Map<string, IndexedApprovalRule[]>();
  const byTool = new Map<string, IndexedApprovalRule[]>();
  const rest: IndexedApprovalRule[] = [];
  const file = (map: Map<string, IndexedApprovalRule[]>, keys: ReadonlySet<string>, entry: IndexedApprovalRule) => {
    for (const key of keys) {
      const list = map.get(key);
      if (list) list.push(entry);
      else map.set(key, [entry]);
    }
  };
  rules.forEach((rule, order) => {
    const entry = { order, rule };
    if (rule.servers) file(byServer, rule.servers, entry);
    else if (rule.roles) file(byRole, rule.roles, entry);
    else if (rule.tools) file(byTool, rule.tools, entry);
    else rest.push(entry);
  });
  return { byServer, byRole, byTool, rest };
}

/**
 * Checks the cross-references of a schema-valid file and compiles it. Adds errors and warnings to
 * `issues`; returns undefined when there is any error.
 */
export function compilePolicy(file: PolicyFile, issues: IssueList, meta: { path: string; hash: string }): CompiledPolicy | undefined {
  // Names are checked against the file's own keys so one broken server does not cascade into
  // "unknown server" errors everywhere it is referenced.
  const known = new Map(Object.keys(file.servers).map((k) => [k, true]));
  const perServerLimits = file.rate_limits?.per_server ?? {};
  for (const name of Object.keys(perServerLimits)) {
    if (!known.has(name)) issues.error(['rate_limits', 'per_server', name], `unknown server "${name}"`, 'key');
  }

  const servers = new Map<string, CompiledServer>();
  for (const [name, entry] of Object.entries(file.servers)) {
    const compiled = compileServer(name, entry, issues, perServerLimits[name]);
    if (compiled) servers.set(name, compiled);
  }

  const cascade: CascadeSettings = Object.freeze({
    threshold: file.cascade?.threshold ?? DEFAULT_CASCADE.threshold,
    windowCalls: file.cascade?.window_calls ?? DEFAULT_CASCADE.windowCalls,
  });

  const roles = new Map<string, CompiledRole>();
  for (const preset of PRESETS) roles.set(preset, builtInRole(preset, servers, cascade));
  const hints = { comparisons: 0 };
  for (const [name, entry] of Object.entries(file.roles)) {
    if ((PRESETS as readonly string[]).includes(name)) {
      issues.error(['roles', name], `"${name}" is a built-in preset: it cannot be redefined or deleted (reference it with \`presets: [${name}]\`)`, 'key');
      continue;
    }
    if (name.startsWith('mcp.')) {
      issues.error(['roles', name], 'role names starting with "mcp." are reserved for built-in presets', 'key');
      continue;
    }
    roles.set(name, compileRole(name, entry, servers, known, cascade, issues, hints));
  }

  const prohibited = compileProhibited(file.prohibited_capabilities, known, issues);
  const approvals = compileApprovals(file.approvals, servers, known, roles, issues);

  const environments = {} as Record<Environment, EnvironmentRules>;
  for (const env of ENVS) {
    const entry = file.environments?.[env];
    const defaults = DEFAULT_ENVIRONMENTS[env];
    environments[env] = {
      forbiddenPatterns: new Set((entry?.forbidden_patterns ?? defaults.forbiddenPatterns).map((p) => p.toLowerCase())),
      humanGrantRequired: entry?.human_grant_required ?? defaults.humanGrantRequired,
    };
  }

  const g = file.rate_limits?.global;
  const t = file.rate_limits?.per_token;
  const d = DEFAULT_GLOBAL_LIMITS;
  const limits = {
    session: {
      maxCalls: pick(g?.max_calls_per_session, d.session.maxCalls),
      maxCallsPerMinute: pick(g?.max_calls_per_minute, d.session.maxCallsPerMinute),
    },
    pauseAtPercent: g?.pause_at_percent ?? d.pauseAtPercent,
    token: {
      maxCallsPerMinute: pick(t?.max_calls_per_minute, d.token.maxCallsPerMinute),
      maxCallsPerDay: pick(t?.max_calls_per_day, d.token.maxCallsPerDay),
      // Unset in the file: undefined, so SESSION_MAX_OPEN_PER_TOKEN / SESSION_MAX_NEW_PER_HOUR apply.
      maxOpenSessions: t?.max_open_sessions,
      maxNewSessionsPerHour: t?.max_new_sessions_per_hour,
      // Unset: TOOL_REPORTS_MAX_PER_MINUTE applies.
      maxToolReportsPerMinute: t?.max_tool_reports_per_minute,
    },
  };

  if (issues.hasErrors) return undefined;
  return {
    path: meta.path,
    hash: meta.hash,
    loadedAt: new Date(),
    servers,
    roles,
    prohibited,
    prohibitedIndex: indexProhibitedRules(prohibited),
    environments,
    limits,
    cascade,
    largeResultBytes: file.large_result_bytes ?? DEFAULT_LARGE_RESULT_BYTES,
    haltTokenOn: new Set<HaltTrigger>(file.halt_token_on ?? DEFAULT_HALT_TOKEN_ON),
    approvals,
    warnings: issues.warningsListed(),
    limitsCache: new Map(),
  };
}
