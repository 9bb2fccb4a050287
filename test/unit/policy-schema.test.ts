import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CLASS_SCOPES, DEFAULT_HALT_TOKEN_ON } from '../../src/policy/defaults.js';
import { formatIssue, loadPolicyFile, type PolicyIssue, parsePolicy, policyFlagNames, resolveCall, SHIPPED_MAPS } from '../../src/policy/index.js';
import { SERVER_CLASSES } from '../../src/policy/schema.js';
import { SCOPE_BY_NAME } from '../../src/tokens/scopes.js';

const MINIMAL = `servers:
  fs:
    identity: { command: npx }
    map: filesystem
roles:
  code_agent:
    allowed_servers: [fs]
`;

function errorsOf(text: string, file = 'p.yaml'): PolicyIssue[] {
  const result = parsePolicy(text, file);
  expect(result.ok).toBe(false);
  return result.issues.filter((i) => i.severity === 'error');
}

function compiled(text: string) {
  const result = parsePolicy(text, 'p.yaml');
  if (!result.ok) throw new Error(result.issues.map(formatIssue).join('\n'));
  return result.policy;
}

describe('policy file: example files', () => {
  it.each(['policy/default.yaml', 'policy/bench.yaml', 'test/fixtures/policy/test.yaml'])('%s is valid without warnings', async (file) => {
    const result = await loadPolicyFile(file);
    expect(result.issues.map(formatIssue)).toEqual([]);
    expect(result.ok).toBe(true);
  });

  it('hashes the exact bytes of the file (sha256)', async () => {
    const result = await loadPolicyFile('policy/default.yaml');
    if (!result.ok) throw new Error('default policy invalid');
    expect(result.policy.hash).toBe(createHash('sha256').update(readFileSync('policy/default.yaml')).digest('hex'));
  });
});

