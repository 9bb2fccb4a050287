import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { type EnvGateOptions, envGate, type GateEnvironment } from '../../src/cli/env-gate.js';
import type { Environment } from '../../src/tokens/store.js';

const FIXTURES = resolve('test/fixtures/scan');
const POLICY = join(FIXTURES, 'policy.yaml');
const NOW = new Date('2026-03-01T14:23:01.000Z');

const temps: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ks-gate-'));
  temps.push(dir);
  return dir;
}
afterAll(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

function sink() {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, cb) {
      text += String(chunk);
      cb();
    },
  });
  return { stream, text: () => text };
}

async function gate(opts: EnvGateOptions, mcpEnv: Environment = 'development', over: Partial<GateEnvironment> = {}) {
  const out = sink();
  const err = sink();
  const code = await envGate(
    opts,
    { stdout: out.stream, stderr: err.stream, cwd: FIXTURES, home: tempDir(), platform: 'linux', appData: '', policyFile: POLICY, mcpEnv, ...over },
    NOW,
  );
  return { code, stdout: out.text(), stderr: err.text() };
}

describe('killswitch env-gate (seed 001 pattern 5)', () => {
  it('passes when every configured server is allowed in MCP_ENV, printing the seed\'s line', async () => {
    const res = await gate({ config: ['gate/development-ok.json'] });
    expect(res.code).toBe(0);
    expect(res.stdout).toBe('MCP environment gate passed: environment=development, servers=[time, github], timestamp=2026-03-01T14:23:01.000Z\n');
  });

  it('fails (exit 1) when a server is not allowed in the environment, naming file:line:column and the conflict', async () => {
    const res = await gate({ config: ['gate/development-ok.json'] }, 'staging');
    expect(res.code).toBe(1);
    expect(res.stdout).toBe('');
    expect(res.stderr).toContain('MCP environment gate FAILED: environment=staging, servers=[time, github]');
    expect(res.stderr).toContain('gate/development-ok.json:4:5 github: policy server "github" is not allowed in staging for any role (allowed: time)');
    expect(res.stderr).not.toContain(' time: ');
  });

  it('production allows nothing unless the policy lists it', async () => {
    const res = await gate({ config: ['gate/development-ok.json'] }, 'production');
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('time: policy server "time" is not allowed in production for any role (allowed: none)');
  });

  it('reports unknown, prohibited and look-alike servers, and forbidden patterns on allowed ones; never prints a credential', async () => {
    const res = await gate({ config: ['gate/conflicts.json'] });
    expect(res.code).toBe(1);
    const lines = res.stderr.split('\n').filter((l) => l.startsWith('  '));
    expect(lines).toEqual([
      '  gate/conflicts.json:4:5 reports: reaches "reports.prod.internal", which matches the forbidden pattern "prod" of development',
      '  gate/conflicts.json:5:5 shell: the policy prohibits server "shell" for every role',
      '  gate/conflicts.json:6:5 filesystem: runs "npx -y @modelcontextprotocol/server-filesystem /home/someone", but the policy\'s server "filesystem" runs "npx -y @modelcontextprotocol/server-filesystem /tmp/ks-demo"',
      `  gate/conflicts.json:7:5 stranger: not in the policy (${POLICY}): unknown servers may not run in any environment`,
    ]);
    expect(res.stderr + res.stdout).not.toContain('stranger-key-0123456789abcdef');
  });

  it('--role checks one role\'s allowed servers', async () => {
    const res = await gate({ config: ['gate/development-ok.json'], role: 'docs_agent' });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('github: policy server "github" is not allowed in development for role docs_agent (allowed: time)');
    expect((await gate({ config: ['gate/development-ok.json'], role: 'code_agent' })).code).toBe(0);
    expect((await gate({ config: ['gate/development-ok.json'], role: 'nobody' })).code).toBe(2);
  });

  it('--environment overrides MCP_ENV', async () => {
    const res = await gate({ config: ['gate/development-ok.json'], environment: 'staging' }, 'development');
    expect(res.code).toBe(1);
    expect((await gate({ config: ['gate/development-ok.json'], environment: 'qa' })).code).toBe(2);
  });

  it('without --config, reads the project configs of the working folder and the user-level ones', async () => {
    const cwd = tempDir();
    const home = tempDir();
    writeFileSync(join(cwd, '.mcp.json'), JSON.stringify({ mcpServers: { time: { command: 'uvx', args: ['mcp-server-time'] } } }));
    mkdirSync(join(home, '.config', 'Claude'), { recursive: true });
    writeFileSync(join(home, '.config', 'Claude', 'claude_desktop_config.json'), JSON.stringify({ mcpServers: { stray: { command: 'npx', args: ['-y', 'mcp-server-stray'] } } }));
    const res = await gate({}, 'development', { cwd, home });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('servers=[time, stray]');
    expect(res.stderr).toContain('stray: not in the policy');
    const empty = await gate({}, 'development', { cwd: tempDir() });
    expect(empty.code).toBe(0);
    expect(empty.stdout).toContain('servers=[]');
    expect(empty.stderr).toContain('no MCP client configs found');
  });

  it('checks the servers behind a killswitch gateway entry (its --config file), not the gateway itself', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'ks'));
    const upstreams = {
      time: { command: 'uvx', args: ['mcp-server-time'] },
      github: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-github'] },
    };
    writeFileSync(join(dir, 'ks', 'gateway.json'), JSON.stringify({ mcpServers: upstreams, killswitch: { url: 'http://127.0.0.1:8080' } }, null, 2));
    // A control plane whose host matches a forbidden pattern is no conflict: it is not where the agent's calls go.
    const entry = { command: 'node', args: ['/opt/mcp-killswitch/bin/killswitch.js', 'gateway', '--config', 'ks/gateway.json'], env: { KILLSWITCH_URL: 'https://ks.prod.example.com' } };
    writeFileSync(join(dir, 'claude_desktop_config.json'), JSON.stringify({ mcpServers: { killswitch: entry } }, null, 2));
    const ok = await gate({ config: ['claude_desktop_config.json'] }, 'development', { cwd: dir });
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toBe('MCP environment gate passed: environment=development, servers=[time, github], timestamp=2026-03-01T14:23:01.000Z\n');

    const staging = await gate({ config: ['claude_desktop_config.json'] }, 'staging', { cwd: dir });
    expect(staging.code).toBe(1);
    expect(staging.stderr.split('\n').filter((l) => l.startsWith('  '))).toEqual(['  ks/gateway.json:9:5 github: policy server "github" is not allowed in staging for any role (allowed: time)']);

    rmSync(join(dir, 'ks', 'gateway.json'));
    const missing = await gate({ config: ['claude_desktop_config.json'] }, 'development', { cwd: dir });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`claude_desktop_config.json:9:9: server "killswitch" runs the killswitch gateway with --config ${join(dir, 'ks', 'gateway.json')}, which cannot be read (file not found)`);
  });

  it('bad input exits 2 with file:line:column: invalid config JSON, unreadable config, invalid or missing policy', async () => {
    const badJson = await gate({ config: ['bad/trailing-comma.mcp.txt'] });
    expect(badJson.code).toBe(2);
    expect(badJson.stderr).toContain('bad/trailing-comma.mcp.txt:5:34: invalid JSON: a value was expected');
    const missing = await gate({ config: ['gate/nope.json'] });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('gate/nope.json:1:1: cannot read the file: file not found');
    const badPolicy = await gate({ config: ['gate/development-ok.json'], policy: resolve('test/fixtures/policy/syntax.yaml') });
    expect(badPolicy.code).toBe(2);
    expect(badPolicy.stderr).toMatch(/syntax\.yaml:\d+:\d+: /);
    // The gate needs a policy: a missing one is bad input, never a pass.
    const noPolicy = await gate({ config: ['gate/development-ok.json'], policy: 'absent.yaml' });
    expect(noPolicy.code).toBe(2);
    expect(noPolicy.stdout).toBe('');
  });
});
