import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AgentSession } from '../../src/gateway/agent-session.js';
import { type FixtureUpstream, GatewayHarness, startFixtureUpstream } from './gateway-harness.js';

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
});
