import { describe, expect, it } from 'vitest';
import type { DecisionInput, Denial } from '../../src/decisions/types.js';
import { type CompiledPolicy, checkPolicy, formatIssue, parsePolicy, resolveCall, scopeCheck } from '../../src/policy/index.js';
import type { AgentPrincipal } from '../../src/tokens/authenticator.js';
import type { TokenType } from '../../src/tokens/format.js';
import { DEFAULT_SCOPES } from '../../src/tokens/scopes.js';

// Seed 002's required restrictions as policy rules: `servers.<name>.network` (HTTPS only, domain
// allowlist) and `servers.<name>.paths` (allowed directories, no `..` out of them).

const POLICY = `servers:
  fetch:
    identity: { command: uvx, args: [mcp-server-fetch] }
    map: fetch
    network: { https_only: true, allowed_domains: [Example.COM, "bücher.de", intranet.] }
  plain:
    identity: { command: uvx, args: [mcp-server-fetch] }
    map: fetch
    network: { https_only: true }
  open:
    identity: { command: uvx, args: [mcp-server-fetch] }
    map: fetch
  filesystem:
    identity: { command: npx, args: ["-y", "@modelcontextprotocol/server-filesystem", /tmp/ks-demo] }
    map: filesystem
    paths: { allowed: [/tmp/ks-demo, /srv/data/, /srv/./data] }
roles:
  code_agent:
    allowed_servers: [fetch, plain, open, filesystem]
`;

function compiled(text: string): CompiledPolicy {
  const result = parsePolicy(text, 'p.yaml');
  if (!result.ok) throw new Error(result.issues.map(formatIssue).join('\n'));
  return result.policy;
}

const policy = compiled(POLICY);

function agent(tokenType: TokenType): AgentPrincipal {
  return {
    kind: 'agent',
    id: 'tok-1',
    tokenType,
    scopes: [...DEFAULT_SCOPES[tokenType], 'net:read'],
    role: 'code_agent',
    projectId: 'demo',
    environment: 'development',
    displayPrefix: `mcp_${tokenType}_abcd`,
    expiresAt: null,
  };
}

/** Steps 3, 5 and 6 in pipeline order: the first denial wins. */
function decide(who: AgentPrincipal, i: Partial<DecisionInput> & { server: string; tool: string }): Denial | 'allow' {
  const input: DecisionInput = { arguments: {}, session_id: 's-1', ...i };
  const r = resolveCall(policy, input);
  if ('denial' in r) return r.denial;
  return checkPolicy(policy, who, r.call, input, { production: false }) ?? scopeCheck(who, r.call) ?? 'allow';
}

const fetchUrl = (url: unknown, server = 'fetch', extra: Partial<DecisionInput> = {}) => decide(agent('ro'), { server, tool: 'fetch', arguments: { url }, ...extra });
const write = (args: Record<string, unknown>, extra: Partial<DecisionInput> = {}) => decide(agent('rw'), { server: 'filesystem', tool: 'write_file', arguments: args, ...extra });

/** A refusal of the policy, not a kill-switch trigger. */
function refused(d: Denial | 'allow'): Denial {
  expect(d).toMatchObject({ code: 'PERMISSION_DENIED' });
  expect((d as Denial).halt).toBeUndefined();
  return d as Denial;
}

describe('servers.<name>.network: https_only', () => {
  it('a read-only token fetching http://evil.example.com/x → PERMISSION_DENIED naming the scheme, the host and the rule, no halt', () => {
    const d = refused(fetchUrl('http://evil.example.com/x', 'plain'));
    expect(d.message).toBe('plain/fetch: argument url is a http:// URL (host evil.example.com), and servers.plain.network.https_only allows https:// URLs only');
  });

  it('https is allowed; ws and ftp are not https either; a server without the rule is untouched', () => {
    expect(fetchUrl('https://evil.example.com/x', 'plain')).toBe('allow');
    expect(refused(fetchUrl('ws://example.com/', 'plain')).message).toContain('a ws:// URL');
    expect(refused(fetchUrl('FTP://example.com/', 'plain')).message).toContain('a ftp:// URL');
    expect(fetchUrl('http://evil.example.com/x', 'open')).toBe('allow');
    expect(fetchUrl('example.com/x', 'open')).toBe('allow');
  });

  it('every URL the call carries counts: resources, and whole URL values anywhere in the arguments; free text does not', () => {
    expect(refused(fetchUrl('https://example.com/', 'plain', { resources: ['https://example.com/', 'http://example.com/'] })).message).toContain('resources[1] is a http:// URL');
    const nested = decide(agent('ro'), { server: 'plain', tool: 'fetch', arguments: { url: 'https://example.com/', headers: [{ referer: 'http://tracker.example.net/' }] } });
    expect(refused(nested).message).toContain('argument referer is a http:// URL (host tracker.example.net)');
    expect(decide(agent('ro'), { server: 'plain', tool: 'fetch', arguments: { url: 'https://example.com/', note: 'see http://example.org/ for more' } })).toBe('allow');
  });

  it('fails closed on a URL that cannot be read: malformed, or no URL at all under url', () => {
    for (const url of ['http://exa mple.com/x', 'https://[::1/x', 'example.com/x', '', 'localhost:8080/x']) {
      expect(refused(fetchUrl(url, 'plain')).message, url).toMatch(/^plain\/fetch: argument url cannot be read as an http\(s\) URL, and servers\.plain\.network restricts/);
    }
    expect(refused(fetchUrl(['https://example.com/', 'nope'], 'plain')).message).toContain('cannot be read');
  });
});