describe('policy file: errors point at line, column and key path', () => {
  it('unknown server in a role list, as in the fixture', async () => {
    const result = await loadPolicyFile('test/fixtures/policy/broken.yaml');
    expect(result.ok).toBe(false);
    expect(result.issues.map(formatIssue)).toEqual([
      'test/fixtures/policy/broken.yaml:11:41 roles.code_agent.allowed_servers.development[2]: unknown server "shel"; servers in this policy: filesystem, github',
    ]);
  });

  it('an unknown server deep in a file of 300 servers: one line pointing at it, naming the nearest servers, not all 300', () => {
    const servers = Array.from({ length: 300 }, (_, i) => `svc-${String(i).padStart(3, '0')}`);
    const text = [
      'servers:',
      ...servers.map((s) => `  ${s}: { identity: { command: npx }, class: db }`),
      'roles:',
      ...Array.from({ length: 150 }, (_, r) => `  team_${r}:\n    allowed_servers:\n      production: [${servers.slice(r, r + 40).join(', ')}${r === 149 ? ', svc-2999' : ''}]`),
    ].join('\n');
    const errors = errorsOf(text);
    expect(errors).toHaveLength(1);
    const [issue] = errors;
    expect(formatIssue(issue as PolicyIssue)).toMatch(/^p\.yaml:752:\d+ roles\.team_149\.allowed_servers\.production\[40\]: unknown server "svc-2999"; 300 servers in this policy, the nearest 10: svc-299, /);
    expect(issue?.message).not.toContain('svc-000');
    expect(issue?.message.length).toBeLessThan(300);
  });

  it('a policy in force keeps its first 100 warnings and one saying how many more (GET /v1/policy, the log at each load)', () => {
    const text = ['servers:', ...Array.from({ length: 150 }, (_, i) => `  s${i}: { identity: { command: npx }, map: memory, approval: [not_a_tool] }`), 'roles: {}'].join('\n');
    const policy = compiled(text);
    expect(policy.warnings).toHaveLength(101);
    expect(policy.warnings[0]?.message).toContain('tool "not_a_tool" is not in this server\'s map');
    expect(policy.warnings[100]).toMatchObject({ severity: 'warning', line: 102, message: '50 more warnings from here on, not listed (only the first 100 are kept with the policy)' });
  });

  it('YAML syntax errors carry their position', async () => {
    const result = await loadPolicyFile('test/fixtures/policy/syntax.yaml');
    expect(result.ok).toBe(false);
    const [first] = result.issues;
    expect(first?.severity).toBe('error');
    expect(first?.line).toBeGreaterThanOrEqual(3);
    expect(first?.line).toBeLessThanOrEqual(5);
  });

  it('an unreadable file is one error at 1:1', async () => {
    const result = await loadPolicyFile('test/fixtures/policy/does-not-exist.yaml');
    expect(result.ok).toBe(false);
    expect(formatIssue(result.issues[0] as PolicyIssue)).toBe('test/fixtures/policy/does-not-exist.yaml:1:1 cannot read the policy file: file not found');
  });

  it('duplicate keys are refused', () => {
    const [e] = errorsOf(`${MINIMAL}  code_agent:\n    allowed_servers: []\n`);
    expect(e?.line).toBe(8);
    expect(e?.message).toMatch(/unique/i);
  });

  it('unknown keys point at the key and list the expected ones', () => {
    const [e] = errorsOf(MINIMAL.replace('    map: filesystem\n', '    map: filesystem\n    trust: true\n'));
    expect(e).toMatchObject({ line: 5, column: 5, path: 'servers.fs.trust' });
    expect(e?.message).toMatch(/unknown key "trust"; expected one of: .*trust_annotations/);
  });

  it('wrong types and values name the field', () => {
    const errors = errorsOf(`${MINIMAL.replace('    map: filesystem\n', '    map: filesystem\n    trust_annotations: yes\n    class: stroage\n')}large_result_bytes: -5\nhalt_token_on: [FOO]\n`);
    expect(errors.map((e) => `${e.line}:${e.column} ${e.path}: ${e.message}`)).toEqual([
      '5:24 servers.fs.trust_annotations: must be true or false',
      '6:12 servers.fs.class: unknown value "stroage"; expected one of: ' + SERVER_CLASSES.join(', '),
      '10:21 large_result_bytes: must be >= 1',
      '11:17 halt_token_on[0]: unknown value "FOO"; expected one of: UNAUTHORIZED_SERVER, WRITE_IN_READ_SESSION, PRODUCTION_ENVIRONMENT, SESSION_LIMIT, LARGE_RESULT, CASCADE_WRITE, MAX_ROWS, MAX_EXECUTION_TIME',
    ]);
  });

  it('a count limit of 0 is refused (the counters would read it as no limit); null is no limit; 0 rows is a limit', () => {
    const errors = errorsOf(`${MINIMAL}rate_limits:\n  global: { max_calls_per_session: 0 }\n  per_server:\n    fs: { max_write_calls_per_session: 0, max_rows_returned: 0 }\n  per_token: { max_open_sessions: 0 }\n`);
    expect(errors.map((e) => `${e.path}: ${e.message}`)).toEqual([
      'rate_limits.global.max_calls_per_session: must be >= 1: 0 is not a limit here (it would count nothing); use null for no limit, and `prohibited: true` or a kill to stop a server',
      'rate_limits.per_server.fs.max_write_calls_per_session: must be >= 1: 0 is not a limit here (it would count nothing); use null for no limit, and `prohibited: true` or a kill to stop a server',
      'rate_limits.per_token.max_open_sessions: must be >= 1: 0 is not a limit here (it would count nothing); use null for no limit, and `prohibited: true` or a kill to stop a server',
    ]);
    const ok = compiled(`${MINIMAL}rate_limits:\n  global: { max_calls_per_session: null }\n  per_server:\n    fs: { max_rows_returned: 0 }\n`);
    expect(ok).toBeDefined();
  });

  it('server names must be usable in flag names', () => {
    const [e] = errorsOf(MINIMAL.replace('  fs:\n', '  File.System:\n').replace('[fs]', '[]'));
    expect(e).toMatchObject({ line: 2, column: 3, path: 'servers["File.System"]' });
    expect(e?.message).toMatch(/invalid name "File.System"/);
  });

  it('allowed_servers takes a list or a map of environments, nothing else', () => {
    expect(errorsOf(MINIMAL.replace('[fs]', '42'))[0]).toMatchObject({ path: 'roles.code_agent.allowed_servers', line: 7, column: 22 });
    const [e] = errorsOf(MINIMAL.replace('[fs]', '{ prod: [fs] }'));
    expect(e).toMatchObject({ path: 'roles.code_agent.allowed_servers.prod' });
    expect(e?.message).toMatch(/unknown key "prod"; expected one of: development, staging, production/);
  });

  it('forbidden patterns are whole segments, not globs', () => {
    const [e] = errorsOf(`${MINIMAL}environments:\n  development:\n    forbidden_patterns: ["*prod*"]\n`);
    expect(e).toMatchObject({ line: 10, path: 'environments.development.forbidden_patterns[0]' });
    expect(e?.message).toMatch(/whole segment/);
  });

  it('tool scopes must exist, maps must exist, a server without a map needs a class', () => {
    const text = `servers:
  a:
    identity: { url: "https://a.example" }
    class: storage
    tools: { put: "storage:wrte" }
  b:
    identity: { command: x }
    map: filesytem
  c:
    identity: { command: x }
roles: {}
`;
    expect(errorsOf(text).map((e) => `${e.line}:${e.column} ${e.path}: ${e.message.split(';')[0]}`)).toEqual([
      '5:19 servers.a.tools.put: unknown scope "storage:wrte"',
      '8:10 servers.b.map: unknown map "filesytem"',
      '9:3 servers.c: missing required key "class" (a server without a shipped `map` must name its scope class)',
    ]);
  });

  it('identity needs exactly one of url or command', () => {
    const text = `servers:
  a:
    identity: {}
    class: storage
  b:
    identity: { url: "https://x", command: y }
    class: storage
  c:
    identity: { url: "not a url" }
    class: storage
roles: {}
`;
    expect(errorsOf(text).map((e) => e.path)).toEqual(['servers.a.identity', 'servers.b.identity', 'servers.c.identity.url']);
  });

  it('built-in presets cannot be redefined, deleted or shadowed', () => {
    const redefine = errorsOf(`${MINIMAL}  mcp.read_only:\n    allowed_servers: [fs]\n`);
    expect(redefine[0]).toMatchObject({ line: 8, column: 3, path: 'roles["mcp.read_only"]' });
    expect(redefine[0]?.message).toMatch(/built-in preset: it cannot be redefined or deleted/);

    const reserved = errorsOf(`${MINIMAL}  mcp.custom: {}\n`);
    expect(reserved[0]?.message).toMatch(/reserved/);

    const deleted = errorsOf(`${MINIMAL}presets:\n  mcp.empty: null\n`);
    expect(deleted[0]).toMatchObject({ line: 8, column: 1, path: 'presets' });
    expect(deleted[0]?.message).toMatch(/cannot be redefined or deleted/);

    const unknownPreset = errorsOf(MINIMAL.replace('    allowed_servers: [fs]\n', '    presets: [mcp.everything]\n'));
    expect(unknownPreset[0]?.path).toBe('roles.code_agent.presets[0]');
  });

  it('mcp.empty means no server: combined with another preset or with allowed_servers it is an error at the role', () => {
    const withServers = errorsOf(MINIMAL.replace('    allowed_servers: [fs]\n', '    presets: [mcp.empty]\n    allowed_servers: [fs]\n'));
    expect(withServers.map(formatIssue)).toEqual([
      'p.yaml:6:3 roles.code_agent: mcp.empty means "no server" and cannot be combined with allowed_servers; drop mcp.empty to let the role use servers, or keep it alone to let it use none',
    ]);
    const perEnvironment = errorsOf(MINIMAL.replace('    allowed_servers: [fs]\n', '    presets: [mcp.empty]\n    allowed_servers: { staging: [fs] }\n'));
    expect(perEnvironment.map((e) => `${e.line}:${e.column} ${e.path}`)).toEqual(['6:3 roles.code_agent']);
    const withPreset = errorsOf(MINIMAL.replace('    allowed_servers: [fs]\n', '    presets: [mcp.read_only, mcp.empty]\n'));
    expect(withPreset[0]?.message).toMatch(/^mcp.empty means "no server" and cannot be combined with preset mcp.read_only;/);
    const fullInternal = errorsOf(MINIMAL.replace('    allowed_servers: [fs]\n', '    presets: [mcp.empty, mcp.full_internal]\n'));
    expect(fullInternal[0]?.message).toMatch(/cannot be combined with preset mcp.full_internal;/);
  });

  it('mcp.empty alone (or with forbidden servers only) is valid and the role may use no server', () => {
    const p = compiled(MINIMAL.replace('    allowed_servers: [fs]\n', '    presets: [mcp.empty]\n    forbidden_servers: [fs]\n'));
    const role = p.roles.get('code_agent');
    expect(role && Object.values(role.allowed).map((s) => s.size)).toEqual([0, 0, 0]);
    expect(p.warnings).toEqual([]);
  });

  it('per-server limits and custom prohibited rules must name known servers', () => {
    const errors = errorsOf(`${MINIMAL}rate_limits:\n  per_server:\n    nope: { max_calls_per_session: 5 }\nprohibited_capabilities:\n  - { name: x, servers: [zzz] }\n  - { name: y }\n`);
    expect(errors.map((e) => `${e.line}:${e.column} ${e.path}`)).toEqual(['10:5 rate_limits.per_server.nope', '12:26 prohibited_capabilities[0].servers[0]', '13:5 prohibited_capabilities[1]']);
  });

  it('warns (without failing) about an allowed server that is prohibited', () => {
    const result = parsePolicy(MINIMAL.replace('    map: filesystem\n', '    map: filesystem\n    prohibited: true\n'), 'p.yaml');
    expect(result.ok).toBe(true);
    expect(result.issues.map((i) => i.severity)).toEqual(['warning']);
    expect(result.issues[0]?.message).toMatch(/prohibited/);
  });
});

