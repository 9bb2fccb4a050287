import { beforeAll, describe, expect, it } from 'vitest';
import type { DecisionInput, Denial, ResolvedCall } from '../../src/decisions/types.js';
import { type CompiledPolicy, checkPolicy, formatIssue, loadPolicyFile, parsePolicy, resolveCall, scopeCheck } from '../../src/policy/index.js';
import { upstreamIdentitiesOf } from '../../src/policy/resources.js';
import type { AgentPrincipal } from '../../src/tokens/authenticator.js';
import type { TokenType } from '../../src/tokens/format.js';
import { DEFAULT_SCOPES } from '../../src/tokens/scopes.js';

let fixture: CompiledPolicy;
let example: CompiledPolicy;

async function load(file: string): Promise<CompiledPolicy> {
  const result = await loadPolicyFile(file);
  if (!result.ok) throw new Error(result.issues.map(formatIssue).join('\n'));
  return result.policy;
}

beforeAll(async () => {
  fixture = await load('test/fixtures/policy/test.yaml');
  example = await load('policy/default.yaml');
});

function agent(tokenType: TokenType, over: Partial<AgentPrincipal> = {}): AgentPrincipal {
  return {
    kind: 'agent',
    id: 'tok-1',
    tokenType,
    scopes: DEFAULT_SCOPES[tokenType],
    role: 'code_agent',
    projectId: 'demo',
    environment: 'development',
    displayPrefix: `mcp_${tokenType}_abcd`,
    expiresAt: null,
    ...over,
  };
}

/** Seed 000's defaults hold no vcs or net scope: agents using GitHub or fetch get tokens issued with them. */
const WITH_VCS_NET = (type: TokenType) => [...DEFAULT_SCOPES[type], 'vcs:read', 'net:read', ...(type === 'ro' ? [] : ['vcs:write'])];

function input(server: string, tool: string, extra: Partial<DecisionInput> = {}): DecisionInput {
  return { server, tool, arguments: {}, session_id: 's-1', ...extra };
}

/** Steps 3, 5 and 6 in pipeline order: the first denial wins. */
function decide(policy: CompiledPolicy, who: AgentPrincipal, i: DecisionInput, grants = { production: false }): Denial | 'allow' {
  const r = resolveCall(policy, i);
  if ('denial' in r) return r.denial;
  return checkPolicy(policy, who, r.call, i, grants) ?? scopeCheck(who, r.call) ?? 'allow';
}

function call(policy: CompiledPolicy, i: DecisionInput): ResolvedCall {
  const r = resolveCall(policy, i);
  if (!('call' in r)) throw new Error(r.denial.message);
  return r.call;
}

