import { existsSync, readFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import {
  type CallToolResult,
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  EmptyResultSchema,
  type JSONRPCMessage,
  LATEST_PROTOCOL_VERSION,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_PAGES } from '../../src/gateway/upstream.js';
import { until } from '../helpers/unleash.js';
import { capturedLog, GatewayHarness, rpcErrorOf, textOf } from './gateway-harness.js';

// What a real MCP client and a real MCP server (the SDK's, both) expect of the gateway, against the MCP
// version the installed SDK implements: paging, structured results, the methods the gateway answers
// itself, the ones it refuses, requests an upstream makes to the client side, notifications it does
// not pass on, version negotiation and cancellation. The upstream is gateway-conformance-upstream.mjs,
// run as the policy's server "everything" (its flags exist in the test Unleash).

const CONF_UPSTREAM = fileURLToPath(new URL('./gateway-conformance-upstream.mjs', import.meta.url));
const h = new GatewayHarness();
const policyServer = (name: string) =>
  `  ${name}:\n    identity: { command: ${JSON.stringify(process.execPath)}, args: [${JSON.stringify(CONF_UPSTREAM)}] }\n    class: storage\n    trust_annotations: true\n`;
// "sqlite" is a second copy of it, for names two upstreams share.
const POLICY_SERVERS = policyServer('everything') + policyServer('sqlite');
// conf_reader may use the conformance upstreams; code_agent (the harness's role) may not.
const POLICY_ROLES = '  conf_reader:\n    allowed_servers: [everything, sqlite]\n';

beforeAll(async () => {
  await h.start({ policyServers: POLICY_SERVERS, policyRoles: POLICY_ROLES });
}, 120_000);
afterAll(() => h.stop());

let files = 0;
const seenFile = () => join(h.scratch, `seen-${++files}.jsonl`);
/** What the upstream saw, one entry per request (gateway-conformance-upstream.mjs). */
const seenIn = (file: string): Array<Record<string, unknown>> =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];
const upstreamConfig = (seen: string) => ({ filesystem: { disabled: true }, everything: { command: process.execPath, args: [CONF_UPSTREAM], env: { CONF_UPSTREAM_SEEN: seen } } });
const rejection = <T>(p: Promise<T>) =>
  p.then(
    () => undefined,
    (e: Error & { code?: number }) => e,
  );

/** An agent that offers sampling, elicitation and roots, and counts every such request it gets. */
async function generousAgent(gateway: Awaited<ReturnType<GatewayHarness['gateway']>>, token: string) {
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await gateway.attach(serverSide, { agentToken: token });
  const client = new Client({ name: 'conformance-agent', version: '1.0.0' }, { capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } } });
  const asked: string[] = [];
  client.setRequestHandler(CreateMessageRequestSchema, async () => {
    asked.push('sampling/createMessage');
    return { role: 'assistant', content: { type: 'text', text: 'agent-model-answer' }, model: 'agent-model' };
  });
  client.setRequestHandler(ElicitRequestSchema, async () => {
    asked.push('elicitation/create');
    return { action: 'accept', content: { answer: 'agent-user-answer' } };
  });
  client.setRequestHandler(ListRootsRequestSchema, async () => {
    asked.push('roots/list');
    return { roots: [{ uri: 'file:///home/agent-user' }] };
  });
  const logs: unknown[] = [];
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(n.params));
  await client.connect(clientSide);
  h.clients.push(client);
  return { client, asked, logs };
}