describe('policy file: defaults', () => {
  it('a minimal file gets every documented default', () => {
    const p = compiled(MINIMAL);
    expect(p.limits).toEqual({
      session: { maxCalls: 200, maxCallsPerMinute: 30 },
      pauseAtPercent: 80,
      // No session caps: SESSION_MAX_OPEN_PER_TOKEN and SESSION_MAX_NEW_PER_HOUR apply.
      token: { maxCallsPerMinute: 120, maxCallsPerDay: 5000 },
    });
    expect(p.cascade).toEqual({ threshold: 3, windowCalls: 5 });
    expect(p.largeResultBytes).toBe(1048576);
    expect([...p.haltTokenOn]).toEqual([...DEFAULT_HALT_TOKEN_ON]);
    expect(p.haltTokenOn.size).toBe(6);
    expect([...p.environments.development.forbiddenPatterns]).toEqual(['prod', 'production', 'live', 'main']);
    expect(p.environments.development.humanGrantRequired).toBe(false);
    expect(p.environments.production.humanGrantRequired).toBe(true);
    expect(p.prohibited).toEqual([]);
    const fs = p.servers.get('fs');
    expect(fs?.serverClass).toBe('storage');
    expect(fs?.trustAnnotations).toBe(false);
    expect(fs?.prohibited).toBe(false);
    expect(p.roles.get('code_agent')?.largeResults).toBe(false);
  });

  it('null disables a limit, a number replaces the default', () => {
    const p = compiled(`${MINIMAL}rate_limits:\n  global: { max_calls_per_session: null, max_calls_per_minute: 7 }\n`);
    expect(p.limits.session).toEqual({ maxCalls: null, maxCallsPerMinute: 7 });
  });
});

