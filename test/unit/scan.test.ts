import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { afterAll, describe, expect, it } from 'vitest';
import { redactText } from '../../src/audit/redact.js';
import { type CliEnvironment, scanCommand } from '../../src/cli/scan/command.js';
import { userConfigLocations } from '../../src/cli/scan/locations.js';
import { parseConfigText } from '../../src/cli/scan/parse.js';
import { runScan, type ScanOptions } from '../../src/cli/scan/scan.js';
import { type ScanOutput, scanOutputJsonSchema } from '../../src/cli/scan/schema.js';
import { findSecrets, maskSecret } from '../../src/cli/scan/secrets.js';

const FIXTURES = resolve('test/fixtures/scan');
const POLICY = join(FIXTURES, 'policy.yaml');

/** Every credential in the risky fixtures: none may ever be printed. */
const SECRETS = ['Sup3rSecretPassw0rd', 'ghp_FakeTokenForKillswitchScanTests000000', 'wk-live-8d7f6e5d4c3b2a1900', 'crm_9f8e7d6c5b4a39281716'];

const temps: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ks-scan-'));
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

function env(overrides: Partial<CliEnvironment> = {}) {
  const out = sink();
  const err = sink();
  const e: CliEnvironment = {
    stdout: out.stream,
    stderr: err.stream,
    cwd: FIXTURES,
    // An empty home: the machine's own client configs never leak into a test.
    home: tempDir(),
    platform: 'linux',
    appData: '',
    policyFile: POLICY,
    ...overrides,
  };
  return { env: e, stdout: out.text, stderr: err.text };
}

function options(o: Partial<ScanOptions>): ScanOptions {
  return {
    paths: [],
    includeUserConfigs: false,
    cwd: FIXTURES,
    home: tempDir(),
    platform: 'linux',
    appData: '',
    policy: { file: POLICY, required: true },
    failOn: 'high',
    maxDepth: 6,
    ...o,
  };
}

const ajv = new Ajv({ allErrors: true, strict: true });
addFormats.default(ajv);
const validateOutput = ajv.compile(JSON.parse(readFileSync('docs/scan-output.schema.json', 'utf8')) as object);

function expectValid(output: unknown): void {
  const ok = validateOutput(output);
  expect(validateOutput.errors ?? []).toEqual([]);
  expect(ok).toBe(true);
}

function findingsOf(out: ScanOutput, server: string) {
  return out.findings.filter((f) => f.server === server).map((f) => `${f.type}:${f.severity}`);
}