describe('the example policy (policy/default.yaml)', () => {
  it('rw token + filesystem write_file → allowed', () => {
    expect(decide(example, agent('rw'), input('filesystem', 'write_file', { arguments: { path: '/tmp/ks-demo/docs/a.md' } }))).toBe('allow');
  });

  it('G4: filesystem is limited to /tmp/ks-demo (paths.allowed): a traversal out of it is refused, no halt', () => {
    const d = decide(example, agent('rw'), input('filesystem', 'write_file', { arguments: { path: '/tmp/ks-demo/../../etc/cron.d/x' }, resources: ['file:///etc/cron.d/x'] }));
    expect(d).toEqual({
      code: 'PERMISSION_DENIED',
      message: 'filesystem/write_file: path /etc/cron.d/x (argument path, written "/tmp/ks-demo/../../etc/cron.d/x") is outside servers.filesystem.paths.allowed (/tmp/ks-demo)',
    });
  });

  it('G3: fetch is HTTPS only (network.https_only): a read-only token fetching http:// is refused, no halt', () => {
    const ro = agent('ro', { scopes: WITH_VCS_NET('ro') });
    const d = decide(example, ro, input('fetch', 'fetch', { arguments: { url: 'http://evil.example.com/x' } }));
    expect(d).toEqual({ code: 'PERMISSION_DENIED', message: 'fetch/fetch: argument url is a http:// URL (host evil.example.com), and servers.fetch.network.https_only allows https:// URLs only' });
    expect(decide(example, ro, input('fetch', 'fetch', { arguments: { url: 'https://evil.example.com/x' } }))).toBe('allow');
  });

  it('G3: a URL whose host is too long to read is refused where network rules apply, whatever the token', () => {
    const ro = agent('ro', { scopes: WITH_VCS_NET('ro') });
    const i = input('fetch', 'fetch', { arguments: { url: `https://${'\uff41'.repeat(2_000)}.example.com/x` } });
    // A development token is denied it one step earlier (ENVIRONMENT_FORBIDDEN, as a production pattern); with a production grant, by the network rule.
    expect(decide(example, ro, i)).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN' });
    expect(decide(example, ro, i, { production: true })).toMatchObject({ code: 'PERMISSION_DENIED', message: expect.stringContaining('argument url cannot be read as an http(s) URL (its host is too long to read)') });
  });

  it('rw token + memory delete_entities → PERMISSION_DENIED (needs storage:delete), no halt', () => {
    const d = decide(example, agent('rw'), input('memory', 'delete_entities', { arguments: { entityNames: ['a'] } }));
    expect(d).toMatchObject({ code: 'PERMISSION_DENIED' });
    expect((d as Denial).halt).toBeUndefined();
    expect((d as Denial).message).toBe('mcp_rw_ tokens cannot call memory/delete_entities: it needs scope storage:delete; ask an operator for an mcp_admin_ token');
  });

  it('ro token + memory delete_entities → PERMISSION_DENIED with WRITE_IN_READ_SESSION: a delete is a write for the trigger', () => {
    const d = decide(example, agent('ro'), input('memory', 'delete_entities', { arguments: { entityNames: ['a'] } }));
    expect(d).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'WRITE_IN_READ_SESSION' });
  });

  it('ro token + filesystem write_file → PERMISSION_DENIED with WRITE_IN_READ_SESSION', () => {
    const d = decide(example, agent('ro'), input('filesystem', 'write_file', { arguments: { path: 'docs/a.md' } }));
    expect(d).toEqual({
      code: 'PERMISSION_DENIED',
      halt: 'WRITE_IN_READ_SESSION',
      message: 'mcp_ro_ tokens cannot call filesystem/write_file: it needs scope storage:write; ask an operator for an mcp_rw_ token',
    });
  });

  it('unknown server → UNKNOWN_SERVER, halting', () => {
    expect(decide(example, agent('rw'), input('shel', 'run'))).toMatchObject({ code: 'UNKNOWN_SERVER', halt: 'UNAUTHORIZED_SERVER' });
  });

  it('postgres://prod-db.internal/app in a development call → ENVIRONMENT_FORBIDDEN, halting', () => {
    const d = decide(example, agent('ro', { role: 'database_agent' }), input('postgres', 'query', { resources: ['postgres://prod-db.internal/app'] }));
    expect(d).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN', halt: 'PRODUCTION_ENVIRONMENT' });
    expect((d as Denial).message).toContain('"prod-db.internal"');
    expect((d as Denial).message).toContain('"prod"');
  });

  it('main as an argument, a folder or a URL path is not production', () => {
    const rw = agent('rw', { scopes: WITH_VCS_NET('rw') });
    expect(decide(example, rw, input('github', 'create_pull_request', { arguments: { owner: 'o', repo: 'r', title: 't', head: 'feature/x', base: 'main' } }))).toBe('allow');
    expect(decide(example, rw, input('filesystem', 'write_file', { arguments: { path: '/tmp/ks-demo/main/a.md' }, resources: ['file:///tmp/ks-demo/main/a.md'] }))).toBe('allow');
    expect(decide(example, rw, input('fetch', 'fetch', { arguments: { url: 'https://github.com/o/r/blob/main/x' } }))).toBe('allow');
    expect(decide(example, rw, input('fetch', 'fetch', { resources: ['https://github.com/o/r/blob/main/x'] }))).toBe('allow');
  });

  it('a live host fetched in development is production', () => {
    expect(decide(example, agent('rw', { scopes: WITH_VCS_NET('rw') }), input('fetch', 'fetch', { arguments: { url: 'https://live.example.com/' } }))).toMatchObject({
      code: 'ENVIRONMENT_FORBIDDEN',
      halt: 'PRODUCTION_ENVIRONMENT',
    });
  });

  it('resources a gateway sends add to what the arguments reach, never hide it: a live host in url is production whatever the resources say', () => {
    const rw = agent('rw', { scopes: WITH_VCS_NET('rw') });
    expect(decide(example, rw, input('fetch', 'fetch', { arguments: { url: 'https://live.example.com/' }, resources: ['https://example.com/'] }))).toMatchObject({
      code: 'ENVIRONMENT_FORBIDDEN',
      halt: 'PRODUCTION_ENVIRONMENT',
    });
    expect(decide(example, rw, input('fetch', 'fetch', { arguments: { url: 'https://example.com/' }, resources: ['https://prod.example.com/'] }))).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN' });
    expect(decide(example, rw, input('fetch', 'fetch', { arguments: { url: 'https://github.com/o/r/blob/main/x' }, resources: ['https://github.com/o/r/blob/main/x'] }))).toBe('allow');
  });

  it('seed 000 default scopes hold no vcs scope: GitHub needs a token issued with it', () => {
    const d = decide(example, agent('ro'), input('github', 'get_issue'));
    expect(d).toMatchObject({ code: 'PERMISSION_DENIED', message: expect.stringMatching(/needs scope vcs:read, which it was not issued with/) });
    expect((d as Denial).halt).toBeUndefined();
  });

  it('the shell server is refused for every role', () => {
    expect(decide(example, agent('admin'), input('shell', 'run_command'))).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'UNAUTHORIZED_SERVER' });
  });

  it('documentation_agent (mcp.read_only) reads but cannot write', () => {
    const doc = agent('rw', { role: 'documentation_agent' });
    expect(decide(example, doc, input('filesystem', 'read_text_file', { arguments: { path: '/tmp/ks-demo/a.md' } }))).toBe('allow');
    expect(decide(example, doc, input('filesystem', 'write_file', { arguments: { path: 'a.md' } }))).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'WRITE_IN_READ_SESSION' });
  });

  it('production tokens need a human grant', () => {
    const prod = agent('ro', { environment: 'production', role: 'code_agent' });
    // code_agent has no production servers in the example: refused before the grant question.
    expect(decide(example, prod, input('github', 'get_issue'))).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'UNAUTHORIZED_SERVER' });
  });
});

