import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { toUnleashContext } from '../../src/flags/service.js';
import { restoreFlag, testAdmin, until } from '../helpers/unleash.js';
import { GatewayHarness, textOf } from './gateway-harness.js';

// An operator turns mcp.filesystem.write off in Unleash during an incident: the next write through the
// gateway is denied with KILL_SWITCH; reads keep working. In the Unleash lane: it toggles a flag.

const unleash = inject('unleash');
const admin = testAdmin(unleash);
const FLAG = 'mcp.filesystem.write';
const h = new GatewayHarness();

beforeAll(() => h.start(), 120_000);
afterAll(async () => {
  await restoreFlag(unleash, FLAG);
  await h.stop();
});

describe('Unleash kill switch through the gateway', () => {
  it('turning mcp.filesystem.write off denies the next write with KILL_SWITCH', async () => {
    const token = await h.token('rw');
    const gateway = await h.gateway();
    const client = await h.client(gateway, token);
    const first = (await client.callTool({ name: 'write_file', arguments: { path: 'before.md', content: 'on' } })) as CallToolResult;
    expect(first.isError, textOf(first)).toBeFalsy();

    await admin.setEnabled(FLAG, unleash.environment, false);
    await until(() => !h.app.ctx.flags.isEnabled(FLAG, toUnleashContext({ userId: 'probe', tokenType: 'rw', mcpEnvironment: 'development', server: 'filesystem', capability: 'write' })), 5000, 'the control plane to see the flag off');

    const denied = (await client.callTool({ name: 'write_file', arguments: { path: 'after.md', content: 'off' } })) as CallToolResult;
    expect(denied.isError).toBe(true);
    expect(textOf(denied)).toMatch(/^KILL_SWITCH: .*mcp\.filesystem\.write/);
    expect(existsSync(join(h.dir, 'after.md'))).toBe(false);
    const read = (await client.callTool({ name: 'read_text_file', arguments: { path: 'before.md' } })) as CallToolResult;
    expect(read.isError, textOf(read)).toBeFalsy();
  });
});
