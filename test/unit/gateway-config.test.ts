// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${env:NAME} and ${file:/path} are the config syntax under test, not template strings.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { declaredScope } from '../../src/gateway/agent-session.js';
import { DEFAULT_LIST_TIMEOUT_MS, DEFAULT_MAX_EXECUTION_SECONDS, DEFAULT_MAX_RESULT_BYTES, GatewayConfigError, loadGatewayConfig, parseGatewayConfig } from '../../src/gateway/config.js';
import { resolveReferences } from '../../src/gateway/references.js';
import { reportedNetworkIdentities } from '../../src/tools/service.js';

const dir = mkdtempSync(join(tmpdir(), 'ks-gw-config-'));
const allowed = join(dir, 'allowed');
mkdirSync(allowed);
const env = { KILLSWITCH_GATEWAY_KEY: 'ksgw_test', GITHUB_TOKEN: 'ghp_secret', DB_URL: 'postgresql://app:pw@db.internal:5432/app' };

function parse(config: unknown, e: Record<string, string | undefined> = env) {
  return parseGatewayConfig(JSON.stringify(config), join(dir, 'gateway.json'), e);
}

function problemsOf(config: unknown, e: Record<string, string | undefined> = env): string[] {
  try {
    parse(config, e);
  } catch (err) {
    if (err instanceof GatewayConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('gateway config: claude_desktop_config.json shape', () => {
  it('reads command/args/env and url upstreams with defaults for the killswitch section', () => {
    const cfg = parse({
      mcpServers: {
        filesystem: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', allowed] },
        remote: { url: 'https://mcp.example.com/mcp', headers: { Authorization: 'Bearer ${env:GITHUB_TOKEN}' } },
      },
    });
    expect(cfg.controlPlane).toEqual({ url: 'http://127.0.0.1:8080', gatewayKey: 'ksgw_test', timeoutMs: 2000 });
    expect(cfg.agentToken).toBeUndefined();
    const fs = cfg.upstreams.find((u) => u.name === 'filesystem');
    expect(fs?.transport).toBe('stdio');
    expect(fs?.allowedDirectories).toEqual([allowed]);
    expect(fs?.limits).toEqual({ maxResultBytes: DEFAULT_MAX_RESULT_BYTES, maxRows: undefined, maxExecutionMs: DEFAULT_MAX_EXECUTION_SECONDS * 1000 });
    expect(fs?.identity).toEqual({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', allowed] });
    const remote = cfg.upstreams.find((u) => u.name === 'remote');
    expect(remote?.transport).toBe('http');
    expect(remote?.headers['Authorization']).toBe('Bearer ghp_secret');
    expect(remote?.identity).toEqual({ url: 'https://mcp.example.com/mcp' });
    expect(cfg.session).toEqual({ readOnly: false, servers: undefined, purpose: '' });
    // Each upstream list within 10 s; one tool report within the control plane's default body limit.
    expect(cfg.listTimeoutMs).toBe(DEFAULT_LIST_TIMEOUT_MS);
    expect(cfg.listTimeoutMs).toBe(10_000);
    expect(cfg.toolReportMaxBytes).toBe(262_144);
  });

  it('listTimeoutMs and toolReportMaxBytes are read, within bounds (toolReportMaxBytes as BODY_LIMIT_BYTES)', () => {
    const cfg = parse({ mcpServers: { a: { command: 'node', args: ['a.js'] } }, killswitch: { listTimeoutMs: 2500, toolReportMaxBytes: 1_048_576 } });
    expect(cfg.listTimeoutMs).toBe(2500);
    expect(cfg.toolReportMaxBytes).toBe(1_048_576);
    expect(() => parse({ mcpServers: { a: { command: 'node' } }, killswitch: { listTimeoutMs: 50, toolReportMaxBytes: 512 } })).toThrow(
      /\/killswitch\/listTimeoutMs must be >= 100[\s\S]*\/killswitch\/toolReportMaxBytes must be >= 1024/,
    );
  });

  it('applies per-server limits over global limits and skips disabled servers', () => {
    const cfg = parse({
      mcpServers: { a: { command: 'node', args: ['a.js'] }, b: { command: 'node', args: ['b.js'] }, off: { command: 'node', disabled: true } },
      killswitch: { limits: { maxResultBytes: 500, maxExecutionSeconds: 2 }, servers: { b: { maxRows: 10, maxExecutionSeconds: 0.5 } }, session: { readOnly: true, servers: ['a'], purpose: 'triage' } },
    });
    expect(cfg.upstreams.map((u) => u.name)).toEqual(['a', 'b']);
    expect(cfg.upstreams[0]?.limits).toEqual({ maxResultBytes: 500, maxRows: undefined, maxExecutionMs: 2000 });
    expect(cfg.upstreams[1]?.limits).toEqual({ maxResultBytes: 500, maxRows: 10, maxExecutionMs: 500 });
    expect(cfg.session).toEqual({ readOnly: true, servers: ['a'], purpose: 'triage' });
  });

  it('a session purpose with a line break or a bidirectional override is refused in the config (the control plane would refuse every session); a client\'s is made spaces', () => {
    expect(problemsOf({ mcpServers: { a: { command: 'node' } }, killswitch: { session: { purpose: 'fix\u202Eexe.txt' } } })).toEqual(['/killswitch/session/purpose must not contain line breaks, control characters or bidirectional marks']);
    expect(problemsOf({ mcpServers: { a: { command: 'node' } }, killswitch: { session: { purpose: 'two\nlines' } } })).toEqual(['/killswitch/session/purpose must not contain line breaks, control characters or bidirectional marks']);
    const config = { readOnly: false, servers: undefined, purpose: 'configured' };
    expect(declaredScope(config, ['a'], { purpose: 'line one\r\nline two \u202Egnp.exe' }).purpose).toBe('line one line two  gnp.exe');
    expect(declaredScope(config, ['a'], { purpose: '\u2066\u2069\n' }).purpose).toBe('configured');
  });

  it('names every problem: both command and url, unknown killswitch keys, bad names, unknown session servers', () => {
    const problems = problemsOf({
      mcpServers: { 'bad name': { command: 'x' }, both: { command: 'x', url: 'http://h/mcp' }, neither: {} },
      killswitch: { colour: 'red', session: { servers: ['nope'] } },
    });
    expect(problems.join('\n')).toContain('colour');
    const again = problemsOf({ mcpServers: { 'bad name': { command: 'x' }, both: { command: 'x', url: 'http://h/mcp' }, neither: {} }, killswitch: { session: { servers: ['nope'] } } });
    expect(again.some((p) => p.includes('mcpServers.bad name'))).toBe(true);
    expect(again.some((p) => p.includes('mcpServers.both') && p.includes('not both'))).toBe(true);
    expect(again.some((p) => p.includes('mcpServers.neither') && p.includes('not neither'))).toBe(true);
    expect(again.some((p) => p.includes('"nope"'))).toBe(true);
  });

  it('refuses to start without a gateway key, and with one written in clear', () => {
    expect(problemsOf({ mcpServers: { a: { command: 'node' } } }, {}).join('\n')).toContain('KILLSWITCH_GATEWAY_KEY');
    const clear = problemsOf({ mcpServers: { a: { command: 'node' } }, killswitch: { gatewayKey: 'ksgw_0123456789abcdefghijklmnop', agentToken: 'mcp_rw_abcdefghijklmnopqrstuvwxyz01' } }, {});
    expect(clear.some((p) => p.startsWith('killswitch.gatewayKey holds a credential in clear'))).toBe(true);
    expect(clear.some((p) => p.startsWith('killswitch.agentToken holds a credential in clear'))).toBe(true);
  });

  it('reads the agent token and control plane URL from the environment by default', () => {
    const cfg = parse({ mcpServers: { a: { command: 'node' } } }, { ...env, KILLSWITCH_AGENT_TOKEN: 'mcp_ro_x', KILLSWITCH_URL: 'http://cp:9000/' });
    expect(cfg.agentToken).toBe('mcp_ro_x');
    expect(cfg.controlPlane.url).toBe('http://cp:9000');
  });

  it('loadGatewayConfig expands a leading ~/ in the config path (no shell does in JSON args), and reads ${file:} next to it', () => {
    const home = mkdtempSync(join(homedir(), '.ks-gw-config-test-'));
    try {
      writeFileSync(join(home, 'gateway-key'), 'ksgw_from_home\n');
      writeFileSync(join(home, 'gateway.json'), JSON.stringify({ mcpServers: { a: { command: 'node' } }, killswitch: { gatewayKey: '${file:gateway-key}' } }));
      const cfg = loadGatewayConfig(`~/${basename(home)}/gateway.json`, {});
      expect(cfg.file).toBe(join(home, 'gateway.json'));
      expect(cfg.controlPlane.gatewayKey).toBe('ksgw_from_home');
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('loadGatewayConfig reports a missing file and non-JSON text', () => {
    expect(() => loadGatewayConfig(join(dir, 'missing.json'), env)).toThrow(/cannot read .*ENOENT/);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{ mcpServers: ');
    expect(() => loadGatewayConfig(bad, env)).toThrow(/is not JSON/);
  });
});

describe('${env:NAME} and ${file:/path} references', () => {
  const secret = join(dir, 'token.txt');
  writeFileSync(secret, 'file-secret\n');

  it('resolves both kinds inside a string, trimming the secret file newline', () => {
    expect(resolveReferences('a ${env:GITHUB_TOKEN} b ${file:' + secret + '} c', 'x', { env, baseDir: dir })).toBe('a ghp_secret b file-secret c');
    expect(resolveReferences('${file:token.txt}', 'x', { env, baseDir: dir })).toBe('file-secret');
  });

  it('fails naming the place and the variable or file, never resolving to an empty string', () => {
    expect(() => resolveReferences('${env:MISSING_VAR}', 'mcpServers.a.env.X', { env, baseDir: dir })).toThrow(/mcpServers\.a\.env\.X: environment variable MISSING_VAR is not set/);
    expect(() => resolveReferences('${env:}', 'w', { env: { '': 'x' }, baseDir: dir })).toThrow(/not a valid environment variable name/);
    expect(() => resolveReferences('${file:/nonexistent/secret}', 'w', { env, baseDir: dir })).toThrow(/cannot read \/nonexistent\/secret .*ENOENT/);
  });

  it('resolves references in command, args, env, url and headers, and keeps secrets out of the reported identity', () => {
    const cfg = parse({
      mcpServers: {
        gh: { command: 'node', args: ['server.js', '--token', '${env:GITHUB_TOKEN}', '${env:DB_URL}', allowed], env: { GITHUB_PERSONAL_ACCESS_TOKEN: '${env:GITHUB_TOKEN}' } },
        remote: { url: 'https://${env:GITHUB_TOKEN}@mcp.example.com/mcp?key=${env:GITHUB_TOKEN}' },
      },
    });
    const gh = cfg.upstreams.find((u) => u.name === 'gh');
    expect(gh?.args).toEqual(['server.js', '--token', 'ghp_secret', 'postgresql://app:pw@db.internal:5432/app', allowed]);
    expect(gh?.env).toEqual({ GITHUB_PERSONAL_ACCESS_TOKEN: 'ghp_secret' });
    // A secret stays a reference; a connection string is reported without its credentials.
    expect(gh?.identity.args).toEqual(['server.js', '--token', '${env:GITHUB_TOKEN}', 'postgresql://db.internal:5432/app', allowed]);
    const remote = cfg.upstreams.find((u) => u.name === 'remote');
    expect(remote?.url).toBe('https://ghp_secret@mcp.example.com/mcp?key=ghp_secret');
    expect(remote?.identity).toEqual({ url: 'https://mcp.example.com/mcp' });
    expect(JSON.stringify(cfg.upstreams.map((u) => u.identity))).not.toContain('ghp_secret');
  });

  it("reports a URL without its userinfo up to the authority's last '@' (a user name holding '@'), query or fragment", () => {
    const cfg = parse({ mcpServers: { remote: { url: 'https://${env:BOT_USER}:${env:GITHUB_TOKEN}@mcp.example.com/sse?key=${env:GITHUB_TOKEN}#k=v' } } }, { ...env, BOT_USER: 'bot@corp' });
    expect(cfg.upstreams[0]?.url).toBe('https://bot@corp:ghp_secret@mcp.example.com/sse?key=ghp_secret#k=v');
    expect(cfg.upstreams[0]?.identity).toEqual({ url: 'https://mcp.example.com/sse' });
  });

  it("keeps the query parameters that say where a connection goes (libpq's host, hostaddr, port, dbname), none other: the control plane reads the host the upstream reaches", () => {
    const cfg = parse(
      {
        mcpServers: {
          pg: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-postgres', '${env:PG_URL}'] },
          upper: { command: 'npx', args: ['${env:PG2_URL}'] },
        },
      },
      { ...env, PG_URL: 'postgresql://app:pw@localhost/app?host=prod-db.internal&sslpassword=s3cret&port=6432&application_name=x#frag', PG2_URL: 'postgresql://localhost/app?sslmode=require&HOST=prod-db-2&password=pw' },
    );
    const pg = cfg.upstreams.find((u) => u.name === 'pg');
    expect(pg?.identity.args?.[2]).toBe('postgresql://localhost/app?host=prod-db.internal&port=6432');
    expect(reportedNetworkIdentities(pg!.identity)).toContain('prod-db.internal');
    expect(cfg.upstreams.find((u) => u.name === 'upper')?.identity.args).toEqual(['postgresql://localhost/app?HOST=prod-db-2']);
    expect(JSON.stringify(cfg.upstreams.map((u) => u.identity))).not.toMatch(/pw|s3cret|sslmode|application_name|frag/);
  });

  it('lists every unresolved reference at once', () => {
    const problems = problemsOf({ mcpServers: { a: { command: 'node', env: { A_TOKEN: '${env:NOPE_1}' } }, b: { url: '${env:NOPE_2}' } } });
    expect(problems.some((p) => p.includes('NOPE_1'))).toBe(true);
    expect(problems.some((p) => p.includes('NOPE_2'))).toBe(true);
  });

  it('expands ~ in allowedDirectories and cwd', () => {
    const cfg = parse({ mcpServers: { a: { command: 'node', cwd: '~/work' } }, killswitch: { servers: { a: { allowedDirectories: ['~/projects/site'] } } } });
    expect(cfg.upstreams[0]?.allowedDirectories).toEqual([join(homedir(), 'projects/site')]);
    expect(cfg.upstreams[0]?.cwd).toBe(join(homedir(), 'work'));
  });
});

describe('examples/gateway', () => {
  it('gateway.json parses, with its credentials read from files under the home directory', () => {
    const home = mkdtempSync(join(tmpdir(), 'ks-gw-home-'));
    mkdirSync(join(home, '.config/killswitch'), { recursive: true });
    writeFileSync(join(home, '.config/killswitch/gateway-key'), 'ksgw_from_file\n');
    writeFileSync(join(home, '.config/killswitch/agent-token'), 'mcp_rw_from_file\n');
    const previous = process.env['HOME'];
    process.env['HOME'] = home;
    try {
      const file = new URL('../../examples/gateway/gateway.json', import.meta.url).pathname;
      const cfg = loadGatewayConfig(file, { KILLSWITCH_URL: 'http://127.0.0.1:8080' });
      expect(cfg.controlPlane.gatewayKey).toBe('ksgw_from_file');
      expect(cfg.agentToken).toBe('mcp_rw_from_file');
      expect(cfg.upstreams.map((u) => u.name)).toEqual(['filesystem', 'memory']);
      expect(cfg.upstreams[0]?.allowedDirectories).toEqual(['/tmp/ks-demo']);
      expect(cfg.upstreams[0]?.limits.maxExecutionMs).toBe(10_000);
      expect(cfg.session).toEqual({ readOnly: false, servers: ['filesystem', 'memory'], purpose: 'Edit the demo docs in /tmp/ks-demo' });
    } finally {
      process.env['HOME'] = previous;
    }
  });

  // A desktop client starts servers in `/`, where `npx killswitch` resolves an npm package of that name
  // (and, with no terminal, installs it without asking): every snippet must name the checkout's script.
  it('claude_desktop_config.json and the docs start the gateway with node and bin/killswitch.js, never npx', () => {
    const example = JSON.parse(readFileSync('examples/gateway/claude_desktop_config.json', 'utf8')) as { mcpServers: Record<string, { command: string; args: string[] }> };
    const entry = example.mcpServers['killswitch'];
    expect(entry?.command).toBe('node');
    expect(entry?.args[0]).toMatch(/^\/.*\/bin\/killswitch\.js$/);
    expect(entry?.args.slice(1, 3)).toEqual(['gateway', '--config']);
    for (const doc of ['docs/gateway.md', 'docs/guide/connecting-clients.md', 'docs/guide/getting-started.md', 'examples/gateway/README.md']) {
      const text = readFileSync(doc, 'utf8');
      expect(text, doc).not.toMatch(/"command":\s*"npx",\s*"args":\s*\[\s*"killswitch"/);
      for (const m of text.matchAll(/"args":\s*\[([^\]]*"gateway"[^\]]*)\]/g)) expect(m[1], doc).toMatch(/^"\/[^"]*\/bin\/killswitch\.js", "gateway"/);
    }
  });
});