describe('servers.<name>.network: allowed_domains', () => {
  it('a listed domain and its subdomains are allowed, in any case and with a trailing dot', () => {
    for (const url of ['https://example.com/', 'https://api.example.com/x', 'https://A.B.EXAMPLE.com./', 'https://intranet/', 'https://docs.intranet./']) {
      expect(fetchUrl(url), url).toBe('allow');
    }
  });

  it('another host is refused, naming it and the list; a name that only ends like a domain is not a subdomain', () => {
    expect(refused(fetchUrl('https://evil.com/')).message).toBe(
      'fetch/fetch: argument url reaches host evil.com, which is not in servers.fetch.network.allowed_domains (example.com, xn--bcher-kva.de, intranet; each allows its subdomains)',
    );
    expect(refused(fetchUrl('https://notexample.com/')).message).toContain('host notexample.com');
    expect(refused(fetchUrl('https://example.com.evil.net/')).message).toContain('host example.com.evil.net');
    expect(refused(fetchUrl('https://93.184.216.34/')).message).toContain('host 93.184.216.34');
  });

  it('IDNs compare as WHATWG URL writes them: bücher.de and xn--bcher-kva.de are one domain', () => {
    expect(fetchUrl('https://bücher.de/')).toBe('allow');
    expect(fetchUrl('https://www.xn--bcher-kva.de/')).toBe('allow');
    expect(fetchUrl('https://ｅｘａｍｐｌｅ.com/')).toBe('allow');
  });

  it('every host a client may connect to must be allowed: an ambiguous authority counts each reading', () => {
    expect(refused(fetchUrl('https://example.com\\@evil.com/')).message).toContain('host evil.com');
    expect(refused(fetchUrl('https://example.com/', 'fetch', { resources: ['https://evil.com/'] })).message).toContain('resources[0] reaches host evil.com');
  });

  it('https_only is checked before the domain: http on an allowed domain is refused for the scheme', () => {
    expect(refused(fetchUrl('http://example.com/')).message).toContain('https_only');
  });
});

