import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/unleash.js';
import { type FixtureUpstream, GatewayHarness, MEMORY_SERVER, rpcErrorOf, startFixtureUpstream } from './gateway-harness.js';

// The reference gateway's own codes (GATEWAY_CODES in src/errors.ts) that no other e2e test provokes:
// an agent cancelling a running call, a resource or prompt nobody offers, and a session refused by
// something at killswitch.url that is not the control plane.

const h = new GatewayHarness();
let fixture: FixtureUpstream;
let stub: Server;
let stubUrl: string;
const stubRequests: string[] = [];

beforeAll(async () => {
  await h.start();
  fixture = await startFixtureUpstream();
  // A proxy in front of the control plane that refuses everything with a plain-text 403 (no error code).
  stub = createServer((req, res) => {
    stubRequests.push(`${req.method} ${req.url}`);
    req.resume();
    res.writeHead(403, { 'content-type': 'text/plain' }).end('Forbidden by proxy');
  });
  await new Promise<void>((r) => stub.listen(0, '127.0.0.1', () => r()));
  stubUrl = `http://127.0.0.1:${(stub.address() as AddressInfo).port}`;
}, 120_000);
afterAll(async () => {
  await h.stop();
  await fixture?.close();
  stub?.closeAllConnections();
  await new Promise<void>((r) => (stub ? stub.close(() => r()) : r()));
});

/** The code at the start of an McpError's message (the SDK prefixes "MCP error <code>: "). */
const codeOfMessage = (err: Error) => /^(?:MCP error -?\d+: )?([A-Z_]+): /.exec(err.message)?.[1];
const rejection = <T>(p: Promise<T>) =>
  p.then(
    () => undefined,
    (e: Error) => e,
  );

// The code itself is in the answer the gateway makes, which an MCP client that cancelled never reads
// (test/unit/gateway-calls.test.ts asserts it); what an operator sees is the upstream stopping and the RESULT row.
describe('CANCELLED', () => {
  it('an agent cancels its running call: the upstream is told to stop, the RESULT row says cancelled, nothing is retried', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { filesystem: { disabled: true }, memory: { url: fixture.url } } });
    const client = await h.client(gateway, token);
    const before = fixture.calls.get('read_graph') ?? 0;
    const cancelledBefore = fixture.cancelled;
    const abort = new AbortController();
    const call = client.callTool({ name: 'read_graph', arguments: { delay_ms: 10_000 } }, undefined, { signal: abort.signal });
    // Abort only once the call runs upstream (it was allowed): a cancel before the decision runs nothing.
    await until(() => (fixture.calls.get('read_graph') ?? 0) > before, 10_000, 'the call to reach the upstream');
    abort.abort('the user pressed stop');
    const err = await rejection(call);
    expect(err).toBeInstanceOf(Error);
    await until(() => fixture.cancelled > cancelledBefore, 5000, 'the upstream to see the cancellation');

    // The gateway reports the call as the agent's cancellation (status cancelled), not as a failure or a timeout.
    const rows = await h.auditRows("kind = 'RESULT' AND tool = 'read_graph'", [], (r) => r.length > 0);
    expect(rows.map((r) => r['result_status'])).toEqual(['cancelled']);
    expect(JSON.stringify(rows[0])).toContain('the agent cancelled the call');
    await new Promise((r) => setTimeout(r, 300));
    expect(fixture.calls.get('read_graph')).toBe(before + 1);
  });
});

describe('UNKNOWN_TOOL', () => {
  it('calling a tool no upstream offers is a JSON-RPC error (-32602) naming UNKNOWN_TOOL, as MCP asks of an unknown tool; nothing is decided or sent', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { filesystem: { disabled: true }, memory: { url: fixture.url } } });
    const client = await h.client(gateway, token);
    const err = await rpcErrorOf(client.callTool({ name: 'no_such_tool', arguments: {} }));
    expect(err).toMatchObject({ code: -32602, data: { code: 'UNKNOWN_TOOL' } });
    expect(err?.message).toMatch(/^MCP error -32602: UNKNOWN_TOOL: no tool named "no_such_tool" behind this gateway/);
    expect(fixture.calls.get('no_such_tool')).toBeUndefined();
    expect(await h.auditRows("tool = 'no_such_tool'", [], () => true)).toEqual([]);
  });
});

