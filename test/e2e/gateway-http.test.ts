import { writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/gateway.js';
import { type HttpFront, MAX_BODY_BYTES, MAX_INITIALIZE_BYTES } from '../../src/gateway/http.js';
import { bearer } from '../helpers/context.js';
import { capturedLog, GatewayHarness, textOf } from './gateway-harness.js';

// The Streamable HTTP front: the agent token is the Bearer credential of the MCP connection.

const h = new GatewayHarness();
let front: HttpFront;
let gateway: Gateway;
const clients: Client[] = [];

beforeAll(async () => {
  await h.start();
  writeFileSync(join(h.dir, 'notes.md'), 'notes over http\n');
  gateway = await h.gateway();
  front = await gateway.listenHttp({ port: 0 });
}, 120_000);
afterAll(async () => {
  for (const c of clients) await c.close().catch(() => {});
  await front?.close();
  await h.stop();
});

async function httpClient(token: string): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const transport = new StreamableHTTPClientTransport(new URL(front.url), { requestInit: { headers: { authorization: `Bearer ${token}`, 'user-agent': 'e2e-http-agent/2.0' } } });
  const client = new Client({ name: 'e2e-http', version: '2.0' });
  await client.connect(transport);
  clients.push(client);
  return { client, transport };
}

const initialize = (headers: Record<string, string>, url = front.url) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }),
  });

