import { storable } from '../audit/redact.js';
import type { DecisionInput, Denial, ResolvedCall } from '../decisions/types.js';
import type { AgentPrincipal } from '../tokens/authenticator.js';
import { AGENT_PREFIXES } from '../tokens/format.js';
import { SCOPE_BY_NAME } from '../tokens/scopes.js';
import { describeProductionHit, firstWebUrl, hostInDomains, isLocalResource, localPathOf, matchProductionPattern, UNREADABLE_HOST } from './resources.js';
import type { CompiledPolicy, CompiledServer, NetworkRule, PathRule, ProhibitedRule } from './types.js';

// Steps 5 (policy) and 6 (scopes) of DESIGN.md §4. Pure functions of the compiled policy, the token
// and the resolved call: the first denial wins, in the order an operator reads them in explain.

/** Up to this many prohibited capabilities are walked in order rather than looked up in the index. */
const PROHIBITED_SCAN_AT_MOST = 8;

/** The class of each scope of the table (`db:update` → `db`): looked up per call rather than cut out of the name. */
const SCOPE_CLASS: ReadonlyMap<string, string> = new Map([...SCOPE_BY_NAME.keys()].map((s) => [s, s.slice(0, s.indexOf(':'))]));

function prohibitionCovers(rule: ProhibitedRule, server: CompiledServer, call: ResolvedCall, scopeClass: string): boolean {
  if (!rule.capabilities.has(call.capability)) return false;
  if (rule.serverClass !== undefined && rule.serverClass !== server.serverClass && rule.serverClass !== scopeClass) return false;
  if (rule.servers && !rule.servers.has(server.name)) return false;
  if (rule.maps && (server.mapName === undefined || !rule.maps.has(server.mapName))) return false;
  return true;
}

/** The first rule of `list` covering the call that comes before `best` in the file, else `best`. */
function earlierProhibition(list: readonly ProhibitedRule[] | undefined, server: CompiledServer, call: ResolvedCall, scopeClass: string, best: ProhibitedRule | undefined): ProhibitedRule | undefined {
  if (list === undefined) return best;
  for (const rule of list) {
    if (best !== undefined && rule.order >= best.order) return best;
    if (prohibitionCovers(rule, server, call, scopeClass)) return rule;
  }
  return best;
}

/**
 * The first prohibited capability (in the file's order) covering the call. Only the rules filed under
 * the call's server, the server's class and the required scope's class are looked at (ProhibitedIndex):
 * the cost does not grow with the length of `prohibited_capabilities`.
 */
function prohibitedRuleFor(policy: CompiledPolicy, server: CompiledServer, call: ResolvedCall): ProhibitedRule | undefined {
  const scope = call.requiredScope;
  const scopeClass = SCOPE_CLASS.get(scope) ?? scope.slice(0, scope.indexOf(':'));
  // A few rules (the usual file) are quicker to walk than to look up: the same answer either way.
  if (policy.prohibited.length <= PROHIBITED_SCAN_AT_MOST) {
    for (const rule of policy.prohibited) if (prohibitionCovers(rule, server, call, scopeClass)) return rule;
    return undefined;
  }
  const index = policy.prohibitedIndex;
  let best = earlierProhibition(index.byServer.get(server.name), server, call, scopeClass, undefined);
  best = earlierProhibition(index.byClass.get(server.serverClass), server, call, scopeClass, best);
  if (scopeClass !== server.serverClass) best = earlierProhibition(index.byClass.get(scopeClass), server, call, scopeClass, best);
  return earlierProhibition(index.rest, server, call, scopeClass, best);
}

const MAX_SHOWN = 200;

/** A value quoted back in a denial: storable, and cut (a path or host can be as long as the body allows). */
function shown(value: string): string {
  const s = storable(value);
  return s.length > MAX_SHOWN ? `${s.slice(0, MAX_SHOWN)}…` : s;
}