describe('checkPolicy (step 5)', () => {
  const rw = agent('rw');

  it('a request naming another environment than the token → ENVIRONMENT_FORBIDDEN without halt', () => {
    const i = input('filesystem', 'read_file', { environment: 'production' });
    const d = checkPolicy(fixture, rw, call(fixture, i), i, { production: true });
    expect(d).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN' });
    expect(d?.halt).toBeUndefined();
    const same = input('filesystem', 'read_file', { environment: 'development' });
    expect(checkPolicy(fixture, rw, call(fixture, same), same, { production: false })).toBeUndefined();
  });

  it('default deny: a server missing from the role in this environment halts and names role, server and environment', () => {
    const staging = agent('rw', { environment: 'staging' });
    const d = decide(fixture, staging, input('trusted', 'x', { annotations: { readOnlyHint: true } }));
    expect(d).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'UNAUTHORIZED_SERVER' });
    expect((d as Denial).message).toBe("role code_agent may not use server trusted in staging: it is not in the role's allowed servers (default deny)");
  });

  it('forbidden wins over allowed, also over mcp.full_internal', () => {
    const staging = agent('rw', { environment: 'staging' });
    // code_agent: memory is not allowed in staging and forbidden there.
    expect((decide(fixture, staging, input('memory', 'read_graph')) as Denial).message).toMatch(/forbidden servers/);
    const internal = agent('rw', { role: 'internal' });
    expect(decide(fixture, internal, input('filesystem', 'read_file'))).toBe('allow');
    expect(decide(fixture, internal, input('memory', 'read_graph'))).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'UNAUTHORIZED_SERVER' });
  });

  it('mcp.full_internal opens development and staging, never production', () => {
    expect(decide(fixture, agent('ro', { role: 'internal', environment: 'staging', scopes: WITH_VCS_NET('ro') }), input('github', 'get_issue'))).toBe('allow');
    expect(decide(fixture, agent('ro', { role: 'internal', environment: 'production' }), input('github', 'get_issue'))).toMatchObject({ halt: 'UNAUTHORIZED_SERVER' });
    // Prohibited servers are not part of it.
    expect(fixture.roles.get('internal')?.allowed.development.has('shell')).toBe(false);
  });

  it('built-in presets work as role names and cannot be shadowed', () => {
    expect(decide(fixture, agent('ro', { role: 'mcp.full_internal', scopes: WITH_VCS_NET('ro') }), input('github', 'get_issue'))).toBe('allow');
    expect(decide(fixture, agent('ro', { role: 'mcp.empty' }), input('github', 'get_issue'))).toMatchObject({ halt: 'UNAUTHORIZED_SERVER' });
    expect(decide(fixture, agent('ro', { role: 'mcp.read_only' }), input('github', 'get_issue'))).toMatchObject({ halt: 'UNAUTHORIZED_SERVER' });
  });

  it('a role missing from the policy may use nothing', () => {
    const d = decide(fixture, agent('rw', { role: 'ghost' }), input('filesystem', 'read_file'));
    expect(d).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'UNAUTHORIZED_SERVER' });
    expect((d as Denial).message).toMatch(/role ghost is not defined/);
  });

  it('a list of allowed servers applies to every environment', () => {
    const db = (environment: AgentPrincipal['environment']) => agent('ro', { role: 'database_agent', environment });
    expect(decide(fixture, db('development'), input('postgres', 'query'))).toBe('allow');
    expect(decide(fixture, db('staging'), input('postgres', 'query'))).toBe('allow');
    expect(decide(fixture, db('production'), input('postgres', 'query'))).toMatchObject({ code: 'HUMAN_AUTHORIZATION_REQUIRED' });
  });

  it('prohibited capabilities deny without halting', () => {
    const admin = agent('admin');
    const db = decide(fixture, admin, input('postgres', 'execute'));
    expect(db).toMatchObject({ code: 'PERMISSION_DENIED' });
    expect((db as Denial).halt).toBeUndefined();
    expect((db as Denial).message).toMatch(/prohibits database_write/);
    expect(decide(fixture, admin, input('runner', 'ls'))).toMatchObject({ code: 'PERMISSION_DENIED', message: expect.stringMatching(/shell_execution/) });
    expect(decide(fixture, admin, input('memory', 'delete_entities'))).toMatchObject({ message: expect.stringMatching(/no_memory_delete/) });
    expect(decide(fixture, admin, input('memory', 'create_entities'))).toBe('allow');
    expect(decide(fixture, admin, input('postgres', 'query'))).toBe('allow');
  });

  it('file_write covers servers using the filesystem map, not other storage', () => {
    const text = `servers:
  fs: { identity: { command: a }, map: filesystem }
  mem: { identity: { command: b }, map: memory }
roles:
  r: { allowed_servers: [fs, mem] }
prohibited_capabilities: [file_write]
`;
    const result = parsePolicy(text, 'p.yaml');
    if (!result.ok) throw new Error('invalid');
    const p = result.policy;
    const who = agent('rw', { role: 'r' });
    expect(decide(p, who, input('fs', 'write_file'))).toMatchObject({ code: 'PERMISSION_DENIED', message: expect.stringMatching(/file_write/) });
    expect(decide(p, who, input('fs', 'read_file'))).toBe('allow');
    expect(decide(p, who, input('mem', 'create_entities'))).toBe('allow');
  });

  it('production patterns halt unless a human grant covers the call', () => {
    const i = input('filesystem', 'read_file', { resources: ['postgres://prod-db.internal/app'] });
    const c = call(fixture, i);
    expect(checkPolicy(fixture, rw, c, i, { production: false })).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN', halt: 'PRODUCTION_ENVIRONMENT' });
    expect(checkPolicy(fixture, rw, c, i, { production: true })).toBeUndefined();
  });

  it('a denial quotes at most 200 characters of the identity; host text too long to read is denied and says so', () => {
    const long = input('filesystem', 'read_file', { arguments: { host: `prod-${'x'.repeat(100_000)}` } });
    const d = checkPolicy(fixture, rw, call(fixture, long), long, { production: false });
    expect(d).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN', halt: 'PRODUCTION_ENVIRONMENT' });
    expect(d?.message).toContain(`reaches "prod-${'x'.repeat(195)}… (100,005 characters)", which matches the production pattern "prod"`);
    expect(d?.message.length).toBeLessThan(600);
    const unreadable = input('filesystem', 'read_file', { arguments: { host: '\ufdfa'.repeat(5_000) } });
    const u = checkPolicy(fixture, rw, call(fixture, unreadable), unreadable, { production: false });
    expect(u).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN', halt: 'PRODUCTION_ENVIRONMENT' });
    expect(u?.message).toContain('names host text too long to read (over 1,024 characters in one host, or 16,384 in all, outside plain ASCII; or a URL or connection string cut into over 64 parts, hosts or parameters, or naming over 4,096 characters; or over 1,000 of them in one call)');
    expect(u?.message.length).toBeLessThan(600);
    expect(checkPolicy(fixture, rw, call(fixture, unreadable), unreadable, { production: true })).toBeUndefined();
  });

  it('what the calling gateway reported it runs the server with counts beside the policy identity, naming the gateway and the host', () => {
    const i = input('filesystem', 'read_file');
    const c = call(fixture, i);
    const reported = [{ gateway: { id: 'gw-1', name: 'edge' }, identities: [...upstreamIdentitiesOf({ args: ['postgresql://u:S3cret@prod-db.internal:5432/app'] })] }];
    const d = checkPolicy(fixture, rw, c, i, { production: false }, reported);
    expect(d).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN', halt: 'PRODUCTION_ENVIRONMENT' });
    expect(d?.message).toContain('edge (gw-1)');
    expect(d?.message).toContain('"prod-db.internal"');
    expect(d?.message).not.toContain('S3cret');
    expect(checkPolicy(fixture, rw, c, i, { production: true }, reported)).toBeUndefined();
    expect(checkPolicy(fixture, rw, c, i, { production: false }, [{ gateway: { id: 'gw-2', name: null }, identities: ['localhost', 'dev_db'] }])).toBeUndefined();
  });

  it("the server's own identity counts: a live-* upstream is production", () => {
    expect(decide(fixture, rw, input('liveproxy', 'fetch'))).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN', halt: 'PRODUCTION_ENVIRONMENT' });
  });

  it('a database named like production is production; mainframe is not main', () => {
    expect(decide(fixture, rw, input('filesystem', 'read_file', { arguments: { dsn: 'postgres://db.internal/app_production' } }))).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN' });
    expect(decide(fixture, rw, input('filesystem', 'read_file', { resources: ['https://mainframe.corp/x'] }))).toBe('allow');
  });

  it('production environment without a grant → HUMAN_AUTHORIZATION_REQUIRED (no halt); with one → allowed', () => {
    const ops = agent('ro', { role: 'ops', environment: 'production', scopes: WITH_VCS_NET('ro') });
    const d = decide(fixture, ops, input('github', 'get_issue'));
    expect(d).toMatchObject({ code: 'HUMAN_AUTHORIZATION_REQUIRED' });
    expect((d as Denial).halt).toBeUndefined();
    expect(decide(fixture, ops, input('github', 'get_issue'), { production: true })).toBe('allow');
  });
});