describe('tools/list paging and structured results', () => {
  it('an upstream that pages tools/list (nextCursor) is read to its last page; the agent gets every tool in one answer, without nextCursor, and a cursor it sends anyway is -32602', async () => {
    const seen = seenFile();
    const gateway = await h.gateway({ mcpServers: upstreamConfig(seen) });
    const { client } = await generousAgent(gateway, await h.token('ro', 'conf_reader'));
    const list = await client.listTools();
    expect(list.tools.map((t) => t.name).sort()).toEqual(['ask_client', 'echo', 'progress', 'report']);
    expect(list.nextCursor).toBeUndefined();
    const cursors = seenIn(seen)
      .filter((s) => s['method'] === 'tools/list')
      .map((s) => s['cursor']);
    expect(cursors.slice(0, 3)).toEqual(['', 'page-2', 'page-3']);
    // The gateway gave no cursor, so any cursor is invalid (-32602), for each of its lists.
    const lists = [
      ['tools/list', client.listTools({ cursor: 'page-2' })],
      ['resources/list', client.listResources({ cursor: 'page-2' })],
      ['resources/templates/list', client.listResourceTemplates({ cursor: 'page-2' })],
    ] as const;
    for (const [method, pending] of lists) {
      const err = await rejection(pending as Promise<unknown>);
      expect(err?.code, method).toBe(-32602);
      expect(err?.message, method).toContain(`answers ${method} in one page and gave no cursor`);
    }
    // A tool of the last page is called like any other.
    const echo = (await client.callTool({ name: 'echo', arguments: { text: 'from page one' } })) as CallToolResult;
    expect(echo.isError, textOf(echo)).toBeFalsy();
    expect(textOf(echo)).toBe('from page one');
  });

  it('an upstream whose pages never end is read for MAX_PAGES pages; the rest is left out (a call to it is UNKNOWN_TOOL) and the operator is warned once', async () => {
    const seen = seenFile();
    const { log, lines } = capturedLog();
    const config = upstreamConfig(seen);
    const gateway = await h.gateway({ mcpServers: { ...config, everything: { ...config.everything, env: { CONF_UPSTREAM_SEEN: seen, CONF_UPSTREAM_ENDLESS_PAGES: '1' } } } }, log);
    const { client } = await generousAgent(gateway, await h.token('ro', 'conf_reader'));
    const names = (await client.listTools()).tools.map((t) => t.name);
    // '', page-2, page-3 and then more-1 ... more-47: 50 pages, 4 + 47 tools.
    const read = MAX_PAGES - 3;
    expect(names.length).toBe(4 + read);
    expect(names).toContain(`more_${read}`);
    expect(names).not.toContain(`more_${read + 1}`);
    expect(await rpcErrorOf(client.callTool({ name: `more_${read + 1}` }))).toMatchObject({ code: -32602, data: { code: 'UNKNOWN_TOOL' } });
    await client.listTools();
    const warned = lines.filter((l) => String(l['msg']).includes(`in more than ${MAX_PAGES} pages`));
    expect(warned.map((l) => [l['server'], l['method'], l['items']])).toEqual([['everything', 'tools/list', 4 + read]]);
  });

  it('a tool with an outputSchema is listed with it, and its structuredContent reaches the agent (the SDK client checks it against the schema)', async () => {
    const seen = seenFile();
    const gateway = await h.gateway({ mcpServers: upstreamConfig(seen) });
    const { client } = await generousAgent(gateway, await h.token('ro', 'conf_reader'));
    const report = (await client.listTools()).tools.find((t) => t.name === 'report');
    expect(report?.outputSchema).toEqual({ type: 'object', properties: { count: { type: 'number' }, label: { type: 'string' } } });
    const result = (await client.callTool({ name: 'report' })) as CallToolResult;
    expect(result.isError, textOf(result)).toBeFalsy();
    expect(result.structuredContent).toEqual({ count: 3, label: 'three' });
  });
});

describe('tool names two upstreams share', () => {
  it('are namespaced <server>__<tool>; one that would then be over the 128 characters of a valid MCP tool name is hidden, and calling it is UNKNOWN_TOOL', async () => {
    const seen = seenFile();
    // A 120-character name: sqlite__ makes it 128 (shown), everything__ 132 (hidden).
    const long = 'l'.repeat(120);
    const fake = { command: process.execPath, args: [CONF_UPSTREAM], env: { CONF_UPSTREAM_SEEN: seen, CONF_UPSTREAM_LONG_TOOL: '120' } };
    const { log, lines } = capturedLog();
    const gateway = await h.gateway({ mcpServers: { filesystem: { disabled: true }, everything: fake, sqlite: fake } }, log);
    const { client } = await generousAgent(gateway, await h.token('ro', 'conf_reader'));
    const names = (await client.listTools()).tools.map((t) => t.name).sort();
    expect(names).toEqual([...['ask_client', 'echo', 'progress', 'report'].flatMap((t) => [`everything__${t}`, `sqlite__${t}`]), `sqlite__${long}`].sort());
    for (const name of names) expect(name).toMatch(/^[A-Za-z0-9_.-]{1,128}$/);
    const hidden = lines.filter((l) => String(l['msg']).startsWith('upstream tool hidden from agents') && l['tool'] === long);
    expect(hidden.map((l) => [l['server'], l['reason']])).toEqual([['everything', 'invalid-name']]);
    expect(await rpcErrorOf(client.callTool({ name: `everything__${long}` }))).toMatchObject({ code: -32602, data: { code: 'UNKNOWN_TOOL' } });
    const echo = (await client.callTool({ name: 'sqlite__echo', arguments: { text: 'the second copy' } })) as CallToolResult;
    expect(textOf(echo)).toBe('the second copy');
    expect(seenIn(seen).filter((s) => s['method'] === 'tools/call').map((s) => s['name'])).toEqual(['echo']);
  });
});