describe('killswitch scan: discovery', () => {
  it('finds Claude Desktop, Cursor, VS Code and package.json files in a folder, with each server and its transport', async () => {
    const { output } = await runScan(options({ paths: ['risky'] }));
    expect(output.files.map((f) => `${f.kind} ${f.path}`).sort()).toEqual([
      'claude_desktop risky/claude_desktop_config.json',
      'cursor risky/.cursor/mcp.json',
      'package_json risky/package.json',
      'vscode risky/.vscode/mcp.json',
    ]);
    const byName = new Map(output.servers.map((s) => [s.name, s]));
    expect(byName.get('crm')).toMatchObject({ transport: 'http', url: 'https://mcp.crm.example.com/mcp', file_kind: 'vscode', line: 3, column: 5 });
    expect(byName.get('github')).toMatchObject({ transport: 'stdio', command: 'npx', kind: 'github', env_keys: ['GITHUB_PERSONAL_ACCESS_TOKEN'] });
    // package.json: MCP server packages and the SDK, not unrelated dependencies.
    const packages = output.servers.filter((s) => s.origin === 'package').map((s) => `${s.name}:${s.kind}`);
    expect(packages).toEqual(['@modelcontextprotocol/server-filesystem:filesystem', 'mcp-shell:shell', '@modelcontextprotocol/sdk:sdk']);
    expect(output.summary).toMatchObject({ files: 4, servers: 9, packages: 3 });
  });

  it('reads VS Code mcp.json (servers key, comments, trailing commas) and .mcp.json', async () => {
    const { output } = await runScan(options({ paths: ['clean'] }));
    expect(output.servers.map((s) => `${s.file_kind}:${s.name}`)).toEqual(['mcp_json:time', 'vscode:github', 'package_json:@modelcontextprotocol/sdk']);
    expect(output.errors).toEqual([]);
  });

  it('does not walk into node_modules', async () => {
    const dir = tempDir();
    cpSync(join(FIXTURES, 'clean'), dir, { recursive: true });
    mkdirSync(join(dir, 'node_modules', 'dep'), { recursive: true });
    writeFileSync(join(dir, 'node_modules', 'dep', 'package.json'), JSON.stringify({ dependencies: { 'mcp-server-hidden': '1.0.0' } }));
    writeFileSync(join(dir, 'node_modules', 'dep', 'mcp.json'), JSON.stringify({ mcpServers: { hidden: { command: 'x' } } }));
    const { output } = await runScan(options({ paths: [dir] }));
    expect(output.servers.map((s) => s.name)).not.toContain('hidden');
    expect(output.servers.map((s) => s.name)).not.toContain('mcp-server-hidden');
  });

  it('knows where Claude Desktop keeps its config on macOS, Windows and Linux, and the user-level Cursor config', () => {
    expect(userConfigLocations({ platform: 'darwin', home: '/Users/ana', appData: '' }).map((l) => l.path)).toEqual([
      '/Users/ana/Library/Application Support/Claude/claude_desktop_config.json',
      '/Users/ana/.cursor/mcp.json',
    ]);
    expect(userConfigLocations({ platform: 'win32', home: 'C:\\Users\\ana', appData: 'D:\\Roaming' })[0]?.path).toBe('D:\\Roaming\\Claude\\claude_desktop_config.json');
    expect(userConfigLocations({ platform: 'win32', home: 'C:\\Users\\ana', appData: '' })[0]?.path).toBe('C:\\Users\\ana\\AppData\\Roaming\\Claude\\claude_desktop_config.json');
    expect(userConfigLocations({ platform: 'linux', home: '/home/ana', appData: '' })[0]?.path).toBe('/home/ana/.config/Claude/claude_desktop_config.json');
  });

  it('without paths, scans the working folder and the user-level configs that exist', async () => {
    const home = tempDir();
    const cwd = tempDir();
    mkdirSync(join(home, 'Library', 'Application Support', 'Claude'), { recursive: true });
    writeFileSync(join(home, 'Library', 'Application Support', 'Claude', 'claude_desktop_config.json'), JSON.stringify({ mcpServers: { time: { command: 'uvx', args: ['mcp-server-time'] } } }));
    mkdirSync(join(home, '.cursor'));
    writeFileSync(join(home, '.cursor', 'mcp.json'), JSON.stringify({ mcpServers: { web: { url: 'https://example.com/sse' } } }));
    writeFileSync(join(cwd, '.mcp.json'), JSON.stringify({ mcpServers: { local: { type: 'stdio', command: './server' } } }));
    const { output } = await runScan(options({ cwd, home, platform: 'darwin', policy: undefined }));
    expect(output.servers.map((s) => `${s.file_kind}:${s.name}:${s.transport}`)).toEqual(['mcp_json:local:stdio', 'claude_desktop:time:stdio', 'cursor:web:sse']);
    // With paths, the user-level configs only with --user.
    const onlyPath = await runScan(options({ cwd, home, platform: 'darwin', policy: undefined, paths: ['.'] }));
    expect(onlyPath.output.servers.map((s) => s.name)).toEqual(['local']);
    const withUser = await runScan(options({ cwd, home, platform: 'darwin', policy: undefined, paths: ['.'], includeUserConfigs: true }));
    expect(withUser.output.servers).toHaveLength(3);
  });
});