describe('policy file: seed 001 kill switches by class and map (DESIGN.md §5)', () => {
  const SERVERS = `servers:
  sqlite: { identity: { command: uvx, args: [mcp-server-sqlite] }, map: sqlite }
  warehouse: { identity: { url: "https://wh.example.com/mcp" }, class: db }
  runner: { identity: { command: ./bin/runner }, class: exec }
  infra: { identity: { url: "https://infra.example.com/mcp" }, class: cloud }
  gh: { identity: { command: gh-mcp }, map: github }
  github: { identity: { url: "https://api.github.com/mcp" }, class: vcs }
  files2: { identity: { command: ./bin/files2 }, map: filesystem }
  filesystem: { identity: { command: npx }, map: filesystem }
  memory: { identity: { command: npx }, map: memory }
roles: {}
`;
  const flagsOf = (text: string, server: string) => compiled(text).servers.get(server)?.flags;

  it('a db server (by class or by its map) answers to mcp.database.write for writes and deletes', () => {
    expect(flagsOf(SERVERS, 'sqlite')).toEqual({ read: [], write: ['mcp.database.write'], delete: ['mcp.database.write'] });
    expect(flagsOf(SERVERS, 'warehouse')).toEqual({ read: [], write: ['mcp.database.write'], delete: ['mcp.database.write'] });
  });

  it('an exec server answers to mcp.shell.execute, a cloud server to mcp.cloud.infra, for every capability', () => {
    expect(flagsOf(SERVERS, 'runner')).toEqual({ read: ['mcp.shell.execute'], write: ['mcp.shell.execute'], delete: ['mcp.shell.execute'] });
    expect(flagsOf(SERVERS, 'infra')).toEqual({ read: ['mcp.cloud.infra'], write: ['mcp.cloud.infra'], delete: ['mcp.cloud.infra'] });
  });

  it('the github map (or a server named github without a map) answers to mcp.github.api for every capability', () => {
    expect(flagsOf(SERVERS, 'gh')).toEqual({ read: ['mcp.github.api'], write: ['mcp.github.api'], delete: ['mcp.github.api'] });
    expect(flagsOf(SERVERS, 'github')).toEqual({ read: ['mcp.github.api'], write: ['mcp.github.api'], delete: ['mcp.github.api'] });
  });

  it('the filesystem map answers to mcp.filesystem.write for writes and deletes, whatever the server is named', () => {
    expect(flagsOf(SERVERS, 'files2')).toEqual({ read: [], write: ['mcp.filesystem.write'], delete: ['mcp.filesystem.write'] });
    // Its own per-server write flag is checked anyway: not repeated as an extra flag.
    expect(flagsOf(SERVERS, 'filesystem')).toEqual({ read: [], write: [], delete: ['mcp.filesystem.write'] });
    expect(flagsOf(SERVERS, 'memory')).toEqual({ read: [], write: [], delete: [] });
  });

  it('the defaults are what a call resolves to and what the flags sync creates', () => {
    const p = compiled(SERVERS);
    const write = resolveCall(p, { server: 'sqlite', tool: 'write_query', arguments: {}, session_id: 's' });
    expect('call' in write && write.call.extraFlags).toEqual(['mcp.database.write']);
    const deploy = resolveCall(p, { server: 'infra', tool: 'delete_service', arguments: {}, session_id: 's' });
    expect('call' in deploy && deploy.call.extraFlags).toEqual(['mcp.cloud.infra']);
    expect(policyFlagNames(p).extraFlags).toEqual(['mcp.cloud.infra', 'mcp.database.write', 'mcp.filesystem.write', 'mcp.github.api', 'mcp.shell.execute']);
    expect(p.warnings).toEqual([]);
  });

  it('an explicit `flags:` list replaces the default of that capability only; leaving a seed flag out is a warning naming it', () => {
    const text = SERVERS.replace('class: db }', 'class: db, flags: { write: [], delete: [mcp.database.write, mcp.wh.freeze] } }');
    const result = parsePolicy(text, 'p.yaml');
    if (!result.ok) throw new Error(result.issues.map(formatIssue).join('\n'));
    expect(result.policy.servers.get('warehouse')?.flags).toEqual({ read: [], write: [], delete: ['mcp.database.write', 'mcp.wh.freeze'] });
    expect(result.issues.map(formatIssue)).toEqual([
      "p.yaml:3:92 warning: servers.warehouse.flags.write: does not list mcp.database.write, which this server's writes answer to by default (class db): turning mcp.database.write off in Unleash will not stop them; add it to the list, or leave `write` out to get the default",
    ]);
    // A list that keeps the seed flag, or names a capability without one, warns about nothing.
    const kept = parsePolicy(SERVERS.replace('map: github }', 'map: github, flags: { read: [mcp.github.api, mcp.gh.extra] } }').replace('map: memory }', 'map: memory, flags: { write: [] } }'), 'p.yaml');
    expect(kept.issues).toEqual([]);
    expect(kept.ok && kept.policy.servers.get('gh')?.flags.read).toEqual(['mcp.github.api', 'mcp.gh.extra']);
  });
});

