import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AgentSession } from '../../src/gateway/agent-session.js';
import { until } from '../helpers/unleash.js';
import { type FixtureUpstream, GatewayHarness, startFixtureUpstream, textOf } from './gateway-harness.js';

// One gateway, many agents: what one agent's tools/list costs must not grow with the number of agents
// connected (a platform's HTTP gateway serves hundreds; scripts/bench/gateway-agents.ts measures it).

const AGENTS = 30;
const h = new GatewayHarness();
let fixture: FixtureUpstream;

beforeAll(async () => {
  await h.start();
  fixture = await startFixtureUpstream();
}, 120_000);
afterAll(async () => {
  await fixture?.close();
  await h.stop();
});

describe('many agents on one gateway', () => {
  it(`${AGENTS} agents listing their tools at once cost at most two tools/list of the upstream, and each gets its tools`, async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { memory: { url: fixture.url } }, killswitch: { reportReuseMs: 60_000 } });
    const clients = await Promise.all(Array.from({ length: AGENTS }, () => h.client(gateway, token)));
    const before = fixture.calls.get('tools/list') ?? 0;
    const lists = await Promise.all(clients.map((c) => c.listTools()));
    for (const l of lists) expect(l.tools.map((t) => t.name)).toEqual(expect.arrayContaining(['read_graph', 'search_nodes']));
    // One read under way, one queued behind it for everyone who asked meanwhile.
    expect((fixture.calls.get('tools/list') ?? 0) - before).toBeLessThanOrEqual(2);
    // A later list reads the upstream again (it may have changed without saying so).
    await clients[0]?.listTools();
    expect((fixture.calls.get('tools/list') ?? 0) - before).toBeGreaterThan(0);
    await gateway.close();
  });

  it(`${AGENTS} agents of one token listing: the shared answer is compared with the other agents' lists once, not at every list`, async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { memory: { url: fixture.url } }, killswitch: { reportReuseMs: 60_000 } });
    const clients = await Promise.all(Array.from({ length: AGENTS }, () => h.client(gateway, token)));
    await clients[0]?.listTools();
    // Each look at an agent's declared scope is one comparison of a list with an agent's view.
    const scopes = vi.spyOn(AgentSession.prototype, 'scope', 'get');
    try {
      for (const c of clients.slice(1)) await c.listTools();
      // Before: each list compared the answer with every other agent that had listed (N²/2: 435 here).
      expect(scopes.mock.calls.length).toBeLessThan(3 * AGENTS);
    } finally {
      scopes.mockRestore();
    }
    await gateway.close();
  });

  it('the idle sweep leaves a session alone while one of its requests runs (a call waiting for an approval or a slow upstream), and closes it once idle', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { memory: { url: fixture.url } } });
    // 30 minutes in production; the call below lasts several times this.
    const front = await gateway.listenHttp({ port: 0, idleSessionMs: 200 });
    const client = new Client({ name: 'slow-agent', version: '1' });
    try {
      await client.connect(new StreamableHTTPClientTransport(new URL(front.url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
      expect(gateway.agentCount).toBe(1);
      const slow = (await client.callTool({ name: 'read_graph', arguments: { delay_ms: 1500 } }, undefined, { timeout: 10_000 })) as CallToolResult;
      expect(slow.isError, textOf(slow)).toBeFalsy();
      expect(textOf(slow)).toContain('Ada knows Grace');
      expect(gateway.agentCount).toBe(1);
      // Nothing in flight and nothing sent: closed by the sweep.
      await until(() => gateway.agentCount === 0, 10_000, 'the idle session closed');
    } finally {
      await client.close().catch(() => {});
      await front.close();
      await gateway.close();
    }
  });
});