/** `servers.<name>.network`: every web URL the call carries is https (`https_only`) and on an allowed domain. */
function networkDenial(server: CompiledServer, rule: NetworkRule, call: ResolvedCall, input: DecisionInput): Denial | undefined {
  const what = `${call.server}/${call.tool}`;
  const at = `servers.${server.name}.network`;
  return firstWebUrl<Denial>(input.arguments, input.resources, (url) => {
    if (url.unreadable) {
      return {
        code: 'PERMISSION_DENIED',
        message: `${what}: ${url.where} cannot be read as an http(s) URL${url.hosts.includes(UNREADABLE_HOST) ? ' (its host is too long to read)' : ''}, and ${at} restricts where this server may connect, so the call is refused; give an absolute https:// URL`,
      };
    }
    if (rule.httpsOnly && url.scheme !== 'https') {
      return {
        code: 'PERMISSION_DENIED',
        message: `${what}: ${url.where} is a ${url.scheme}:// URL (host ${shown(url.hosts[0] ?? '')}), and ${at}.https_only allows https:// URLs only`,
      };
    }
    if (rule.allowedDomains === undefined) return undefined;
    for (const host of url.hosts) {
      if (hostInDomains(host, rule.allowedDomains)) continue;
      return {
        code: 'PERMISSION_DENIED',
        message: `${what}: ${url.where} reaches host ${shown(host)}, which is not in ${at}.allowed_domains (${rule.allowedDomains.join(', ')}; each allows its subdomains)`,
      };
    }
    return undefined;
  });
}

/** `servers.<name>.paths`: every path argument and local resource lies inside an allowed directory. */
function pathDenial(server: CompiledServer, rule: PathRule, call: ResolvedCall, input: DecisionInput): Denial | undefined {
  const what = `${call.server}/${call.tool}`;
  const allowed = `servers.${server.name}.paths.allowed (${rule.allowed.join(', ')})`;
  const check = (value: string, where: string): Denial | undefined => {
    const local = localPathOf(value);
    if ('problem' in local) {
      return { code: 'PERMISSION_DENIED', message: `${what}: path "${shown(value)}" (${where}) ${local.problem}; ${allowed} needs an absolute path inside one of them` };
    }
    for (let i = 0; i < rule.allowed.length; i++) {
      if (local.path === rule.allowed[i] || local.path.startsWith(rule.prefixes[i] as string)) return undefined;
    }
    const written = local.path === value ? '' : `, written "${shown(value)}"`;
    return { code: 'PERMISSION_DENIED', message: `${what}: path ${shown(local.path)} (${where}${written}) is outside ${allowed}` };
  };
  for (const key of rule.arguments) {
    const value = input.arguments[key];
    if (value === undefined) continue;
    const list = typeof value === 'string' ? [value] : Array.isArray(value) && value.every((v) => typeof v === 'string') ? (value as string[]) : undefined;
    if (list === undefined) return { code: 'PERMISSION_DENIED', message: `${what}: argument ${key} is not a path (text, or a list of text), so ${allowed} cannot be checked` };
    for (const s of list) {
      const denial = check(s, `argument ${key}`);
      if (denial) return denial;
    }
  }
  // resources/read names a file by its URI.
  const uri = input.arguments['uri'];
  if (typeof uri === 'string' && isLocalResource(uri)) {
    const denial = check(uri, 'argument uri');
    if (denial) return denial;
  }
  for (const [i, r] of (input.resources ?? []).entries()) {
    if (!isLocalResource(r)) continue;
    const denial = check(r, `resources[${i}]`);
    if (denial) return denial;
  }
  return undefined;
}

/**
 * The network identities (hosts, database names) a gateway reported it runs a server with
 * (POST /v1/gateway/tools, its last report), which may not be what the policy's `identity` says.
 */
export interface ReportedUpstream {
  gateway: { id: string; name: string | null };
  identities: readonly string[];
}