describe('killswitch scan: findings and risk (seed 002)', () => {
  it('flags every prohibited pattern at the line and column of the offending value', async () => {
    const { output } = await runScan(options({ paths: ['risky'] }));
    expect(findingsOf(output, 'shell')).toEqual(['shell_execution:critical', 'unapproved_server:high']);
    expect(output.findings.find((f) => f.server === 'shell' && f.type === 'unapproved_server')?.message).toContain('prohibits');
    expect(findingsOf(output, 'build-helper')).toContain('shell_execution:critical');
    const shellTrue = output.findings.find((f) => f.server === 'build-helper' && f.type === 'shell_execution');
    expect(shellTrue).toMatchObject({ file: 'risky/.cursor/mcp.json', line: 15, column: 7 });
    expect(shellTrue?.message).toContain('shell: true');

    expect(output.findings.find((f) => f.server === 'root-files' && f.type === 'filesystem_root')).toMatchObject({ severity: 'critical', line: 10, column: 65 });
    expect(output.findings.find((f) => f.server === 'filesystem' && f.type === 'filesystem_root')).toMatchObject({ severity: 'high', line: 5, column: 65 });

    const prod = output.findings.find((f) => f.type === 'production_database');
    expect(prod).toMatchObject({ server: 'analytics', severity: 'critical', line: 9, column: 63 });
    expect(prod?.message).toContain('"db.prod.internal" matches the production pattern "prod"');

    const creds = output.findings.filter((f) => f.type === 'plaintext_credential').map((f) => `${f.server} ${f.line}:${f.column} ${f.evidence}`);
    expect(creds.sort()).toEqual([
      'analytics 9:63 postgresql://admin:Sup3****@db.prod.internal:5432/orders',
      'crm 6:20 Authorization: Bearer crm_****',
      'github 15:9 GITHUB_PERSONAL_ACCESS_TOKEN=ghp_****',
      'weather 20:54 --api-key wk-l****',
    ]);

    const unapproved = output.findings.filter((f) => f.type === 'unapproved_server').map((f) => f.server);
    expect(unapproved.sort()).toEqual(['analytics', 'build-helper', 'crm', 'docs-reader', 'filesystem', 'mcp-shell', 'root-files', 'shell', 'weather']);
    // Named like the policy's filesystem server, but rooted elsewhere: not the approved server.
    expect(output.findings.find((f) => f.server === 'filesystem' && f.type === 'unapproved_server')?.message).toContain('/tmp/ks-demo');
    expect(output.summary.unapproved).toBe(9);
    expect(output.findings[0]?.severity).toBe('critical');
    // Messages point the user at shipped docs, not at the source documents the product was built from.
    expect(output.findings.filter((f) => /seed \d/i.test(f.message)).map((f) => f.message)).toEqual([]);
  });

  it('assigns seed 002 risk levels: shell critical, production database critical, filesystem high, read-only filesystem low, github medium, time low, unknown medium', async () => {
    const { output } = await runScan(options({ paths: ['risky', 'clean'] }));
    const risk = new Map(output.servers.map((s) => [s.id, s.risk]));
    expect(risk.get('risky/.cursor/mcp.json#shell')).toBe('critical');
    expect(risk.get('risky/claude_desktop_config.json#analytics')).toBe('critical');
    expect(risk.get('risky/claude_desktop_config.json#filesystem')).toBe('high');
    expect(risk.get('risky/.cursor/mcp.json#root-files')).toBe('critical');
    expect(risk.get('risky/.cursor/mcp.json#docs-reader')).toBe('low');
    expect(output.servers.find((s) => s.name === 'docs-reader')?.read_only).toBe(true);
    expect(risk.get('risky/claude_desktop_config.json#github')).toBe('medium');
    expect(risk.get('clean/.mcp.json#time')).toBe('low');
    expect(risk.get('risky/claude_desktop_config.json#weather')).toBe('medium');
    expect(risk.get('risky/package.json#dependencies.mcp-shell')).toBe('critical');
  });

  it('a clean config has no findings, every server approved, exit code 0 even with --fail-on low', async () => {
    const { output } = await runScan(options({ paths: ['clean'], failOn: 'low' }));
    expect(output.findings).toEqual([]);
    expect(output.servers.filter((s) => s.kind !== 'sdk').every((s) => s.approved === true)).toBe(true);
    expect(output.summary.exit_code).toBe(0);
    expectValid(output);
  });

  it('production patterns match whole host or database-name segments only, never paths', async () => {
    const dir = tempDir();
    const servers = {
      mainframe: { command: 'npx', args: ['@modelcontextprotocol/server-postgres', 'postgresql://mainframe-db.internal/mainframe_dev'] },
      productive: { command: 'npx', args: ['@modelcontextprotocol/server-postgres', 'postgresql://productive.example.com/app'] },
      maindb: { command: 'npx', args: ['@modelcontextprotocol/server-postgres', 'postgresql://localhost:5432/main'] },
      live: { command: 'npx', args: ['mcp-server-mysql'], env: { DATABASE_URL: 'mysql://app@live-replica.db.internal:3306/shop' } },
      checkout: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/srv/prod/checkout'] },
      web: { url: 'https://prod.example.com/mcp' },
    };
    writeFileSync(join(dir, 'mcp.json'), JSON.stringify({ mcpServers: servers }, null, 2));
    const { output } = await runScan(options({ paths: [dir], policy: undefined }));
    const prod = output.findings.filter((f) => f.type === 'production_database').map((f) => f.server);
    expect(prod.sort()).toEqual(['live', 'maindb']);
    expect(output.production_patterns).toEqual(['live', 'main', 'prod', 'production']);
  });

  it('recognises filesystem roots in args, docker mounts and env, on POSIX and Windows', async () => {
    const dir = tempDir();
    const home = '/home/ana';
    const servers = {
      docker: { command: 'docker', args: ['run', '-i', '--rm', '-v', '/:/host', 'mcp/filesystem', '/host'] },
      dockerRo: { command: 'docker', args: ['run', '-i', '--rm', '-v', '/srv/data:/data:ro', 'mcp/filesystem', '/data'] },
      windows: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', 'C:\\'] },
      profile: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '%USERPROFILE%'] },
      homeAbs: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/home/ana/'] },
      ssh: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '~/.ssh'] },
      // The gateway's credential paths (src/policy/sensitive-paths.ts), a file and a folder of them.
      netrc: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/home/ana/.netrc'] },
      ghConfig: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '~/.config/gh/hosts'] },
      envRoot: { command: './files-server', args: [], env: { ALLOWED_DIRECTORIES: '/tmp/a:/' } },
      project: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/home/ana/projects/shell-scripts'] },
    };
    writeFileSync(join(dir, 'mcp.json'), JSON.stringify({ mcpServers: servers }, null, 2));
    const { output } = await runScan(options({ paths: [dir], policy: undefined, home }));
    const roots = Object.fromEntries(output.findings.filter((f) => f.type === 'filesystem_root').map((f) => [f.server, f.severity]));
    expect(roots).toEqual({ docker: 'critical', windows: 'critical', envRoot: 'critical', profile: 'high', homeAbs: 'high', ssh: 'high', netrc: 'high', ghConfig: 'high' });
    const byName = new Map(output.servers.map((s) => [s.name, s]));
    expect(byName.get('dockerRo')).toMatchObject({ kind: 'filesystem', read_only: true, risk: 'low' });
    // A path argument never makes a filesystem server a shell server.
    expect(byName.get('project')).toMatchObject({ kind: 'filesystem', risk: 'high' });
  });

  it('does not flag references, placeholders and secret files as plaintext credentials', async () => {
    const dir = tempDir();
    // Written with a helper so the test file itself holds no template-looking strings.
    const ref = (name: string) => `$${'{'}${name}}`;
    const servers = {
      refs: {
        command: 'npx',
        args: ['-y', 'mcp-server-x', '--token', ref('input:token'), '--password=$DB_PASSWORD'],
        env: { API_KEY: ref('env:API_KEY'), GITHUB_TOKEN: '<your-token>', SLACK_TOKEN: 'YOUR_TOKEN_HERE', GOOGLE_APPLICATION_CREDENTIALS: '/secrets/gcp.json', DB: 'postgresql://app@localhost/dev' },
        headers: { Authorization: `Bearer ${ref('input:crm')}` },
      },
      known: { command: 'npx', args: ['-y', 'mcp-server-x'], env: { NOTE: 'sk-ant-api03-abcdefghijklmnopqrstuvwx', SHORT_TOKEN: 'abc12345' } },
      docker: { command: 'docker', args: ['run', '-e', 'GITHUB_TOKEN', '-e', 'OPENAI_API_KEY=opensesame-123456', 'img'] },
      query: { url: 'https://mcp.example.com/sse?api_key=qk_1234567890abcdef&team=a' },
    };
    writeFileSync(join(dir, 'mcp.json'), JSON.stringify({ mcpServers: servers }, null, 2));
    const { output } = await runScan(options({ paths: [dir], policy: undefined }));
    const creds = output.findings.filter((f) => f.type === 'plaintext_credential').map((f) => `${f.server}: ${f.evidence}`);
    expect(creds.sort()).toEqual([
      'docker: OPENAI_API_KEY=open****',
      'known: NOTE=sk-a****',
      'known: SHORT_TOKEN=****',
      'query: https://mcp.example.com/sse?api_key=qk_1****&team=a',
    ]);
    expect(JSON.stringify(output)).not.toContain('abc12345');
  });

  it('masks the whole password of a connection string, up to the last @ before the host, and nothing else', async () => {
    const dir = tempDir();
    const servers = {
      at: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-postgres', 'postgresql://admin:p@ssw0rd-Secret9@db/x'] },
      slash: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-postgres', 'postgresql://admin:Ab/Cd-Secret-9@db/x'] },
      short: { command: 'npx', args: ['-y', 'mcp-server-mysql', '--password=abc12'] },
      // One reading of this string takes "prod-secret-9@db" for a database name: the message must not show it.
      prodPart: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-postgres', 'postgresql://admin:Ab/prod-Secret-9@db/x'] },
    };
    writeFileSync(join(dir, 'mcp.json'), JSON.stringify({ mcpServers: servers }, null, 2));
    const { output } = await runScan(options({ paths: [dir], policy: undefined }));
    const creds = output.findings.filter((f) => f.type === 'plaintext_credential').map((f) => `${f.server}: ${f.evidence}`);
    expect(creds.sort()).toEqual([
      'at: postgresql://admin:p@ss****@db/x',
      'prodPart: postgresql://admin:Ab/p****@db/x',
      'short: --password=****',
      'slash: postgresql://admin:****@db/x',
    ]);
    const byName = new Map(output.servers.map((s) => [s.name, s]));
    // Masked where found, not wherever its text appears: "npx" and the package keep their "p"s.
    expect(byName.get('at')).toMatchObject({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-postgres', 'postgresql://admin:p@ss****@db/x'] });
    expect(byName.get('short')?.args).toEqual(['-y', 'mcp-server-mysql', '--password=****']);
    const prod = output.findings.find((f) => f.server === 'prodPart' && f.type === 'production_database');
    expect(prod?.message).toContain('"****@db" matches the production pattern "prod"');
    for (const format of [{}, { json: true }, { report: 'md' }]) {
      const out = env({ cwd: dir });
      await scanCommand([dir], { ...format, policy: false }, out.env);
      const all = out.stdout() + out.stderr();
      for (const secret of ['ssw0rd', 'Secret9', 'Cd-Secret-9', 'abc12', 'rod-Secret-9', 'secret-9']) expect(all).not.toContain(secret);
      expect(all).not.toContain('n****x');
    }
  });

  it("reads a URL's password as src/audit/redact.ts does", () => {
    const samples = [
      'postgresql://admin:p@ssw0rd-Secret9@db/x',
      'postgresql://admin:Ab/Cd-Secret-9@db/x',
      'redis://:s3cr3t-value@cache:6379/0',
      'https://bot:pa@ss/wo@rd@mcp.example.com/sse?team=a',
      'mysql://app:hunter2@db.internal:3306/shop',
    ];
    for (const url of samples) {
      const parsed = parseConfigText(JSON.stringify({ mcpServers: { s: { url } } }), 'x/mcp.json', 'mcp_json');
      if (!parsed.ok) throw new Error('unparsable sample');
      const found = findSecrets(parsed.parsed.servers[0]!);
      const spans = found.flatMap((f) => f.spans);
      expect(spans).toHaveLength(1);
      const { start, end } = spans[0]!;
      expect(`${url.slice(0, start)}[REDACTED]${url.slice(end)}`).toBe(redactText(url));
    }
  });

  it('masks at most the first 4 characters, none of short secrets', () => {
    expect(maskSecret('ghp_abcdefghijklmnopqrstuvwxyz0123456789')).toBe('ghp_****');
    expect(maskSecret('hunter2hunter2')).toBe('****');
  });
});

