import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
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

// A hostile Streamable HTTP upstream, raw node:http: a call whose SSE stream only ever sends keep-alive
// comments, one whose answer never starts, and one answered 500 text/plain with a body that never ends.
// What the gateway holds is counted from the server side: the tools/call responses still open.
describe('a hostile HTTP upstream', () => {
  let hostile: Server;
  let hostileUrl: string;
  /** tools/call responses the server has open, each a socket the gateway holds. */
  let openCalls = 0;
  /** Bytes of the 500 body written before the gateway closed it; whether all of it was. */
  let bombWritten = 0;
  let bombFinished = false;
  // memory's read tool name, so the policy's memory map lets an ro token call it; `how` picks the misbehaviour.
  const tools = [{ name: 'read_graph', description: 'Read the graph.', inputSchema: { type: 'object', properties: { how: { type: 'string' } } }, annotations: { readOnlyHint: true } }];

  beforeAll(async () => {
    hostile = createServer(async (req, res) => {
      if (req.method !== 'POST') return void res.writeHead(req.method === 'GET' ? 405 : 200).end();
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const msg = JSON.parse(Buffer.concat(chunks).toString()) as { id?: number; method: string; params?: { arguments?: { how?: string }; protocolVersion?: string } };
      if (msg.id === undefined) return void res.writeHead(202).end();
      const json = (result: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result }));
      if (msg.method === 'initialize') return json({ protocolVersion: msg.params?.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: 'hostile', version: '1' } });
      if (msg.method === 'tools/list') return json({ tools });
      if (msg.method !== 'tools/call') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: msg.id, error: { code: -32601, message: 'no' } }));
      const how = msg.params?.arguments?.how;
      if (how === 'ok') return json({ content: [{ type: 'text', text: 'hostile ok' }] });
      openCalls++;
      res.on('close', () => openCalls--);
      if (how === 'answer-then-trickle') {
        // The answer, then keep-alives: the stream is never ended.
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: msg.id, result: { content: [{ type: 'text', text: 'answered, stream kept open' }] } })}\n\n`);
        const timer = setInterval(() => res.write(': keep-alive\n\n'), 50);
        res.on('close', () => clearInterval(timer));
      } else if (how === 'trickle') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const timer = setInterval(() => res.write(': keep-alive\n\n'), 50);
        res.on('close', () => clearInterval(timer));
      } else if (how === 'bomb') {
        // 128 MB, twice what the gateway reads: all of it is written only if the gateway reads it all.
        res.writeHead(500, { 'content-type': 'text/plain' });
        const chunk = Buffer.alloc(1_048_576, 'B');
        let left = 128;
        const write = () => {
          while (!res.destroyed && left > 0) {
            left--;
            bombWritten += chunk.length;
            if (!res.write(chunk)) return;
          }
          if (left === 0 && !res.destroyed) res.end(() => (bombFinished = true));
        };
        res.on('drain', write);
        write();
      }
      // hang: no answer, not even headers
    });
    await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', () => r()));
    hostileUrl = `http://127.0.0.1:${(hostile.address() as AddressInfo).port}/mcp`;
  });
  afterAll(async () => {
    hostile?.closeAllConnections();
    await new Promise<void>((r) => (hostile ? hostile.close(() => r()) : r()));
  });

  it('calls that run over the max execution time (an SSE stream of keep-alives, an answer that never starts) have their HTTP requests closed', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { filesystem: { disabled: true }, memory: { url: hostileUrl } }, killswitch: { servers: { memory: { maxExecutionSeconds: 0.3 } } } });
    const client = await h.client(gateway, token);
    for (const how of ['trickle', 'trickle', 'hang']) {
      const r = (await client.callTool({ name: 'read_graph', arguments: { how } })) as CallToolResult;
      expect(textOf(r)).toMatch(/^MAX_EXECUTION_TIME: /);
    }
    await until(() => openCalls === 0, 5000, 'the gateway to close the HTTP requests of the calls it gave up on');
    const ok = (await client.callTool({ name: 'read_graph', arguments: { how: 'ok' } })) as CallToolResult;
    expect(ok.isError, textOf(ok)).toBeFalsy();
    expect(textOf(ok)).toContain('hostile ok');
  });

  it('an answer whose SSE stream the upstream keeps open: the call succeeds and its HTTP request is closed', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { filesystem: { disabled: true }, memory: { url: hostileUrl } } });
    const client = await h.client(gateway, token);
    for (let i = 0; i < 3; i++) {
      const r = (await client.callTool({ name: 'read_graph', arguments: { how: 'answer-then-trickle' } })) as CallToolResult;
      expect(r.isError, textOf(r)).toBeFalsy();
      expect(textOf(r)).toContain('answered, stream kept open');
    }
    await until(() => openCalls === 0, 5000, 'the gateway to close the streams of the answered calls');
  });

  it('a 500 text/plain answer larger than the gateway reads is withheld as LARGE_RESULT, and its request closed', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ mcpServers: { filesystem: { disabled: true }, memory: { url: hostileUrl } } });
    const client = await h.client(gateway, token);
    const r = (await client.callTool({ name: 'read_graph', arguments: { how: 'bomb' } })) as CallToolResult;
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/^LARGE_RESULT: .*\b\d{8,} bytes/);
    await until(() => openCalls === 0, 5000, 'the gateway to close the 500 answer');
    // The gateway stopped reading at its limit (64 MB) and closed the request; it did not read the rest.
    expect(bombFinished).toBe(false);
    expect(bombWritten).toBeLessThan(128 * 1_048_576);
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