describe('servers.<name>.paths', () => {
  it('paths inside an allowed directory (or the directory itself) are allowed', () => {
    expect(write({ path: '/tmp/ks-demo/a.md' })).toBe('allow');
    expect(write({ path: '/tmp/ks-demo' })).toBe('allow');
    expect(write({ path: '/srv/data/x/../y.md' })).toBe('allow');
    expect(write({ path: '/tmp/ks-demo/a.md' }, { resources: ['file:///tmp/ks-demo/a.md', 'mcp://filesystem'] })).toBe('allow');
  });

  it('G4: a traversal out of the directory → PERMISSION_DENIED naming the resolved path and the allowed directories, no halt', () => {
    const d = refused(write({ path: '/tmp/ks-demo/../../etc/cron.d/x' }, { resources: ['file:///etc/cron.d/x'] }));
    expect(d.message).toBe(
      'filesystem/write_file: path /etc/cron.d/x (argument path, written "/tmp/ks-demo/../../etc/cron.d/x") is outside servers.filesystem.paths.allowed (/tmp/ks-demo, /srv/data)',
    );
    expect(refused(write({ path: '/tmp/ks-demo/a.md' }, { resources: ['file:///etc/cron.d/x'] })).message).toContain('path /etc/cron.d/x (resources[0], written "file:///etc/cron.d/x")');
    expect(refused(write({ path: '/tmp/ks-demo/a\\..\\..\\..\\etc\\x' })).message).toContain('path /etc/x');
  });

  it('a sibling directory that only starts like an allowed one is outside', () => {
    expect(refused(write({ path: '/tmp/ks-demo-evil/x' })).message).toContain('path /tmp/ks-demo-evil/x (argument path)');
    expect(refused(write({ path: '/srv/database' })).message).toContain('/srv/database');
  });

  it('every path argument of the map counts: paths[], source, destination', () => {
    const read = decide(agent('ro'), { server: 'filesystem', tool: 'read_multiple_files', arguments: { paths: ['/tmp/ks-demo/a', '/etc/passwd'] } });
    expect(refused(read).message).toContain('path /etc/passwd (argument paths)');
    const move = decide(agent('rw'), { server: 'filesystem', tool: 'move_file', arguments: { source: '/tmp/ks-demo/a', destination: '/root/.ssh/authorized_keys' } });
    expect(refused(move).message).toContain('(argument destination)');
  });

  it('fails closed on a path it cannot place: relative, ~, NUL, not text', () => {
    expect(refused(write({ path: 'docs/a.md' })).message).toBe(
      'filesystem/write_file: path "docs/a.md" (argument path) is relative: what it is relative to is the upstream\'s choice, so it cannot be checked here; servers.filesystem.paths.allowed (/tmp/ks-demo, /srv/data) needs an absolute path inside one of them',
    );
    expect(refused(write({ path: '~/.bashrc' })).message).toContain('starts with ~');
    expect(refused(write({ path: '/tmp/ks-demo/a\u0000/../../../etc/x' })).message).toContain('holds a NUL character');
    expect(refused(write({ path: 42 })).message).toContain('argument path is not a path');
    expect(refused(write({ path: ['/tmp/ks-demo/a', 7] })).message).toContain('argument path is not a path');
  });

  it('file: URLs are read as WHATWG and Node read them: encoded dot segments resolve, another host or an encoded / is refused', () => {
    expect(refused(write({ path: '/tmp/ks-demo/a' }, { resources: ['file:///tmp/ks-demo/%2e%2e/%2E%2E/etc/x'] })).message).toContain('path /etc/x');
    expect(refused(write({ path: '/tmp/ks-demo/a' }, { resources: ['file://evil.example.com/tmp/ks-demo/a'] })).message).toContain('is not a file: URL of this machine');
    expect(refused(write({ path: '/tmp/ks-demo/a' }, { resources: ['file:///tmp/ks-demo%2F..%2F..%2Fetc'] })).message).toContain('is not a file: URL of this machine');
    expect(refused(write({ path: '/tmp/ks-demo/a' }, { resources: ['/etc/x'] })).message).toContain('path /etc/x (resources[0])');
  });

  it('resources/read names the file by its uri', () => {
    const d = decide(agent('ro'), { server: 'filesystem', tool: 'resources/read', arguments: { uri: 'file:///etc/shadow' } });
    expect(refused(d).message).toContain('path /etc/shadow (argument uri, written "file:///etc/shadow") is outside');
    expect(decide(agent('ro'), { server: 'filesystem', tool: 'resources/read', arguments: { uri: 'file:///tmp/ks-demo/a.md' } })).toBe('allow');
  });

  it('a write by an mcp_ro_ token still halts (WRITE_IN_READ_SESSION): the path refusal does not hide the trigger', () => {
    expect(decide(agent('ro'), { server: 'filesystem', tool: 'write_file', arguments: { path: '/etc/x' } })).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'WRITE_IN_READ_SESSION' });
  });

  it('a path outside is refused by the policy step also when the token lacks the scope without a trigger: never sent on to ask for a human grant', () => {
    // A production rw token issued without storage:write: its scope refusal fires no trigger, so the path
    // refusal stands; it must not fall through to HUMAN_AUTHORIZATION_REQUIRED (a grant request for a
    // call that can never run).
    const who = { ...agent('rw'), environment: 'production' as const, scopes: ['storage:read'] };
    expect(decide(who, { server: 'filesystem', tool: 'write_file', arguments: { path: '/etc/x' } })).toMatchObject({ code: 'PERMISSION_DENIED' });
    // Inside the allowed directories, the same call asks for the grant first (the policy step), as any production call.
    expect(decide(who, { server: 'filesystem', tool: 'write_file', arguments: { path: '/tmp/ks-demo/a.md' } })).toMatchObject({ code: 'HUMAN_AUTHORIZATION_REQUIRED' });
  });
});

