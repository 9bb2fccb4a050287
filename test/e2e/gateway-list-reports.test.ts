import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/gateway.js';
import { bearer } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';
import { type FixtureUpstream, GatewayHarness, startFixtureUpstream } from './gateway-harness.js';

// Every tools/list, resources/list, resources/templates/list and prompts/list needs the control plane's
// answer for the agent's token (POST /v1/gateway/tools): an agent that connects and lists all four cost
// four reports, and one listing in a loop a report each time. The gateway shares one report between the
// lists of a token (in flight, then for `reportReuseMs`), and the control plane limits reports per token
// (TOO_MANY_TOOL_REPORTS), which the agent reads as RATE_LIMITED.

const LIMIT = 10;
const h = new GatewayHarness();
let fixture: FixtureUpstream;

beforeAll(async () => {
  await h.start({ policyExtra: `rate_limits:\n  per_token:\n    max_tool_reports_per_minute: ${LIMIT}\n` });
  fixture = await startFixtureUpstream({ resources: [{ uri: 'mem://plans', text: 'plans' }] });
}, 120_000);
afterAll(async () => {
  await fixture?.close();
  await h.stop();
});

/** Counts the tool reports the gateway sends (the real requests still go out). */
function countReports(g: Gateway): { n: number } {
  const counter = { n: 0 };
  const real = g.controlPlane.reportTools.bind(g.controlPlane);
  g.controlPlane.reportTools = (...args: Parameters<typeof real>) => {
    counter.n++;
    return real(...args);
  };
  return counter;
}

describe('tool reports of agent lists', () => {
  it('an agent that lists tools, resources, templates and prompts costs one report; listing again asks again; an upstream change is reported, not served the kept answer', async () => {
    const token = await h.token('ro');
    // A long reuse time, so that a slow machine cannot make this test about timing.
    const gateway = await h.gateway({ mcpServers: { memory: { url: fixture.url } }, killswitch: { reportReuseMs: 60_000 } });
    const reports = countReports(gateway);
    const client = await h.client(gateway, token);

    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(expect.arrayContaining(['read_graph', 'search_nodes']));
    expect((await client.listResources()).resources.map((r) => r.uri)).toEqual(['mem://plans']);
    await client.listResourceTemplates();
    expect((await client.listPrompts()).prompts.map((p) => p.name)).toEqual(['summarise_graph']);
    expect(reports.n).toBe(1);

    // The same agent listing again asks the control plane again (after an approval it must see it).
    await client.listTools();
    expect(reports.n).toBe(2);

    // An upstream changes a tool: the gateway reports the new definition at once (the control plane
    // holds it as pending), and the agent's next list is not answered from what was reported before.
    await fixture.setDescription('read_graph', 'Read the entire knowledge graph (v2).');
    await until(
      async () => {
        const res = await h.app.inject({ url: '/v1/tools?server=memory&status=pending', headers: bearer(h.owner) });
        return (res.json().tools as Array<{ tool: string }>).some((r) => r.tool === 'read_graph');
      },
      30_000,
      'the changed read_graph reported to the control plane',
    );
    // Another agent of the token, which has listed nothing yet, would otherwise be served the kept answer.
    const other = await h.client(gateway, token);
    const before = reports.n;
    const shown = (await other.listTools()).tools.map((t) => t.name);
    expect(shown).toContain('search_nodes');
    expect(shown).not.toContain('read_graph');
    expect(reports.n).toBeGreaterThan(before);
  });

  it("lists of one token at once share one report", async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { memory: { url: fixture.url } }, killswitch: { reportReuseMs: 60_000 } });
    const reports = countReports(gateway);
    const client = await h.client(gateway, token);
    await Promise.all([client.listResources(), client.listPrompts(), client.listResourceTemplates(), client.listTools()]);
    expect(reports.n).toBe(1);
  });

  it('over the control plane\'s limit of tool reports: the agent reads RATE_LIMITED with when to retry, not DEPENDENCY_UNAVAILABLE', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { memory: { url: fixture.url } } });
    const client = await h.client(gateway, token);
    let err: Error | undefined;
    // Each tools/list of the same agent reports again: the limit is reached within LIMIT + 1 lists.
    for (let i = 0; i <= LIMIT && !err; i++) {
      err = await client.listTools().then(
        () => undefined,
        (e: Error) => e,
      );
    }
    expect(err?.message).toMatch(/^MCP error -32603: RATE_LIMITED: cannot list tools now: /);
    expect((err as Error & { data?: unknown }).data).toEqual({ code: 'RATE_LIMITED' });
    expect(err?.message).toMatch(/retry after \d+ s/);
    // Resources and prompts are refused the same way while the window lasts.
    const resources = await client.listResources().then(
      () => undefined,
      (e: Error) => e,
    );
    expect(resources?.message).toMatch(/^MCP error -32603: RATE_LIMITED: cannot list resources now: /);
  });
});
