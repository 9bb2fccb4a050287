// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${env:NAME} and ${file:/path} are the config syntax under test, not template strings.
import { mkdtempSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GatewayConfigError, parseGatewayConfig } from '../../src/gateway/config.js';
import { type ProhibitedFinding, prohibitedUpstreamConfig, type UpstreamLaunch } from '../../src/gateway/prohibited.js';

const project = mkdtempSync(join(tmpdir(), 'ks-gw-prohibited-'));
const env = { KILLSWITCH_GATEWAY_KEY: 'ksgw_test', TOKEN: 't' };

function launch(p: Partial<UpstreamLaunch>): UpstreamLaunch {
  return { args: [], env: {}, headers: {}, allowedDirectories: [], ...p };
}
function check(p: Partial<UpstreamLaunch>, raw?: Partial<UpstreamLaunch>): ProhibitedFinding[] {
  return prohibitedUpstreamConfig('s', launch(raw ?? p), launch(p));
}
const patterns = (f: ProhibitedFinding[]) => f.map((x) => x.pattern);

describe('prohibited upstream configs (seed 002)', () => {
  it('allows the reference servers on a project directory', () => {
    expect(check({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', project] })).toEqual([]);
    expect(check({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-memory'] })).toEqual([]);
    expect(check({ command: 'node', args: ['/usr/lib/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js', project] })).toEqual([]);
    expect(check({ command: 'uvx', args: ['mcp-server-fetch'] })).toEqual([]);
    expect(check({ command: 'docker', args: ['run', '-i', '--rm', 'mcp/filesystem', '/projects'] })).toEqual([]);
  });

  it('refuses shells and command-execution servers', () => {
    expect(patterns(check({ command: 'bash', args: ['-c', 'npx server'] }))).toContain('shell_execution');
    expect(patterns(check({ command: '/bin/sh', args: ['-c', 'x'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'npx', args: ['-y', 'mcp-shell'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'npx', args: ['-y', '@someone/mcp-server-commands@1.2.0'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'uvx', args: ['mcp-server-shell'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'node', args: ['server.js', '--shell=true'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'node', args: ['server.js'], env: { ALLOW_SHELL: 'shell=true' } }))).toContain('shell_execution');
  });

  it('says how to drop a shell wrapper, without citing the seed', () => {
    const [cmd] = check({ command: 'cmd', args: ['/c', 'npx', '-y', '@modelcontextprotocol/server-filesystem', 'C:/work'] });
    expect(cmd?.pattern).toBe('shell_execution');
    expect(cmd?.message).toBe(
      's: command "cmd" is a shell, and MCP servers that can run any command are refused: drop `cmd /c`: the gateway starts npx itself ("command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "C:/work"])',
    );
    expect(check({ command: 'C:\\Windows\\System32\\cmd.exe', args: ['/c', 'npx', 'x'] })[0]?.message).toContain('drop `C:\\Windows\\System32\\cmd.exe /c`: the gateway starts npx itself');
    expect(check({ command: 'bash', args: ['-c', 'npx -y mcp-server-time'] })[0]?.message).toContain('drop `bash -c`: the gateway starts npx itself ("command": "npx", "args": ["-y", "mcp-server-time"])');
    expect(check({ command: 'env', args: ['sh', '-c', 'uvx mcp-server-time'] })[0]?.message).toContain('launches the shell "sh"');
    expect(check({ command: 'env', args: ['sh', '-c', 'uvx mcp-server-time'] })[0]?.message).toContain('drop `env sh -c`: the gateway starts uvx itself');
    expect(check({ command: 'bash', args: [] })[0]?.message).toContain("start the server's own program instead of a shell");
    for (const f of check({ command: 'cmd', args: ['/c', 'npx', 'x'] })) expect(f.message).not.toContain('seed');
  });

  it('refuses a shell behind a launcher, and interpreters running code written in the config', () => {
    expect(patterns(check({ command: 'env', args: ['bash', '-c', 'npx server'] }))).toContain('shell_execution');
    expect(patterns(check({ command: '/usr/bin/env', args: ['FOO=1', '/bin/sh', '-c', 'x'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'busybox', args: ['sh', '-c', 'x'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'sudo', args: ['-u', 'mcp', 'bash'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'timeout', args: ['60', 'zsh', '-c', 'x'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'node', args: ['-e', "require('child_process').execSync(process.argv[1])"] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'node', args: ['--eval=1'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'python3', args: ['-c', 'import os; os.system("x")'] }))).toContain('shell_execution');
    expect(patterns(check({ command: 'perl', args: ['-e', 'system @ARGV'] }))).toContain('shell_execution');
    // Servers started the usual ways are not refused.
    expect(check({ command: 'env', args: ['NODE_ENV=production', 'npx', '-y', '@modelcontextprotocol/server-memory'] })).toEqual([]);
    expect(check({ command: 'node', args: ['/srv/mcp/server.js', '--port', '3000'] })).toEqual([]);
    expect(check({ command: 'python3', args: ['-m', 'mcp_server_fetch'] })).toEqual([]);
    expect(check({ command: 'uvx', args: ['mcp-server-git', '--repository', '/repo'] })).toEqual([]);
  });

  it('refuses the filesystem root, the home directory and sensitive directories', () => {
    expect(patterns(check({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/'] }))).toEqual(['filesystem_root']);
    expect(patterns(check({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '~'] }))).toEqual(['filesystem_root']);
    expect(patterns(check({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '~/'] }))).toEqual(['filesystem_root']);
    expect(patterns(check({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '$HOME'] }))).toEqual(['filesystem_root']);
    expect(patterns(check({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', homedir()] }))).toEqual(['filesystem_root']);
    expect(patterns(check({ command: 'npx', args: ['x', '/etc'] }))).toEqual(['sensitive_directory']);
    expect(patterns(check({ command: 'npx', args: ['x', '~/.ssh'] }))).toEqual(['sensitive_directory']);
    expect(patterns(check({ command: 'npx', args: ['x', join(homedir(), '.aws', 'sub')] }))).toEqual(['sensitive_directory']);
    expect(patterns(check({ command: 'npx', args: ['x'], allowedDirectories: ['/'] }))).toEqual(['filesystem_root']);
    // Below the home directory is fine.
    expect(check({ command: 'npx', args: ['x', '~/projects/site'] })).toEqual([]);
  });

  it('refuses credentials written in clear, not the same values given as references', () => {
    expect(patterns(check({ command: 'node', env: { GITHUB_PERSONAL_ACCESS_TOKEN: 'ghp_abc' } }))).toEqual(['plaintext_credential']);
    expect(patterns(check({ command: 'node', args: ['postgresql://app:hunter2@db/app'] }))).toEqual(['plaintext_credential']);
    expect(patterns(check({ command: 'node', args: ['--api-key', 'abc123'] }))).toEqual(['plaintext_credential']);
    expect(patterns(check({ command: 'node', args: ['--token=abc123'] }))).toEqual(['plaintext_credential']);
    expect(patterns(check({ url: 'https://h/mcp', headers: { Authorization: 'Bearer abc' } }))).toEqual(['plaintext_credential']);
    expect(patterns(check({ url: 'https://user:pw@h/mcp' }))).toEqual(['plaintext_credential']);
    const resolved = { command: 'node', args: ['--api-key', 'abc123', 'postgresql://app:hunter2@db/app'], env: { GITHUB_PERSONAL_ACCESS_TOKEN: 'ghp_abc' } };
    const raw = { command: 'node', args: ['--api-key', '${env:API_KEY}', '${file:/run/secrets/db-url}'], env: { GITHUB_PERSONAL_ACCESS_TOKEN: '${env:GITHUB_TOKEN}' } };
    expect(check(resolved, raw)).toEqual([]);
    // A connection string without a password is not a credential.
    expect(check({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-postgres', 'postgresql://localhost:5432/dev_db'] })).toEqual([]);
  });

  it('the gateway refuses to start on such a config, naming each finding', () => {
    const file = join(project, 'gateway.json');
    const config = {
      mcpServers: {
        files: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/'] },
        shell: { command: 'npx', args: ['-y', 'mcp-shell'] },
        home: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '${env:HOME}'] },
        gh: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-github'], env: { GITHUB_PERSONAL_ACCESS_TOKEN: 'ghp_in_clear' } },
        ok: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', project] },
      },
    };
    let error: unknown;
    try {
      parseGatewayConfig(JSON.stringify(config), file, { ...env, HOME: homedir() });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(GatewayConfigError);
    const findings = (error as GatewayConfigError).findings.map((f) => `${f.server}:${f.pattern}`);
    expect(findings.sort()).toEqual(['files:filesystem_root', 'gh:plaintext_credential', 'home:filesystem_root', 'shell:shell_execution']);
    expect((error as Error).message).toMatch(/refused \(filesystem_root\): files: "\/" gives the server the filesystem root/);
  });
});