describe('compiling network and paths', () => {
  const BASE = `servers:
  web:
    identity: { command: uvx }
    map: fetch
    network: NETWORK
  files:
    identity: { command: npx }
    map: filesystem
    paths: PATHS
roles: {}
`;
  const text = (network: string, paths: string) => BASE.replace('NETWORK', network).replace('PATHS', paths);
  const errorsOf = (t: string) => {
    const result = parsePolicy(t, 'p.yaml');
    expect(result.ok).toBe(false);
    return result.issues.filter((i) => i.severity === 'error').map((e) => `${e.path}: ${e.message}`);
  };

  it('domains: IDNs in ASCII, lower case, no trailing dot, duplicates dropped; directories resolved, no trailing /', () => {
    const p = compiled(text('{ https_only: true, allowed_domains: ["Bücher.DE.", api.example.com, API.example.com] }', '{ allowed: [/srv/a/, /srv/b/../c, /] }'));
    expect(p.servers.get('web')?.network).toEqual({ httpsOnly: true, allowedDomains: ['xn--bcher-kva.de', 'api.example.com'] });
    expect(p.servers.get('files')?.paths).toMatchObject({ allowed: ['/srv/a', '/srv/c', '/'], arguments: ['path', 'paths', 'source', 'destination'] });
    expect(p.warnings).toEqual([]);
    expect(p.servers.get('web')?.paths).toBeUndefined();
    expect(compiled(text('{ allowed_domains: [example.com] }', '{ allowed: [/srv] }')).servers.get('web')?.network).toEqual({ httpsOnly: false, allowedDomains: ['example.com'] });
  });

  it('domains must be host names: no wildcard, URL, port, path, IP address or space', () => {
    expect(errorsOf(text('{ allowed_domains: ["*.example.com", "https://example.com", "example.com:443", "example.com/x", "10.0.0.1", "exa mple.com", "a..b"] }', '{ allowed: [/srv] }'))).toEqual([
      'servers.web.network.allowed_domains[0]: "*.example.com" is not a domain: write "example.com": an entry already allows its subdomains',
      'servers.web.network.allowed_domains[1]: "https://example.com" is not a domain: give a host name, not a URL (no scheme, no path)',
      'servers.web.network.allowed_domains[2]: "example.com:443" is not a domain: a host name has no scheme, port, path, user, wildcard or spaces',
      'servers.web.network.allowed_domains[3]: "example.com/x" is not a domain: a host name has no scheme, port, path, user, wildcard or spaces',
      'servers.web.network.allowed_domains[4]: "10.0.0.1" is not a domain: an IP address, not a domain name',
      'servers.web.network.allowed_domains[5]: "exa mple.com" is not a domain: a host name has no scheme, port, path, user, wildcard or spaces',
      'servers.web.network.allowed_domains[6]: "a..b" is not a domain: not a host name',
    ]);
  });

  it('directories must be absolute; empty lists and unknown keys are refused with what to write', () => {
    expect(errorsOf(text('{ https_only: true }', '{ allowed: [srv/data, /ok] }'))).toEqual([
      'servers.files.paths.allowed[0]: invalid value "srv/data": an absolute directory, starting with / (e.g. /srv/data): a relative one would depend on where the server runs',
    ]);
    expect(errorsOf(text('{ https_only: true }', '{ allowed: [] }'))).toEqual([
      'servers.files.paths.allowed: must NOT have fewer than 1 items: a list of one or more absolute directories; to refuse every call to the server, use `prohibited: true`',
    ]);
    expect(errorsOf(text('{ allowed_domains: [] }', '{ allowed: /srv }'))).toEqual([
      'servers.web.network.allowed_domains: must NOT have fewer than 1 items: a list of one or more host names such as example.com (each allows its subdomains); leave the key out to allow any host',
      'servers.files.paths.allowed: must be a list of one or more absolute directories; to refuse every call to the server, use `prohibited: true`',
    ]);
    expect(errorsOf(text('{ https: true }', '{ allowed: [/srv], dirs: [/x] }'))).toEqual([
      'servers.web.network.https: unknown key "https"; expected one of: https_only, allowed_domains',
      'servers.files.paths.dirs: unknown key "dirs"; expected one of: allowed',
    ]);
  });

  it('warns of a rule that checks nothing: an empty network, paths on a server whose map names no path arguments', () => {
    const result = parsePolicy(text('{}', '{ allowed: [/srv] }').replace('    map: filesystem\n', '    class: storage\n'), 'p.yaml');
    expect(result.ok).toBe(true);
    expect(result.issues.map((i) => `${i.severity} ${i.path}: ${i.message}`)).toEqual([
      'warning servers.web.network: restricts nothing: give `https_only: true`, `allowed_domains: [...]` or both',
      "warning servers.files.paths: the server has no shipped map: only the `file:` resources a gateway sends are checked against it, not the call's arguments",
    ]);
  });
});