describe('methods the gateway answers itself, and those it refuses', () => {
  it('ping and logging/setLevel are answered by the gateway; neither reaches the upstream', async () => {
    const seen = seenFile();
    const gateway = await h.gateway({ mcpServers: upstreamConfig(seen) });
    const { client } = await generousAgent(gateway, await h.token('ro', 'conf_reader'));
    expect(await client.ping()).toEqual({});
    expect(await client.setLoggingLevel('error')).toEqual({});
    expect(seenIn(seen).filter((s) => s['method'] !== 'tools/list')).toEqual([]);
  });

  it('completion/complete, resources/subscribe and unsubscribe, tasks/list and a made-up method are refused at once with -32601 naming the method; nothing reaches the upstream', async () => {
    const seen = seenFile();
    const gateway = await h.gateway({ mcpServers: upstreamConfig(seen) });
    const { client } = await generousAgent(gateway, await h.token('ro', 'conf_reader'));
    const refusals = [
      ['completion/complete', client.complete({ ref: { type: 'ref/resource', uri: 'conf://secret' }, argument: { name: 'x', value: 'y' } })],
      ['resources/subscribe', client.subscribeResource({ uri: 'conf://secret' })],
      ['resources/unsubscribe', client.unsubscribeResource({ uri: 'conf://secret' })],
      ['tasks/list', client.request({ method: 'tasks/list', params: {} }, EmptyResultSchema)],
      ['vendor/whatever', client.request({ method: 'vendor/whatever', params: {} }, EmptyResultSchema)],
    ] as const;
    for (const [method, pending] of refusals) {
      const err = await rejection(pending as Promise<unknown>);
      expect(err?.code, method).toBe(-32601);
      expect(err?.message, method).toContain(`does not support "${method}"`);
    }
    expect(seenIn(seen).filter((s) => s['method'] !== 'tools/list')).toEqual([]);
  });

  it("resources/read and resources/subscribe of a server the token may not use: the read is decided and denied (halting the token), the subscribe refused; the upstream sees neither", async () => {
    const seen = seenFile();
    const gateway = await h.gateway({ mcpServers: upstreamConfig(seen) });
    const { client } = await generousAgent(gateway, await h.token('ro'));
    expect((await client.listResources()).resources).toEqual([]);
    const read = await rejection(client.readResource({ uri: 'conf://secret' }));
    expect(read?.message).toMatch(/PERMISSION_DENIED: role code_agent may not use server everything/);
    expect(read?.message).not.toContain('conformance-resource-secret');
    const subscribe = await rejection(client.subscribeResource({ uri: 'conf://secret' }));
    expect(subscribe?.code).toBe(-32601);
    expect(seenIn(seen).filter((s) => s['method'] !== 'tools/list')).toEqual([]);
  });
});

describe('requests and notifications of an upstream', () => {
  it('sampling/createMessage, elicitation/create and roots/list from an upstream never reach the agent (even one offering them): refused at once with -32601 naming the method, warned once per method', async () => {
    const seen = seenFile();
    const { log, lines } = capturedLog();
    const gateway = await h.gateway({ mcpServers: upstreamConfig(seen) }, log);
    const { client, asked } = await generousAgent(gateway, await h.token('ro', 'conf_reader'));
    const methods = ['sampling/createMessage', 'elicitation/create', 'roots/list'];
    for (const method of [...methods, 'sampling/createMessage']) {
      const r = (await client.callTool({ name: 'ask_client', arguments: { method } })) as CallToolResult;
      expect(r.isError, textOf(r)).toBeFalsy();
      expect(textOf(r)).toMatch(/^refused: -32601 /);
      expect(textOf(r)).toContain(`does not pass "${method}" on to its agents`);
    }
    expect(asked).toEqual([]);
    const refused = seenIn(seen).filter((s) => s['method'] === 'ask_client');
    expect(refused.map((s) => [s['asked'], s['code']])).toEqual([...methods, 'sampling/createMessage'].map((m) => [m, -32601]));
    const warned = lines.filter((l) => String(l['msg']).startsWith('upstream asked the gateway for'));
    expect(warned.map((l) => [l['server'], l['method']])).toEqual(methods.map((m) => ['everything', m]));
  });

  it("an upstream's progress and log notifications are not passed to the agent: the upstream gets no progress token, the agent no log message of it; the call completes", async () => {
    const seen = seenFile();
    const gateway = await h.gateway({ mcpServers: upstreamConfig(seen) });
    const { client, logs } = await generousAgent(gateway, await h.token('ro', 'conf_reader'));
    const progress: unknown[] = [];
    const r = (await client.callTool({ name: 'progress' }, undefined, { onprogress: (p) => void progress.push(p) })) as CallToolResult;
    expect(r.isError, textOf(r)).toBeFalsy();
    expect(textOf(r)).toBe('progress done');
    expect(seenIn(seen).find((s) => s['method'] === 'tools/call')?.['progressToken']).toBeNull();
    expect(progress).toEqual([]);
    expect(JSON.stringify(logs)).not.toContain('upstream-log-secret');
  });
});