describe('a resources/read that was allowed and failed upstream', () => {
  it('is JSON-RPC error -32603 (an internal error, as MCP names it for resources/read) naming UPSTREAM_ERROR, with the decision in error.data', async () => {
    // server-memory is the only upstream with resources, so it is asked for any URI; it has no such one.
    const gateway = await h.gateway({ memory: true, mcpServers: { filesystem: { disabled: true } } });
    const client = await h.client(gateway, await h.token('ro'));
    const err = await rpcErrorOf(client.readResource({ uri: 'memory://not-there' }));
    expect(err).toMatchObject({ code: -32603, data: { outcome: 'failed', code: 'UPSTREAM_ERROR', decision_id: expect.any(String) } });
    expect(err?.message).toMatch(/^MCP error -32603: UPSTREAM_ERROR: /);
  });
});

describe('UNKNOWN_RESOURCE and UNKNOWN_PROMPT', () => {
  it('reading a resource no upstream offers is a JSON-RPC error (-32602) naming UNKNOWN_RESOURCE', async () => {
    const token = await h.token('ro');
    // Two servers with resources: with one, the gateway passes an unlisted URI to it (resource templates).
    const second = { command: process.execPath, args: [MEMORY_SERVER], env: { MEMORY_FILE_PATH: join(h.scratch, 'memory-second.jsonl') } };
    const gateway = await h.gateway({ memory: true, mcpServers: { filesystem: { disabled: true }, 'memory-second': second } });
    const client = await h.client(gateway, token);
    const err = await rejection(client.readResource({ uri: 'nowhere://nothing' }));
    expect(err).toBeInstanceOf(Error);
    expect(codeOfMessage(err as Error)).toBe('UNKNOWN_RESOURCE');
    expect((err as Error & { code?: number }).code).toBe(-32602);
    expect((err as Error & { data?: unknown }).data).toEqual({ code: 'UNKNOWN_RESOURCE' });
    expect((err as Error).message).toContain('no upstream server offers nowhere://nothing');
  });

  it('getting a prompt nobody offers is a JSON-RPC error (-32602) naming UNKNOWN_PROMPT; the upstream is not asked', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { filesystem: { disabled: true }, memory: { url: fixture.url } } });
    const client = await h.client(gateway, token);
    expect((await client.listPrompts()).prompts.map((p) => p.name)).toContain('summarise_graph');
    const err = await rejection(client.getPrompt({ name: 'no_such_prompt' }));
    expect(err).toBeInstanceOf(Error);
    expect(codeOfMessage(err as Error)).toBe('UNKNOWN_PROMPT');
    expect((err as Error & { code?: number }).code).toBe(-32602);
    expect(fixture.calls.get('prompt:no_such_prompt')).toBeUndefined();
  });
});

describe('REFUSED', () => {
  it('over Streamable HTTP, a session refused at killswitch.url with a 4xx that names no code is answered 403 REFUSED with the HTTP status', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { filesystem: { disabled: true }, memory: { url: fixture.url } }, killswitch: { url: stubUrl } });
    const front = await gateway.listenHttp({ port: 0 });
    try {
      const res = await fetch(front.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }),
      });
      expect(res.status).toBe(403);
      const body = (await res.json()) as { error: { code: number; message: string } };
      expect(body.error.code).toBe(-32002);
      expect(body.error.message).toBe('REFUSED: HTTP 403');
      expect(stubRequests).toContain('POST /v1/sessions');
    } finally {
      await front.close();
    }
  });
});