describe('prohibited capabilities of a large policy', () => {
  /** `n` db servers, one custom prohibited capability per server, then a rule by class (of the server or of the scope). */
  function largePolicy(n: number): CompiledPolicy {
    const lines = ['servers:'];
    for (let i = 0; i < n; i++) lines.push(`  s${i}: { identity: { command: a }, class: db, tools: { sync: storage:write, wipe: db:delete } }`);
    lines.push('  files: { identity: { command: b }, class: storage, tools: { purge: db:delete } }');
    lines.push('roles:', `  r: { allowed_servers: [${[...Array.from({ length: n }, (_, i) => `s${i}`), 'files'].join(', ')}] }`, 'prohibited_capabilities:');
    for (let i = 0; i < n; i++) lines.push(`  - { name: no_delete_${i}, servers: [s${i}], capabilities: [delete] }`);
    lines.push('  - { name: no_storage_writes, class: storage, capabilities: [write] }');
    const result = parsePolicy(`${lines.join('\n')}\n`, 'p.yaml');
    if (!result.ok) throw new Error(result.issues.map(formatIssue).join('\n'));
    return result.policy;
  }
  const policy = largePolicy(500);
  const admin = agent('admin', { role: 'r' });
  // Each rule's capabilities set counts its lookups: how many rules a call looks at.
  let looked = 0;
  for (const rule of policy.prohibited) {
    const own = rule.capabilities;
    (rule as { capabilities: ReadonlySet<string> }).capabilities = Object.assign(new Set(own), {
      has: (c: string) => {
        looked++;
        return own.has(c as never);
      },
    });
  }

  it('a call looks only at the rules filed under its server and classes, not at the whole list', () => {
    looked = 0;
    expect(decide(policy, admin, input('s499', 'wipe'))).toMatchObject({ code: 'PERMISSION_DENIED', message: expect.stringMatching(/prohibits no_delete_499 /) });
    expect(looked).toBeLessThanOrEqual(3);
    looked = 0;
    expect(decide(policy, admin, input('s499', 'select'))).toBe('allow');
    expect(looked).toBeLessThanOrEqual(3);
  });

  it("a rule by class matches the server's class or the required scope's, as before", () => {
    expect(decide(policy, admin, input('s3', 'sync'))).toMatchObject({ message: expect.stringMatching(/prohibits no_storage_writes /) });
    expect(decide(policy, admin, input('files', 'anything'))).toMatchObject({ message: expect.stringMatching(/prohibits no_storage_writes /) });
    expect(decide(policy, admin, input('files', 'purge'))).toBe('allow');
  });
});

