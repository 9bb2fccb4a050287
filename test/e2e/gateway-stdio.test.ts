// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${env:NAME} is the config syntax under test, not a template string.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayHarness, textOf } from './gateway-harness.js';

// `killswitch gateway --config file` as Claude Desktop starts it: a child process speaking MCP on stdio,
// credentials from its environment.

const BIN = fileURLToPath(new URL('../../bin/killswitch.js', import.meta.url));
const h = new GatewayHarness();
let client: Client | undefined;

beforeAll(async () => {
  await h.start();
  writeFileSync(join(h.dir, 'stdio.md'), 'read over stdio\n');
}, 120_000);
afterAll(async () => {
  await client?.close().catch(() => {});
  await h.stop();
});

describe('killswitch gateway over stdio', () => {
  it('serves an MCP client on stdin/stdout with the agent token from its environment', async () => {
    const token = await h.token('ro');
    const transport = h.stdioGateway(token, join(h.scratch, 'stdio-gateway.json'));
    client = new Client({ name: 'claude-desktop-like', version: '0.9' });
    await client.connect(transport, { timeout: 60_000 });
    const names = (await client.listTools()).tools.map((t) => t.name);
    expect(names).toContain('read_text_file');
    expect(names).not.toContain('write_file');
    const read = (await client.callTool({ name: 'read_text_file', arguments: { path: 'stdio.md' } })) as CallToolResult;
    expect(read.isError, textOf(read)).toBeFalsy();
    expect(textOf(read)).toContain('read over stdio');
  }, 90_000);

  it('refuses to start on a prohibited upstream config, exit code 2, naming the finding', () => {
    const file = join(h.scratch, 'prohibited.json');
    writeFileSync(file, JSON.stringify({ mcpServers: { filesystem: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/'] } }, killswitch: { gatewayKey: '${env:KILLSWITCH_GATEWAY_KEY}' } }));
    const run = spawnSync(process.execPath, [BIN, 'gateway', '--config', file], { env: { ...process.env, KILLSWITCH_GATEWAY_KEY: 'ksgw_x' }, encoding: 'utf8', timeout: 60_000 });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('refused (filesystem_root)');
    expect(run.stdout).toBe('');
  }, 90_000);
});
