import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { afterAll, describe, expect, it } from 'vitest';
import { killswitch } from '../helpers/cli.js';

// The installed command, as CI and a pre-session hook run it: `node bin/killswitch.js scan|env-gate`.

const BIN = resolve('bin/killswitch.js');
const FIXTURES = resolve('test/fixtures/scan');
const POLICY = join(FIXTURES, 'policy.yaml');
const HOME = mkdtempSync(join(tmpdir(), 'ks-scan-cli-'));
afterAll(() => rmSync(HOME, { recursive: true, force: true }));

const SECRETS = ['Sup3rSecretPassw0rd', 'ghp_FakeTokenForKillswitchScanTests000000', 'wk-live-8d7f6e5d4c3b2a1900', 'crm_9f8e7d6c5b4a39281716', 'stranger-key-0123456789abcdef'];

const cli = (args: string[], env: Record<string, string> = {}) => killswitch(args, { cwd: FIXTURES, env: { HOME, ...env }, timeoutMs: 60_000 });

const ajv = new Ajv({ allErrors: true, strict: true });
addFormats.default(ajv);
const validate = ajv.compile(JSON.parse(readFileSync('docs/scan-output.schema.json', 'utf8')) as object);

describe('killswitch scan and env-gate as child processes', () => {
  it('scan: exit 1 on findings, 0 on a clean config, 2 on bad input; JSON valid; no credential in any format', async () => {
    const [json, table, report, clean, bad] = await Promise.all([
      cli(['scan', 'risky', '--policy', POLICY, '--json']),
      cli(['scan', 'risky', '--policy', POLICY]),
      cli(['scan', 'risky', '--policy', POLICY, '--report', 'md', '--fail-on', 'none']),
      cli(['scan', 'clean', '--policy', POLICY, '--fail-on', 'low']),
      cli(['scan', 'bad/trailing-comma.mcp.txt', '--no-policy']),
    ]);
    expect(json.code).toBe(1);
    const output = JSON.parse(json.stdout) as { summary: { exit_code: number }; findings: { type: string }[] };
    expect(validate(output)).toBe(true);
    expect(new Set(output.findings.map((f) => f.type))).toEqual(new Set(['shell_execution', 'filesystem_root', 'production_database', 'plaintext_credential', 'unapproved_server']));

    expect(table.code).toBe(1);
    expect(table.stdout).toContain('SERVER');
    expect(table.stdout).toContain('CRITICAL  shell_execution');
    expect(report.code).toBe(0);
    expect(report.stdout).toContain('## MCP Security Report - ');
    for (const r of [json, table, report]) for (const s of SECRETS) expect(r.stdout + r.stderr).not.toContain(s);

    expect(clean.code).toBe(0);
    expect(clean.stdout).toContain('Findings: none');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('bad/trailing-comma.mcp.txt:5:34: invalid JSON');
  });

  it('scan rejects an unknown --fail-on value', async () => {
    const res = await cli(['scan', 'clean', '--fail-on', 'severe']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('low, medium, high, critical, none');
  });

  it('env-gate reads MCP_ENV: passes in development, fails in staging, exit 2 on a bad MCP_ENV', async () => {
    const [dev, staging, conflicts, badEnv] = await Promise.all([
      cli(['env-gate', '--policy', POLICY, '--config', 'gate/development-ok.json']),
      cli(['env-gate', '--policy', POLICY, '--config', 'gate/development-ok.json'], { MCP_ENV: 'staging' }),
      cli(['env-gate', '--policy', POLICY, '--config', 'gate/conflicts.json']),
      cli(['env-gate', '--policy', POLICY, '--config', 'gate/development-ok.json'], { MCP_ENV: 'qa' }),
    ]);
    expect(dev.code).toBe(0);
    expect(dev.stdout).toMatch(/^MCP environment gate passed: environment=development, servers=\[time, github\], timestamp=\d{4}-\d{2}-\d{2}T[\d:.]+Z\n$/);
    expect(staging.code).toBe(1);
    expect(staging.stderr).toContain('environment=staging');
    expect(conflicts.code).toBe(1);
    for (const s of SECRETS) expect(conflicts.stdout + conflicts.stderr).not.toContain(s);
    expect(badEnv.code).toBe(2);
    expect(badEnv.stderr).toContain('MCP_ENV="qa" is invalid');
  });

  it('the documented gateway-only client config: scan and env-gate check the gateway\'s upstreams, not the gateway', async () => {
    const dir = join(HOME, 'gateway-only');
    mkdirSync(dir);
    mkdirSync(join(HOME, '.config', 'killswitch'), { recursive: true });
    const upstreams = { time: { command: 'uvx', args: ['mcp-server-time'] }, filesystem: { command: 'cmd', args: ['/c', 'npx', '-y', '@modelcontextprotocol/server-filesystem', '/tmp/ks-demo'] } };
    writeFileSync(join(HOME, '.config', 'killswitch', 'gateway.json'), JSON.stringify({ mcpServers: upstreams, killswitch: { url: 'http://127.0.0.1:8080' } }, null, 2));
    const entry = { command: 'node', args: [BIN, 'gateway', '--config', '~/.config/killswitch/gateway.json'], env: { KILLSWITCH_URL: 'http://127.0.0.1:8080' } };
    writeFileSync(join(dir, 'claude_desktop_config.json'), JSON.stringify({ mcpServers: { killswitch: entry } }, null, 2));
    const [scan, gate] = await Promise.all([
      cli(['scan', join(dir, 'claude_desktop_config.json'), '--policy', POLICY]),
      cli(['env-gate', '--policy', POLICY, '--config', join(dir, 'claude_desktop_config.json')]),
    ]);
    expect(scan.code).toBe(1);
    expect(scan.stdout).not.toMatch(/unapproved_server\s+\S+\s+killswitch:/);
    expect(scan.stdout).toMatch(/CRITICAL\s+shell_execution\s+\S+\/\.config\/killswitch\/gateway\.json:\d+:\d+\s+filesystem: /);
    expect(scan.stdout).toContain('drop `cmd /c`: the gateway starts npx itself');
    expect(gate.code).toBe(1);
    expect(gate.stderr).toContain('servers=[time, filesystem]');
    expect(gate.stderr).not.toContain(' killswitch: ');
    expect(gate.stderr).toMatch(/\.config\/killswitch\/gateway\.json:\d+:\d+ filesystem: runs "cmd \/c npx/);
  });
});