describe('shipped tool maps', () => {
  it('every mapped tool needs a scope of the scope table', () => {
    for (const map of SHIPPED_MAPS.values()) {
      for (const [tool, scope] of Object.entries(map.tools)) expect(SCOPE_BY_NAME.has(scope), `${map.name}/${tool} → ${scope}`).toBe(true);
      expect(SERVER_CLASSES).toContain(map.serverClass);
    }
  });

  it('covers the eight reference servers', () => {
    expect([...SHIPPED_MAPS.keys()].sort()).toEqual(['everything', 'fetch', 'filesystem', 'git', 'github', 'memory', 'postgres', 'sqlite']);
  });

  it('delete tools need delete scopes; moves and reads do not', () => {
    const memory = SHIPPED_MAPS.get('memory')?.tools ?? {};
    for (const tool of ['delete_entities', 'delete_observations', 'delete_relations']) expect(memory[tool]).toBe('storage:delete');
    const fs = SHIPPED_MAPS.get('filesystem')?.tools ?? {};
    expect(fs['move_file']).toBe('storage:write');
    expect(fs['write_file']).toBe('storage:write');
    expect(fs['read_text_file']).toBe('storage:read');
    expect(SHIPPED_MAPS.get('postgres')?.tools['query']).toBe('db:select');
    expect(SHIPPED_MAPS.get('everything')?.tools['get-env']).toBe('secrets:read');
  });

  it('every server class has a read and a write scope for unmapped tools', () => {
    for (const c of SERVER_CLASSES) {
      expect(CLASS_SCOPES[c], c).toBeDefined();
      expect(CLASS_SCOPES[c]?.read.startsWith(`${c}:`)).toBe(true);
      expect(CLASS_SCOPES[c]?.write.startsWith(`${c}:`)).toBe(true);
    }
  });
});