describe('killswitch scan: an entry that runs the killswitch gateway', () => {
  /** A client config that lists only the gateway, and the gateway config it names (relative to it). */
  function gatewaySetup(upstreams: Record<string, unknown>, entry?: { command: string; args: string[] }) {
    const dir = tempDir();
    mkdirSync(join(dir, 'ks'));
    const gatewayJson = { mcpServers: upstreams, killswitch: { url: 'http://127.0.0.1:8080', gatewayKey: 'ksgw_x', agentToken: 'mcp_ro_x' } };
    writeFileSync(join(dir, 'ks', 'gateway.json'), JSON.stringify(gatewayJson, null, 2));
    const killswitch = entry ?? { command: 'node', args: ['/opt/mcp-killswitch/bin/killswitch.js', 'gateway', '--config', 'ks/gateway.json'] };
    const client = { mcpServers: { killswitch: { ...killswitch, env: { KILLSWITCH_URL: 'https://killswitch.prod.example.com' } } } };
    writeFileSync(join(dir, 'claude_desktop_config.json'), JSON.stringify(client, null, 2));
    return dir;
  }
  const approvedUpstreams = {
    filesystem: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/tmp/ks-demo'] },
    time: { command: 'uvx', args: ['mcp-server-time'] },
  };

  it('does not flag the gateway; scans the servers of its --config file instead, with that file\'s path', async () => {
    const dir = gatewaySetup(approvedUpstreams);
    const { output } = await runScan(options({ paths: [dir], cwd: dir }));
    expectValid(output);
    expect(output.findings).toEqual([]);
    expect(output.summary.exit_code).toBe(0);
    expect(output.files.map((f) => `${f.kind} ${f.path} ${f.servers}`)).toEqual(['claude_desktop claude_desktop_config.json 1', 'gateway ks/gateway.json 2']);
    expect(output.servers.map((s) => `${s.file}#${s.name} ${s.kind} ${s.approved}`)).toEqual([
      'claude_desktop_config.json#killswitch gateway null',
      'ks/gateway.json#filesystem filesystem true',
      'ks/gateway.json#time time true',
    ]);
  });

  it('reports what the gateway would run at its line in the gateway config', async () => {
    const dir = gatewaySetup({ ...approvedUpstreams, stray: { command: 'npx', args: ['-y', 'mcp-server-stray'] } });
    const { output } = await runScan(options({ paths: [join(dir, 'claude_desktop_config.json')], cwd: dir }));
    expect(output.findings.map((f) => `${f.file}:${f.line}:${f.column} ${f.server} ${f.type}`)).toEqual(['ks/gateway.json:17:5 stray unapproved_server']);
    expect(output.summary.exit_code).toBe(1);
  });

  it('recognises npx killswitch gateway and killswitch gateway, --config=FILE, and ~ in the path', async () => {
    const home = tempDir();
    mkdirSync(join(home, '.config', 'killswitch'), { recursive: true });
    writeFileSync(join(home, '.config', 'killswitch', 'gateway.json'), JSON.stringify({ mcpServers: { time: approvedUpstreams.time } }));
    for (const entry of [
      { command: 'npx', args: ['-y', 'killswitch', 'gateway', '--config', '~/.config/killswitch/gateway.json'] },
      { command: 'killswitch', args: ['gateway', '--config=~/.config/killswitch/gateway.json', '--http'] },
      { command: 'C:\\Program Files\\nodejs\\node.exe', args: ['C:\\src\\mcp-killswitch\\bin\\killswitch.js', 'gateway', '--config', '~/.config/killswitch/gateway.json'] },
    ]) {
      const dir = gatewaySetup({}, entry);
      const { output } = await runScan(options({ paths: [dir], cwd: dir, home }));
      expect(output.findings, entry.command).toEqual([]);
      expect(output.servers.map((s) => `${s.name} ${s.kind}`), entry.command).toEqual(['killswitch gateway', 'time time']);
    }
    // `gateway` must be the command: other subcommands of ours, or other node scripts, are servers like any.
    const other = gatewaySetup({}, { command: 'node', args: ['/opt/other/killswitch.js', 'scan'] });
    const { output } = await runScan(options({ paths: [other], cwd: other }));
    expect(output.servers.map((s) => `${s.name} ${s.kind} ${s.approved}`)).toEqual(['killswitch unknown false']);
  });

  it('a --config that cannot be read, or none, is bad input at the entry (exit 2)', async () => {
    const missing = gatewaySetup({}, { command: 'node', args: ['/opt/mcp-killswitch/bin/killswitch.js', 'gateway', '--config', 'nope/gateway.json'] });
    const { output } = await runScan(options({ paths: [missing], cwd: missing }));
    expect(output.summary.exit_code).toBe(2);
    expect(output.errors).toEqual([
      {
        file: 'claude_desktop_config.json',
        // The --config value: args[3] on the ninth line.
        line: 9,
        column: 9,
        message: `server "killswitch" runs the killswitch gateway with --config ${join(missing, 'nope/gateway.json')}, which cannot be read (file not found): the servers it would run cannot be checked`,
      },
    ]);
    const none = gatewaySetup({}, { command: 'node', args: ['/opt/mcp-killswitch/bin/killswitch.js', 'gateway'] });
    const res = await runScan(options({ paths: [none], cwd: none }));
    expect(res.output.errors.map((e) => e.message)).toEqual(['server "killswitch" runs the killswitch gateway without --config: the servers it would run cannot be checked']);
  });

  it('reports a shell wrapper the gateway refuses (cmd /c npx ...), saying what to write instead', async () => {
    const dir = gatewaySetup({ filesystem: { command: 'cmd', args: ['/c', 'npx', '-y', '@modelcontextprotocol/server-filesystem', '/tmp/ks-demo'] } });
    const { output } = await runScan(options({ paths: [dir], cwd: dir, policy: undefined }));
    const shell = output.findings.filter((f) => f.type === 'shell_execution');
    expect(shell).toHaveLength(1);
    expect(shell[0]).toMatchObject({ file: 'ks/gateway.json', server: 'filesystem', severity: 'critical', line: 4, column: 7 });
    expect(shell[0]?.message).toContain('drop `cmd /c`: the gateway starts npx itself ("command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp/ks-demo"])');
    expect(shell[0]?.message).not.toContain('seed');
    // The same entry in a client config is reported too, with the advice for a client.
    const client = tempDir();
    writeFileSync(join(client, 'mcp.json'), JSON.stringify({ mcpServers: { files: { command: 'cmd.exe', args: ['/c', 'npx', '-y', '@modelcontextprotocol/server-filesystem', 'C:/work'] } } }));
    const res = await runScan(options({ paths: [client], cwd: client, policy: undefined }));
    expect(res.output.findings.map((f) => `${f.server} ${f.type}`)).toEqual(['files shell_execution']);
    expect(res.output.findings[0]?.message).toContain('drop `cmd.exe /c`: the client (or the killswitch gateway) starts npx itself');
  });
});

