import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FixtureUpstream, GatewayHarness, startFixtureUpstream, textOf } from './gateway-harness.js';

// RATE_LIMITED through the built-in gateway: the decision's retry_after_s reaches the agent in the tool
// result's _meta, beside the code, for an agent that reads _meta rather than the text. A day limit (UTC
// days) rather than a per-minute one: a minute window could end between the calls and let the third pass.

const h = new GatewayHarness();
let fixture: FixtureUpstream;

beforeAll(async () => {
  await h.start({ policyExtra: 'rate_limits:\n  per_token:\n    max_calls_per_day: 2\n' });
  fixture = await startFixtureUpstream();
}, 120_000);
afterAll(async () => {
  await h.stop();
  await fixture?.close();
});

describe('RATE_LIMITED', () => {
  it('carries retry_after_s in _meta["killswitch/decision"]', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { memory: { url: fixture.url } } });
    const client = await h.client(gateway, token);
    for (let i = 0; i < 2; i++) {
      const r = (await client.callTool({ name: 'read_graph', arguments: {} })) as CallToolResult;
      expect(r.isError, textOf(r)).toBeFalsy();
    }
    const limited = (await client.callTool({ name: 'read_graph', arguments: {} })) as CallToolResult;
    expect(limited.isError).toBe(true);
    expect(textOf(limited)).toMatch(/^RATE_LIMITED: /);
    const decision = limited._meta?.['killswitch/decision'] as { outcome?: string; code?: string; retry_after_s?: unknown } | undefined;
    expect(decision).toMatchObject({ outcome: 'denied', code: 'RATE_LIMITED' });
    expect(decision?.retry_after_s).toEqual(expect.any(Number));
    expect(decision?.retry_after_s as number).toBeGreaterThan(0);
    expect(decision?.retry_after_s as number).toBeLessThanOrEqual(86_400);
  });
});