describe('scopeCheck (step 6)', () => {
  it('names the tool, the scope and the token to ask for', () => {
    const c = call(fixture, input('idp', 'create_user'));
    expect(scopeCheck(agent('rw'), c)?.message).toBe(
      'mcp_rw_ tokens cannot call idp/create_user: it needs scope auth:* (user management), which only admin tokens hold; ask an operator for an mcp_admin_ token',
    );
    expect(scopeCheck(agent('admin'), c)).toBeUndefined();
    expect(scopeCheck(agent('ro'), c)).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'WRITE_IN_READ_SESSION' });
  });

  it('an unmapped tool named like user management: the message says why auth:* and how to map it; an admin token without auth:* is told so', () => {
    const c = call(fixture, input('trusted', 'delete_user', { annotations: { readOnlyHint: true } }));
    expect(scopeCheck(agent('ro'), c)).toEqual({
      code: 'PERMISSION_DENIED',
      halt: 'WRITE_IN_READ_SESSION',
      message:
        'mcp_ro_ tokens cannot call trusted/delete_user: it needs scope auth:* (user management: the tool is not in the policy map and its name manages users or credentials), which only admin tokens hold; ask an operator for an mcp_admin_ token, or, if the tool does not manage users, for a policy that maps it to its scope (servers.trusted.tools)',
    });
    expect(scopeCheck(agent('admin', { scopes: ['storage:read'] }), c)?.message).toBe(
      'this mcp_admin_ token cannot call trusted/delete_user: it needs scope auth:*, which it was not issued with; ask an operator for a token with that scope',
    );
  });

  it('reads are never a halting trigger', () => {
    const c = call(fixture, input('idp', 'list_users'));
    expect(scopeCheck(agent('ro', { scopes: ['db:select'] }), c)).toEqual({
      code: 'PERMISSION_DENIED',
      message: 'this mcp_ro_ token cannot call idp/list_users: it needs scope storage:read, which it was not issued with; ask an operator for a token with that scope',
    });
  });

  it('explains unmapped tools on untrusted servers', () => {
    const d = scopeCheck(agent('ro'), call(fixture, input('untrusted', 'peek')));
    expect(d?.halt).toBe('WRITE_IN_READ_SESSION');
    expect(d?.message).toMatch(/not in the policy map and its annotations are not trusted/);
  });

  it('scopes no token can hold say so', () => {
    const d = scopeCheck(agent('admin'), call(fixture, input('web', 'post_form')));
    expect(d?.code).toBe('PERMISSION_DENIED');
    expect(d?.message).toMatch(/net:write.*which no token can hold/);
  });

  it('exact scope match: rw holds storage:write, not storage:delete', () => {
    expect(scopeCheck(agent('rw'), call(fixture, input('filesystem', 'edit_file')))).toBeUndefined();
    expect(scopeCheck(agent('rw'), call(fixture, input('trusted', 'purge')))?.message).toMatch(/storage:delete; ask an operator for an mcp_admin_ token/);
  });
});

describe('environment defaults (no environments section in the file)', () => {
  const bare = () => {
    const r = parsePolicy('servers:\n  db:\n    identity: { url: "https://prod-db.internal/mcp" }\n    class: db\nroles:\n  code_agent:\n    allowed_servers: { development: [db], staging: [db], production: [db] }\n', 'bare.yaml');
    if (!r.ok) throw new Error(r.issues.map(formatIssue).join('\n'));
    return r.policy;
  };

  it('development and staging forbid the production patterns; production needs a human grant', () => {
    const policy = bare();
    for (const environment of ['development', 'staging'] as const) {
      expect(decide(policy, agent('rw', { environment }), input('db', 'query')), environment).toMatchObject({ code: 'ENVIRONMENT_FORBIDDEN', halt: 'PRODUCTION_ENVIRONMENT' });
    }
    expect(decide(policy, agent('rw', { environment: 'production' }), input('db', 'query'))).toMatchObject({ code: 'HUMAN_AUTHORIZATION_REQUIRED' });
  });
});
