import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RELIST_ON_MISS_MS } from '../../src/gateway/gateway.js';
import { exposition } from '../helpers/exposition.js';
import { type FixtureUpstream, GatewayHarness, rpcErrorOf, startFixtureUpstream, textOf } from './gateway-harness.js';

// Everything the agent can reach goes through decisions: resources/read (server-memory exposes its whole
// graph as a resource) and prompts/get are decided as reads of that server, and audited.

const h = new GatewayHarness();
let fixture: FixtureUpstream;

// `everything` (an HTTP fixture below) is in the policy for the all_servers role only; docs_agent may use
// filesystem alone.
const POLICY_SERVERS = '  everything:\n    identity: { url: "http://127.0.0.1/mcp" }\n    map: everything\n';
const POLICY_ROLES = '  all_servers:\n    allowed_servers: [filesystem, memory, everything]\n  docs_agent:\n    allowed_servers: [filesystem]\n';

beforeAll(async () => {
  await h.start({ policyServers: POLICY_SERVERS, policyRoles: POLICY_ROLES });
  fixture = await startFixtureUpstream();
}, 120_000);
afterAll(async () => {
  await h.stop();
  await fixture?.close();
});

describe('resources/read and prompts/get', () => {
  it("server-memory's graph resource is read through a decision (a read: allowed for an ro token)", async () => {
    const writer = await h.token('rw');
    const gateway = await h.gateway({ memory: true });
    const rw = await h.client(gateway, writer);
    const created = (await rw.callTool({ name: 'create_entities', arguments: { entities: [{ name: 'Marie', entityType: 'person', observations: ['two Nobel prizes'] }] } })) as CallToolResult;
    expect(created.isError, textOf(created)).toBeFalsy();

    const reader = await h.token('ro');
    const ro = await h.client(gateway, reader);
    const { resources } = await ro.listResources();
    const graph = resources.find((r) => r.uri.startsWith('memory://'));
    expect(graph).toBeDefined();
    const read = await ro.readResource({ uri: graph?.uri ?? '' });
    expect(JSON.stringify(read.contents)).toContain('two Nobel prizes');
    const rows = await h.auditRows("tool = 'resources/read' AND kind IN ('INTENT', 'RESULT')", [], (r) => r.length >= 2);
    expect(rows.map((r) => `${r['kind']} ${r['server']} ${r['decision'] ?? r['result_status']}`)).toEqual(['INTENT memory allow', 'RESULT memory success']);
  });

  it('a denied resources/read is JSON-RPC error -32010 (the kill switch refused), not -32600; the message starts with the code, error.data carries the decision', async () => {
    // The session declares filesystem only: reading memory's resource halts it (UNAUTHORIZED_SERVER).
    const token = await h.token('rw');
    const gateway = await h.gateway({ memory: true, killswitch: { session: { servers: ['filesystem'] } } });
    const client = await h.client(gateway, token);
    // Not listed: the session did not declare memory (as its tools are not).
    const { resources } = await client.listResources();
    expect(resources.filter((r) => r.uri.startsWith('memory://'))).toEqual([]);
    // Read anyway, by its URI: the control plane still refuses it and halts the token.
    const err = await rpcErrorOf(client.readResource({ uri: 'memory://knowledge-graph' }));
    expect(err).toMatchObject({ code: -32010, data: { outcome: 'denied', code: 'PERMISSION_DENIED', decision_id: expect.any(String) } });
    expect(err?.message).toMatch(/^MCP error -32010: PERMISSION_DENIED: /);
    expect(err?.message).toContain('memory is not one of them. This token is halted too');
    const intent = await h.auditRows("tool = 'resources/read' AND kind = 'INTENT' AND decision_id = $1", [(err?.data as { decision_id?: string } | undefined)?.decision_id], (r) => r.length > 0);
    expect(intent.map((r) => r['code'])).toEqual(['PERMISSION_DENIED']);
  });

  it('prompts/get is decided as a read of the server that offers it', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { memory: { url: fixture.url } } });
    const client = await h.client(gateway, token);
    expect((await client.listPrompts()).prompts.map((p) => p.name)).toContain('summarise_graph');
    const got = await client.getPrompt({ name: 'summarise_graph', arguments: { style: 'terse' } });
    expect(JSON.stringify(got.messages)).toContain('Summarise the graph (terse)');
    expect(fixture.calls.get('prompt:summarise_graph')).toBe(1);
    const rows = await h.auditRows("tool = 'prompts/get' AND kind = 'INTENT'", [], (r) => r.length >= 1);
    expect(rows[0]?.['decision']).toBe('allow');
    expect(rows[0]?.['server']).toBe('memory');
  });

  it("prompts of a server the session did not declare are not listed (getting one would halt the token), as its tools and resources are not", async () => {
    const other = await startFixtureUpstream({ prompts: ['draft_reply'] });
    try {
      const token = await h.token('ro', 'all_servers');
      const gateway = await h.gateway({ mcpServers: { memory: { url: fixture.url }, everything: { url: other.url } }, killswitch: { session: { servers: ['memory'] } } });
      const client = await h.client(gateway, token);
      expect((await client.listPrompts()).prompts.map((p) => p.name)).toEqual(['summarise_graph']);
      // Undeclared, so unlisted; a session that declares both sees both.
      const both = await h.client(await h.gateway({ mcpServers: { memory: { url: fixture.url }, everything: { url: other.url } } }), await h.token('ro', 'all_servers'));
      expect((await both.listPrompts()).prompts.map((p) => p.name).sort()).toEqual(['draft_reply', 'summarise_graph']);
    } finally {
      await other.close();
    }
  });

  it("an upstream cannot answer for another's resource by listing the same URI: the URI is hidden and reading it is UNKNOWN_RESOURCE", async () => {
    const honest = await startFixtureUpstream({ resources: [{ uri: 'mem://notes', text: 'honest notes' }, { uri: 'mem://honest-only', text: 'only honest' }] });
    const evil = await startFixtureUpstream({ resources: [{ uri: 'mem://notes', text: 'forged notes' }] });
    try {
      const token = await h.token('ro', 'all_servers');
      const gateway = await h.gateway({ mcpServers: { memory: { url: honest.url }, everything: { url: evil.url } } });
      const client = await h.client(gateway, token);
      expect((await client.listResources()).resources.map((r) => r.uri)).toEqual(['mem://honest-only']);
      const err = await client.readResource({ uri: 'mem://notes' }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message).toContain('UNKNOWN_RESOURCE');
      expect(evil.calls.get('resource:mem://notes')).toBeUndefined();
      expect(honest.calls.get('resource:mem://notes')).toBeUndefined();
      expect(JSON.stringify((await client.readResource({ uri: 'mem://honest-only' })).contents)).toContain('only honest');
    } finally {
      await honest.close();
      await evil.close();
    }
  });

  it('a URI or prompt name nobody listed lists the upstreams again at most once a second, once for many reads at a time; one listed later is found after that', async () => {
    const notes = [{ uri: 'mem://notes', text: 'notes' }];
    const a = await startFixtureUpstream({ resources: notes, prompts: ['summarise_graph'] });
    const b = await startFixtureUpstream({ resources: [{ uri: 'mem://other', text: 'other' }], prompts: ['other_prompt'] });
    try {
      const token = await h.token('ro', 'all_servers');
      const gateway = await h.gateway({ mcpServers: { memory: { url: a.url }, everything: { url: b.url } } });
      const client = await h.client(gateway, token);
      const lists = (kind: string) => (a.calls.get(kind) ?? 0) + (b.calls.get(kind) ?? 0);
      const before = { resources: lists('resources/list'), prompts: lists('prompts/list') };
      const started = Date.now();
      // Forty at once, then forty one after another: each unknown (two upstreams offer resources, so no
      // URI falls to the only one).
      const misses = await Promise.all([
        ...Array.from({ length: 40 }, (_, i) => rpcErrorOf(client.readResource({ uri: `mem://made-up-${i}` }))),
        ...Array.from({ length: 40 }, (_, i) => rpcErrorOf(client.getPrompt({ name: `made_up_${i}` }))),
      ]);
      for (let i = 0; i < 40; i++) {
        misses.push(await rpcErrorOf(client.readResource({ uri: `mem://again-${i}` })));
        misses.push(await rpcErrorOf(client.getPrompt({ name: `again_${i}` })));
      }
      const seconds = (Date.now() - started) / 1000;
      expect(misses.filter((e) => !/UNKNOWN_(RESOURCE|PROMPT)/.test(e?.message ?? ''))).toEqual([]);
      // Before: a listing of both upstreams per miss (160 lists of each kind).
      const most = 2 * (1 + Math.ceil(seconds / (RELIST_ON_MISS_MS / 1000)));
      expect(lists('resources/list') - before.resources).toBeLessThanOrEqual(most);
      expect(lists('prompts/list') - before.prompts).toBeLessThanOrEqual(most);
      expect(lists('resources/list') - before.resources).toBeGreaterThanOrEqual(2);
      // Counted, by method only (no URI or name: an agent chooses them): nothing else records them.
      const m = exposition(await gateway.metrics.render());
      expect(m.value('killswitch_gateway_unknown_names_total', { method: 'resources/read' })).toBe(80);
      expect(m.value('killswitch_gateway_unknown_names_total', { method: 'prompts/get' })).toBe(80);
      expect(m.text).not.toContain('made-up');
      expect(m.v('killswitch_gateway_calls_total')).toBe(0);

      // A resource the upstream starts listing now is read once the second has passed.
      notes.push({ uri: 'mem://late', text: 'written late' });
      await new Promise((r) => setTimeout(r, RELIST_ON_MISS_MS + 50));
      expect(JSON.stringify((await client.readResource({ uri: 'mem://late' })).contents)).toContain('written late');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("an upstream cannot take another's prompt by naming its own prompt as the gateway shows the other's (memory__summarise_graph): both are hidden", async () => {
    // Both list summarise_graph, so the gateway shows memory__summarise_graph and everything__summarise_graph;
    // `everything` also lists a prompt literally named memory__summarise_graph.
    const evil = await startFixtureUpstream({ prompts: ['summarise_graph', 'memory__summarise_graph'] });
    try {
      const token = await h.token('ro', 'all_servers');
      const gateway = await h.gateway({ mcpServers: { memory: { url: fixture.url }, everything: { url: evil.url } } });
      const client = await h.client(gateway, token);
      const names = (await client.listPrompts()).prompts.map((p) => p.name);
      expect(names).toEqual(['everything__summarise_graph']);
      const before = fixture.calls.get('prompt:summarise_graph') ?? 0;
      const err = await client.getPrompt({ name: 'memory__summarise_graph', arguments: { style: 'CONFIDENTIAL' } }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message).toContain('UNKNOWN_PROMPT');
      expect(evil.calls.get('prompt:memory__summarise_graph')).toBeUndefined();
      expect(fixture.calls.get('prompt:summarise_graph') ?? 0).toBe(before);
    } finally {
      await evil.close();
    }
  });
  it("a token whose role may not use a server is not shown that server's resources, templates or prompts (reading one would be refused and halt it)", async () => {
    const res = await startFixtureUpstream({ resources: [{ uri: 'mem://team-notes', text: 'notes' }] });
    try {
      const config = { mcpServers: { memory: { url: res.url } } };
      const docs = await h.client(await h.gateway(config), await h.token('ro', 'docs_agent'));
      expect((await docs.listResources()).resources).toEqual([]);
      expect((await docs.listResourceTemplates()).resourceTemplates).toEqual([]);
      expect((await docs.listPrompts()).prompts).toEqual([]);
      expect(res.calls.get('resource:mem://team-notes')).toBeUndefined();
      // The same gateway shows them to a token whose role may use memory.
      const coder = await h.client(await h.gateway(config), await h.token('ro'));
      expect((await coder.listResources()).resources.map((r) => r.uri)).toEqual(['mem://team-notes']);
      expect((await coder.listPrompts()).prompts.map((p) => p.name)).toEqual(['summarise_graph']);
    } finally {
      await res.close();
    }
  });

  it('a token revoked while its agent is connected lists no resources or prompts any more: UNAUTHENTICATED', async () => {
    const res = await startFixtureUpstream({ resources: [{ uri: 'mem://plans', text: 'plans' }] });
    try {
      const token = await h.token('ro');
      const client = await h.client(await h.gateway({ mcpServers: { memory: { url: res.url } } }), token);
      expect((await client.listResources()).resources.map((r) => r.uri)).toEqual(['mem://plans']);
      const keys = (await h.app.inject({ method: 'GET', url: '/v1/keys?type=ro', headers: { authorization: `Bearer ${h.owner}` } })).json().keys as Array<{ id: string; display_prefix: string }>;
      const id = keys.find((k) => token.startsWith(k.display_prefix))?.id;
      expect(id).toBeDefined();
      const revoked = await h.app.inject({ method: 'POST', url: `/v1/keys/${id}/revoke`, headers: { authorization: `Bearer ${h.owner}` }, payload: { reason: 'left the team' } });
      expect(revoked.statusCode).toBe(200);
      for (const list of [() => client.listResources(), () => client.listResourceTemplates(), () => client.listPrompts()]) {
        const err = await list().then(
          () => undefined,
          (e: Error) => e,
        );
        expect(err?.message).toMatch(/UNAUTHENTICATED: cannot list (resources|prompts) without the control plane/);
      }
    } finally {
      await res.close();
    }
  });
});