describe('Streamable HTTP', () => {
  it('an ro agent over HTTP: write tools hidden, reads allowed, writes PERMISSION_DENIED', async () => {
    const token = await h.token('ro');
    const { client } = await httpClient(token);
    const names = (await client.listTools()).tools.map((t) => t.name);
    expect(names).toContain('read_text_file');
    expect(names).not.toContain('write_file');
    const read = (await client.callTool({ name: 'read_text_file', arguments: { path: 'notes.md' } })) as CallToolResult;
    expect(read.isError, textOf(read)).toBeFalsy();
    expect(textOf(read)).toContain('notes over http');
    const write = (await client.callTool({ name: 'write_file', arguments: { path: 'http.md', content: 'x' } })) as CallToolResult;
    expect(write.isError).toBe(true);
    expect(textOf(write)).toMatch(/^PERMISSION_DENIED: /);
  });

  it('an rw agent over HTTP writes; the audit names the HTTP user agent', async () => {
    const token = await h.token('rw');
    const { client } = await httpClient(token);
    const write = (await client.callTool({ name: 'write_file', arguments: { path: 'http.md', content: 'over http' } })) as CallToolResult;
    expect(write.isError, textOf(write)).toBeFalsy();
    const rows = await h.auditRows("tool = 'write_file' AND kind = 'INTENT' AND decision = 'allow'", [], (r) => r.length > 0);
    expect(rows[0]?.['user_agent']).toBe('e2e-http-agent/2.0');
  });

  it('missing, malformed, unknown and revoked tokens get 401 before any session exists', async () => {
    expect((await initialize({})).status).toBe(401);
    expect((await initialize({ authorization: 'Bearer' })).status).toBe(401);
    expect((await initialize({ authorization: 'Bearer not-a-token' })).status).toBe(401);
    expect((await initialize({ authorization: 'Bearer mcp_rw_AAAAAAAAAAAAAAAAAAAAAAAAAAAA' })).status).toBe(401);
    const token = await h.token('ro');
    const keys = (await h.app.inject({ method: 'GET', url: '/v1/keys?type=ro', headers: bearer(h.owner) })).json().keys as Array<{ id: string; display_prefix: string }>;
    const id = keys.find((k) => token.startsWith(k.display_prefix))?.id;
    const revoked = await h.app.inject({ method: 'POST', url: `/v1/keys/${id}/revoke`, headers: bearer(h.owner), payload: { reason: 'test' } });
    expect(revoked.statusCode).toBe(200);
    const res = await initialize({ authorization: `Bearer ${token}` });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /);
    await expect(httpClient(token)).rejects.toThrow();
    // A gateway key is not an agent token.
    expect((await initialize({ authorization: `Bearer ${h.gatewayKey}` })).status).toBe(401);
  });

  it("a body that is not JSON gets 400 parse error, and the gateway's log has no warning for it (a client's fault, not the gateway's)", async () => {
    const { log, lines } = capturedLog();
    const g = await h.gateway({}, log);
    const own = await g.listenHttp({ port: 0 });
    try {
      const token = await h.token('ro');
      for (let i = 0; i < 5; i++) {
        const res = await fetch(own.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` }, body: '{"jsonrpc": "2.0", "id": 1, "method": ' });
        expect(res.status).toBe(400);
        expect(((await res.json()) as { error: { message: string } }).error.message).toBe('parse error');
      }
      expect(lines.filter((l) => (l['level'] as number) >= 40)).toEqual([]);
    } finally {
      await own.close();
      await g.close();
    }
  });

  /** A POST by node:http, its body written whole before the answer is read (chunked: no Content-Length unless given). */
  const post = (headers: Record<string, string>, body: string, url = front.url) =>
    new Promise<{ status: number; connection: string | undefined; body: string }>((resolve, reject) => {
      const req = request(url, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => {
          text += c.toString('utf8');
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: text }));
      });
      req.on('error', reject);
      // In 16 KiB writes, as a client streaming its body does.
      for (let at = 0; at < body.length; at += 16_384) req.write(body.slice(at, at + 16_384));
      req.end();
    });
  const initializeBody = (padding: number) =>
    JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1', title: 'x'.repeat(padding) } } });

  it('a request without a session takes at most 64 KiB of body (an initialize is a few hundred bytes): 413 whatever the token, the rest read and thrown away, no session, no warning', async () => {
    const { log, lines } = capturedLog();
    const g = await h.gateway({}, log);
    const own = await g.listenHttp({ port: 0 });
    const postTo = (headers: Record<string, string>, body: string) => post(headers, body, own.url);
    try {
      const token = await h.token('ro');
      const big = initializeBody(MAX_INITIALIZE_BYTES);
      // A token nobody issued, then a good one: the body is refused before the control plane is asked.
      for (const bearerToken of ['mcp_ro_nobody', token]) {
        const res = await postTo({ authorization: `Bearer ${bearerToken}` }, big);
        expect(res.status).toBe(413);
        expect(res.connection).toBe('close');
        expect(JSON.parse(res.body)).toEqual({
          jsonrpc: '2.0',
          error: { code: -32600, message: `INVALID_REQUEST: the body is too large: a request without a session (an initialize) may be at most ${MAX_INITIALIZE_BYTES} bytes` },
          id: null,
        });
      }
      // Declared too large: answered without reading it.
      const declared = await postTo({ authorization: `Bearer ${token}`, 'content-length': String(Buffer.byteLength(big)) }, big);
      expect(declared.status).toBe(413);
      expect(g.agentCount).toBe(0);
      // Just under the limit is an initialize like any other.
      const under = initializeBody(MAX_INITIALIZE_BYTES - 200);
      expect(Buffer.byteLength(under)).toBeLessThanOrEqual(MAX_INITIALIZE_BYTES);
      const ok = await postTo({ authorization: `Bearer ${token}` }, under);
      expect(ok.status).toBe(200);
      expect(g.agentCount).toBe(1);
      expect(lines.filter((l) => (l['level'] as number) >= 40)).toEqual([]);
    } finally {
      await own.close();
      await g.close();
    }
  });

  it("a session's request takes up to 4 MiB: over it 413 naming the limit, and the session goes on", async () => {
    const token = await h.token('ro');
    const { client, transport } = await httpClient(token);
    const headers = { authorization: `Bearer ${token}`, 'mcp-session-id': transport.sessionId ?? '', 'mcp-protocol-version': '2025-06-18' };
    const call = (path: string) => JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'read_text_file', arguments: { path } } });
    const res = await post(headers, call('x'.repeat(MAX_BODY_BYTES)));
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: -32600, message: `INVALID_REQUEST: the body is too large: a request may be at most ${MAX_BODY_BYTES} bytes` } });
    const read = (await client.callTool({ name: 'read_text_file', arguments: { path: join(h.dir, 'notes.md') } })) as CallToolResult;
    expect(textOf(read)).toContain('notes over http');
  });

  it('GET /healthz answers 200 without a token (a liveness probe); anything else outside the MCP endpoint is 404', async () => {
    const health = new URL('/healthz', front.url).toString();
    const res = await fetch(health);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ok: true, agents: expect.any(Number) });
    expect((await fetch(health, { method: 'HEAD' })).status).toBe(200);
    expect((await fetch(new URL('/readyz', front.url).toString())).status).toBe(404);
  });

  it('a session id presented with another token gets 401', async () => {
    const a = await h.token('ro');
    const b = await h.token('ro');
    const { transport } = await httpClient(a);
    const sid = transport.sessionId;
    expect(sid).toBeTruthy();
    const res = await fetch(front.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${b}`, 'mcp-session-id': sid ?? '', 'mcp-protocol-version': '2025-06-18' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list', params: {} }),
    });
    expect(res.status).toBe(401);
    const missing = await fetch(front.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': sid ?? '' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/list', params: {} }),
    });
    expect(missing.status).toBe(401);
  });

  it('Authorization sent twice → 400 naming it, before any token is read (a proxy could read the other one)', async () => {
    const [a, b] = [await h.token('ro'), await h.token('rw')];
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
    // Headers as a flat list, so Authorization goes out twice (Node adds neither Host nor Content-Length to such a list).
    const headers = ['host', new URL(front.url).host, 'content-type', 'application/json', 'accept', 'application/json, text/event-stream', 'content-length', String(Buffer.byteLength(body)), 'authorization', `Bearer ${a}`, 'authorization', `Bearer ${b}`];
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(front.url, { method: 'POST', agent: false, headers }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => {
          body += c.toString('utf8');
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end(body);
    });
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toMatchObject({ jsonrpc: '2.0', error: { code: -32600, message: expect.stringMatching(/^INVALID_REQUEST: Authorization was sent 2 times: send it once/) } });
  });

  it('an initialize the SDK refuses after the token was accepted (406, 415, 403) leaves no session behind', async () => {
    const token = await h.token('ro');
    const before = gateway.agentCount;
    const json = { 'content-type': 'application/json', accept: 'application/json' };
    for (let i = 0; i < 10; i++) {
      const res = await fetch(front.url, {
        method: 'POST',
        headers: { ...json, authorization: `Bearer ${token}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }),
      });
      expect(res.status).toBe(406);
      await res.text();
    }
    expect(gateway.agentCount).toBe(before);

    // http.allowedHosts: the SDK compares the Host header as sent, port included.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
    const port = (probe.address() as AddressInfo).port;
    // The port is held while the gateway starts its upstreams (their connections take ephemeral ports:
    // one took this one once, EADDRINUSE) and let go just before the front listens on it.
    const guarded = await h.gateway({ killswitch: { http: { allowedHosts: [`127.0.0.1:${port}`] } } });
    await new Promise<void>((r) => probe.close(() => r()));
    const guardedFront = await guarded.listenHttp({ port });
    try {
      // fetch always sends the URL's host: a rebinding page's request, by hand.
      const wrongHost = await new Promise<number>((resolve, reject) => {
        const req = request(guardedFront.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}`, host: 'evil.example' },
        });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }));
      });
      expect(wrongHost).toBe(403);
      expect(guarded.agentCount).toBe(0);
      const right = await initialize({ authorization: `Bearer ${token}` }, guardedFront.url);
      expect(right.status).toBe(200);
      await right.text();
      expect(guarded.agentCount).toBe(1);
    } finally {
      await guardedFront.close();
    }
  });
});