describe('protocol version negotiation', () => {
  /** A raw JSON-RPC session: what the gateway answers to each message, by id. */
  async function rawSession(gateway: Awaited<ReturnType<GatewayHarness['gateway']>>, protocolVersion: string, then: JSONRPCMessage[]) {
    const [c, s] = InMemoryTransport.createLinkedPair();
    await gateway.attach(s, { agentToken: await h.token('ro', 'conf_reader') });
    const answers = new Map<unknown, Record<string, unknown>>();
    c.onmessage = (m) => {
      if ('id' in m) answers.set(m.id, m as unknown as Record<string, unknown>);
    };
    await c.start();
    await c.send({ jsonrpc: '2.0', id: 'init', method: 'initialize', params: { protocolVersion, capabilities: {}, clientInfo: { name: 'raw-agent', version: '1' } } });
    await until(() => answers.has('init'), 5000, 'the initialize answer');
    await c.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    for (const m of then) await c.send(m);
    const ids = then.filter((m) => 'id' in m).map((m) => (m as { id: unknown }).id);
    await until(() => ids.every((id) => answers.has(id)), 10_000, 'every answer');
    await c.close();
    return answers;
  }

  it('an agent asking for 2024-11-05 gets it; one asking for a version the SDK does not know gets the latest it does; a task-augmented tools/call is refused without running', async () => {
    const seen = seenFile();
    const gateway = await h.gateway({ mcpServers: upstreamConfig(seen) });
    const old = await rawSession(gateway, '2024-11-05', [{ jsonrpc: '2.0', id: 'list', method: 'tools/list', params: {} }]);
    expect(old.get('init')?.['result']).toMatchObject({ protocolVersion: '2024-11-05' });
    expect(old.get('list')?.['result']).toMatchObject({ tools: expect.any(Array) });
    expect((old.get('list')?.['result'] as { tools?: unknown[] } | undefined)?.tools).toHaveLength(4);

    const later = await rawSession(gateway, '2099-01-01', [{ jsonrpc: '2.0', id: 'task', method: 'tools/call', params: { name: 'echo', arguments: { text: 'as a task' }, task: { ttl: 1000 } } }]);
    expect(later.get('init')?.['result']).toMatchObject({ protocolVersion: LATEST_PROTOCOL_VERSION });
    expect(later.get('task')?.['error']).toMatchObject({ message: expect.stringMatching(/does not support task creation/) });
    expect(seenIn(seen).filter((s) => s['method'] === 'tools/call')).toEqual([]);
  });
});

describe('notifications/cancelled', () => {
  // A proxy in front of the control plane that holds every decision until the test lets it through.
  let proxy: Server;
  let proxyUrl: string;
  const held: Array<() => void> = [];
  beforeAll(async () => {
    const target = new URL(h.url);
    proxy = createServer((req, res) => {
      const forward = () => {
        const out = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        });
        req.pipe(out);
      };
      if (req.method === 'POST' && req.url === '/v1/decisions') held.push(forward);
      else forward();
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    proxy?.closeAllConnections();
    await new Promise<void>((r) => (proxy ? proxy.close(() => r()) : r()));
  });

  it('a call the agent cancels while the control plane decides is not sent; its RESULT row says cancelled and that it did not run', async () => {
    const seen = seenFile();
    const gateway = await h.gateway({ mcpServers: upstreamConfig(seen), killswitch: { url: proxyUrl } });
    const { client } = await generousAgent(gateway, await h.token('ro', 'conf_reader'));
    const abort = new AbortController();
    const call = client.callTool({ name: 'echo', arguments: { text: 'cancelled-before-run' } }, undefined, { signal: abort.signal });
    await until(() => held.length > 0, 10_000, 'the decision to reach the control plane');
    abort.abort('the user pressed stop');
    expect(await rejection(call)).toBeInstanceOf(Error);
    for (const forward of held.splice(0)) forward();

    // The only cancelled echo of this file (the paging test's echo ran).
    const rows = await h.auditRows("kind = 'RESULT' AND tool = 'echo' AND result_status = 'cancelled'", [], (r) => r.length > 0, 10_000);
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows[0])).toContain('it was not sent to the upstream and did not run');
    expect(seenIn(seen).filter((s) => s['method'] === 'tools/call')).toEqual([]);
  });
});