/**
 * Policy checks for a resolved call (step 5): the token's environment is authoritative, the server
 * must be allowed for the role in that environment (default deny; forbidden wins), prohibited
 * capabilities, production patterns against network identities, the server's `network` and `paths`
 * restrictions, and the human grant a production environment needs. `grants.production`: an active human grant covers this token or session.
 * `reported`: what the calling gateway reported it runs the server with (explain, which has no gateway:
 * every gateway's report); matched against the production patterns as the policy's identity is, so a
 * policy that describes another upstream than the gateway runs hides no production database.
 */
export function checkPolicy(
  policy: CompiledPolicy,
  agent: AgentPrincipal,
  call: ResolvedCall,
  input: DecisionInput,
  grants: { production: boolean },
  reported: readonly ReportedUpstream[] = [],
): Denial | undefined {
  const env = agent.environment;
  if (input.environment !== undefined && input.environment !== env) {
    return {
      code: 'ENVIRONMENT_FORBIDDEN',
      message: `this token belongs to ${env} but the request names ${input.environment}; the token's environment is authoritative: use a token issued for ${input.environment}`,
    };
  }

  const server = policy.servers.get(call.server);
  if (!server) {
    // resolveCall already refuses unknown servers; a policy reloaded between the two steps lands here.
    return { code: 'UNKNOWN_SERVER', halt: 'UNAUTHORIZED_SERVER', message: `server "${call.server}" is not in the policy` };
  }
  const role = policy.roles.get(agent.role);
  if (!role) {
    return {
      code: 'PERMISSION_DENIED',
      halt: 'UNAUTHORIZED_SERVER',
      message: `role ${agent.role} is not defined in the policy, so it may use no server (${call.server} in ${env} refused); an operator must add the role to the policy file`,
    };
  }
  if (server.prohibited) {
    return {
      code: 'PERMISSION_DENIED',
      halt: 'UNAUTHORIZED_SERVER',
      message: `server ${call.server} is prohibited by the policy for every role (role ${role.name}, ${env})`,
    };
  }
  if (role.forbidden[env].has(server.name)) {
    return {
      code: 'PERMISSION_DENIED',
      halt: 'UNAUTHORIZED_SERVER',
      message: `role ${role.name} may not use server ${call.server} in ${env}: it is in the role's forbidden servers`,
    };
  }
  if (!role.allowed[env].has(server.name)) {
    return {
      code: 'PERMISSION_DENIED',
      halt: 'UNAUTHORIZED_SERVER',
      message: `role ${role.name} may not use server ${call.server} in ${env}: it is not in the role's allowed servers (default deny)`,
    };
  }
  if (role.readOnly && call.capability !== 'read') {
    return {
      code: 'PERMISSION_DENIED',
      halt: 'WRITE_IN_READ_SESSION',
      message: `role ${role.name} is read-only (preset mcp.read_only): ${call.server}/${call.tool} needs ${call.requiredScope} (${call.capability})`,
    };
  }

  const rule = prohibitedRuleFor(policy, server, call);
  if (rule) {
    return {
      code: 'PERMISSION_DENIED',
      message: `the policy prohibits ${rule.name} for every role: ${call.server}/${call.tool} is a ${call.capability} on a ${server.serverClass} server`,
    };
  }

  const rules = policy.environments[env];
  if (!grants.production) {
    const hit = matchProductionPattern(call.networkIdentities, rules.forbiddenPatterns);
    if (hit) {
      return {
        code: 'ENVIRONMENT_FORBIDDEN',
        halt: 'PRODUCTION_ENVIRONMENT',
        message: `${call.server}/${call.tool} ${describeProductionHit(hit)}; ${env} tokens need a human grant for production (ask an operator)`,
      };
    }
    for (const upstream of reported) {
      const match = matchProductionPattern(upstream.identities, rules.forbiddenPatterns);
      if (!match) continue;
      const gateway = `${upstream.gateway.name ?? 'gateway'} (${upstream.gateway.id})`;
      return {
        code: 'ENVIRONMENT_FORBIDDEN',
        halt: 'PRODUCTION_ENVIRONMENT',
        message: `${call.server}/${call.tool}: the upstream identity gateway ${gateway} reported for server ${call.server} (POST /v1/gateway/tools) ${describeProductionHit(match)}, whatever the policy's identity of the server says; ${env} tokens need a human grant for production (ask an operator), or the gateway must run ${call.server} against a non-production upstream`,
      };
    }
  }

  // Seed 002's required restrictions (servers.<name>.network, .paths): refusals, not triggers. A write
  // by an mcp_ro_ token is left to the scope step, which halts it (WRITE_IN_READ_SESSION): a path
  // outside the allowed directories must not turn that trigger into a plain refusal.
  const restricted = (server.network && networkDenial(server, server.network, call, input)) || (server.paths && pathDenial(server, server.paths, call, input));
  if (restricted && scopeCheck(agent, call)?.halt === undefined) return restricted;

  if (!grants.production && rules.humanGrantRequired) {
    return {
      code: 'HUMAN_AUTHORIZATION_REQUIRED',
      message: `${env} calls need an active human grant for this token or session; ask an operator (POST /v1/grants) with a reason and a time limit`,
    };
  }
  return undefined;
}

