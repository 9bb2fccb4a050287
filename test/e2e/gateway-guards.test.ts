import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/unleash.js';
import { type FixtureUpstream, GatewayHarness, startFixtureUpstream, textOf } from './gateway-harness.js';

// The gateway's own result guards and the 80% warning, against a fixture upstream that can be slow and
// return many rows. The policy here allows 5 calls per session, so the 4th carries the 80% warning.

const h = new GatewayHarness();
let fixture: FixtureUpstream;

beforeAll(async () => {
  await h.start({ policyExtra: 'rate_limits:\n  global:\n    max_calls_per_session: 5\n    pause_at_percent: 80\n' });
  fixture = await startFixtureUpstream();
}, 120_000);
afterAll(async () => {
  await h.stop();
  await fixture?.close();
});

const memoryGateway = (killswitch: Record<string, unknown> = {}) => h.gateway({ mcpServers: { memory: { url: fixture.url } }, killswitch });

describe('result guards', () => {
  it('a call running over the max execution time is cancelled upstream, answered MAX_EXECUTION_TIME, and not retried', async () => {
    const token = await h.token('ro');
    const gateway = await memoryGateway({ servers: { memory: { maxExecutionSeconds: 0.5 } } });
    const client = await h.client(gateway, token);
    const before = fixture.calls.get('read_graph') ?? 0;
    // The upstream would answer after 5 s with the graph (no error): only the guard answers MAX_EXECUTION_TIME.
    const slow = (await client.callTool({ name: 'read_graph', arguments: { delay_ms: 5000 } })) as CallToolResult;
    expect(slow.isError).toBe(true);
    expect(textOf(slow)).toMatch(/^MAX_EXECUTION_TIME: /);
    await until(() => fixture.cancelled > 0, 3000, 'the upstream to see the cancellation');
    await new Promise((r) => setTimeout(r, 300));
    expect(fixture.calls.get('read_graph')).toBe(before + 1);
  });

  it('a result over the max rows is withheld naming MAX_ROWS', async () => {
    const token = await h.token('ro');
    const gateway = await memoryGateway({ servers: { memory: { maxRows: 10 } } });
    const client = await h.client(gateway, token);
    const few = (await client.callTool({ name: 'search_nodes', arguments: { count: 10 } })) as CallToolResult;
    expect(few.isError, textOf(few)).toBeFalsy();
    const many = (await client.callTool({ name: 'search_nodes', arguments: { count: 50 } })) as CallToolResult;
    expect(many.isError).toBe(true);
    expect(textOf(many)).toMatch(/^MAX_ROWS: the result has 50 rows/);
    expect(textOf(many)).not.toContain('node 49');
  });

  it('a result over the gateway size limit is withheld naming LARGE_RESULT', async () => {
    const token = await h.token('ro');
    const gateway = await memoryGateway({ limits: { maxResultBytes: 200 } });
    const client = await h.client(gateway, token);
    const big = (await client.callTool({ name: 'search_nodes', arguments: { count: 40 } })) as CallToolResult;
    expect(big.isError).toBe(true);
    expect(textOf(big)).toMatch(/^LARGE_RESULT: /);
  });
});

describe('limit warnings', () => {
  it('the 80% warning of the decision is appended to the tool result the agent reads', async () => {
    const token = await h.token('ro');
    const gateway = await memoryGateway();
    const client = await h.client(gateway, token);
    const texts: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = (await client.callTool({ name: 'read_graph', arguments: {} })) as CallToolResult;
      expect(r.isError, textOf(r)).toBeFalsy();
      texts.push(textOf(r));
    }
    expect(texts[0]).not.toContain('[killswitch warning]');
    expect(texts[3]).toContain('graph: Ada knows Grace');
    expect(texts[3]).toMatch(/\[killswitch warning\] .*\S/);
  });

  it('the 80% warning is also in the tool result\'s _meta, for an agent that reads only structuredContent and _meta', async () => {
    const token = await h.token('ro');
    const gateway = await memoryGateway();
    const client = await h.client(gateway, token);
    const metas: Array<Record<string, unknown> | undefined> = [];
    for (let i = 0; i < 4; i++) {
      const r = (await client.callTool({ name: 'read_graph', arguments: {} })) as CallToolResult;
      expect(r.isError, textOf(r)).toBeFalsy();
      metas.push(r._meta);
    }
    expect(metas[0]?.['killswitch/warning']).toBeUndefined();
    const warning = metas[3]?.['killswitch/warning'];
    expect(typeof warning).toBe('string');
    expect(warning).toMatch(/4\/5 calls in this session, 80%/);
  });
});