describe('killswitch scan: outputs and exit codes', () => {
  it('--json validates against docs/scan-output.schema.json, and the schema file is the one the code prints', async () => {
    const out = env();
    expect(await scanCommand(['risky', 'clean'], { json: true }, out.env)).toBe(1);
    const parsed = JSON.parse(out.stdout()) as ScanOutput;
    expectValid(parsed);
    expect(parsed.summary.exit_code).toBe(1);
    expect(parsed.policy?.file).toBe(POLICY);
    expect(JSON.parse(readFileSync('docs/scan-output.schema.json', 'utf8'))).toEqual(scanOutputJsonSchema());
  });

  it('never prints a credential in clear: table, --json and --report md', async () => {
    for (const format of [{}, { json: true }, { report: 'md' }]) {
      const out = env();
      await scanCommand(['risky'], format, out.env);
      const all = out.stdout() + out.stderr();
      expect(all.length).toBeGreaterThan(500);
      for (const secret of SECRETS) {
        expect(all).not.toContain(secret);
        expect(all).not.toContain(secret.slice(0, 5));
      }
      expect(all).toContain('ghp_****');
    }
  });

  it('exit code follows --fail-on: 1 at or above it, 0 below it or with none', async () => {
    // risky/.vscode/mcp.json alone has one high finding (a plaintext bearer token).
    const run = async (failOn: string) => scanCommand(['risky/.vscode/mcp.json'], { failOn, policy: false, json: true }, env().env);
    expect(await run('critical')).toBe(0);
    expect(await run('high')).toBe(1);
    expect(await run('medium')).toBe(1);
    expect(await run('none')).toBe(0);
    expect(await scanCommand(['risky'], { failOn: 'critical', policy: false }, env().env)).toBe(1);
    expect(await scanCommand(['clean'], { failOn: 'low' }, env().env)).toBe(0);
  });

  it('the markdown report has the shape of seed 002\'s "MCP Security Report"', async () => {
    const out = env();
    await scanCommand(['risky'], { report: 'md' }, out.env);
    const md = out.stdout();
    expect(md).toMatch(/^## MCP Security Report - \d{4}-\d{2}-\d{2}\n/);
    for (const line of [
      '### Inventory',
      '- Total MCP Servers: 12 (9 in client configs, 3 MCP package dependencies)',
      '- Critical Risk: 5 | High Risk: 2 | Medium Risk: 3 | Low Risk: 2',
      '### Findings',
      '- New MCP servers detected: 9',
      '- Policy violations: 9',
      '- Security vulnerabilities: 10',
      '### Actions',
      '- Servers requiring review: ',
      '- Remediation in progress: ',
      '- Policy updates needed: approve or remove ',
    ]) {
      expect(md).toContain(line);
    }
  });

  it('bad input: invalid JSON, a wrong shape or a missing file give file:line:column on stderr and exit 2', async () => {
    const out = env();
    expect(await scanCommand(['bad/trailing-comma.mcp.txt', 'bad/shape.mcp.json', 'missing.json'], { policy: false }, out.env)).toBe(2);
    expect(out.stderr()).toContain('bad/trailing-comma.mcp.txt:5:34: invalid JSON: a value was expected');
    expect(out.stderr()).toContain('bad/shape.mcp.json:2:17: "mcpServers" must be an object, not a list');
    expect(out.stderr()).toContain('missing.json:1:1: no such file or directory');
  });

  it('bad input: an invalid or missing --policy file gives file:line:column and exit 2', async () => {
    const broken = env();
    expect(await scanCommand(['clean'], { policy: resolve('test/fixtures/policy/syntax.yaml') }, broken.env)).toBe(2);
    expect(broken.stderr()).toMatch(/syntax\.yaml:\d+:\d+: /);
    const missing = env();
    expect(await scanCommand(['clean'], { policy: 'nope.yaml' }, missing.env)).toBe(2);
    expect(missing.stderr()).toContain('nope.yaml:1:1: cannot read the policy file: file not found');
    // The configured default policy is optional: without it the approval check is skipped, with a note.
    const absent = env({ policyFile: join(FIXTURES, 'absent.yaml') });
    expect(await scanCommand(['clean'], {}, absent.env)).toBe(0);
    expect(absent.stderr()).toContain('servers are not checked against an approved list');
  });

  it('strict JSON files reject comments; JSONC is only for VS Code and Cursor', () => {
    const text = '{\n  // note\n  "mcpServers": {}\n}';
    const strict = parseConfigText(text, 'x/claude_desktop_config.json', 'claude_desktop');
    expect(strict.ok).toBe(false);
    if (!strict.ok) expect(strict.errors[0]).toMatchObject({ line: 2, column: 3, message: 'invalid JSON: comments are not allowed in this file' });
    expect(parseConfigText(text, 'x/.cursor/mcp.json', 'cursor').ok).toBe(true);
  });
});