const TYPE_PREFIX = AGENT_PREFIXES;

/**
 * Step 6: the token must hold the exact scope. A write or delete attempted with an mcp_ro_ token fires
 * the WRITE_IN_READ_SESSION trigger.
 */
export function scopeCheck(agent: AgentPrincipal, call: ResolvedCall): Denial | undefined {
  if (agent.scopes.includes(call.requiredScope)) return undefined;
  const prefix = TYPE_PREFIX[agent.tokenType];
  const what = `${call.server}/${call.tool}`;
  const spec = SCOPE_BY_NAME.get(call.requiredScope);
  const halt = agent.tokenType === 'ro' && call.capability !== 'read' ? ({ halt: 'WRITE_IN_READ_SESSION' } as const) : {};
  const why = call.scopeSource === 'untrusted-default' ? ' (the tool is not in the policy map and its annotations are not trusted, so it counts as a write)' : '';
  let message: string;
  if (!spec) {
    message = `${prefix} tokens cannot call ${what}: it needs scope ${call.requiredScope}${why}, which no token can hold; ask an operator to map the tool to a scope in the policy`;
  } else if (call.requiredScope === 'auth:*' && agent.tokenType !== 'admin') {
    // A name that only looks like user management is fixed by mapping the tool (servers.<name>.tools).
    const byName = call.scopeSource === 'user-management-name';
    message = byName
      ? `${prefix} tokens cannot call ${what}: it needs scope auth:* (user management: the tool is not in the policy map and its name manages users or credentials), which only admin tokens hold; ask an operator for an ${TYPE_PREFIX.admin} token, or, if the tool does not manage users, for a policy that maps it to its scope (servers.${call.server}.tools)`
      : `${prefix} tokens cannot call ${what}: it needs scope auth:* (user management), which only admin tokens hold; ask an operator for an ${TYPE_PREFIX.admin} token`;
  } else if (!spec.allowedTypes.includes(agent.tokenType)) {
    const minimal = spec.allowedTypes.includes('rw') ? 'rw' : 'admin';
    message = `${prefix} tokens cannot call ${what}: it needs scope ${call.requiredScope}${why}; ask an operator for an ${TYPE_PREFIX[minimal]} token`;
  } else {
    message = `this ${prefix} token cannot call ${what}: it needs scope ${call.requiredScope}${why}, which it was not issued with; ask an operator for a token with that scope`;
  }
  return { code: 'PERMISSION_DENIED', message, ...halt };
}
