import { connect } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverTimeouts } from '../../src/app.js';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// REQUEST_TIMEOUT_MS: a request must arrive whole within it. Fastify's default is no limit, so a client
// that sent headers and then trickled a body (or never finished it) held its connection for ever, and
// enough of them held every file descriptor of the process.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const TIMEOUT_MS = 1_000;
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let port: number;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY, requestTimeoutMs: TIMEOUT_MS });
  gw = await new GatewayDriver(t, app).init();
  await app.listen({ port: 0, host: '127.0.0.1' });
  port = (app.server.address() as { port: number }).port;
});
afterAll(async () => {
  await t.teardown();
});

/** Writes `bytes`, sends nothing more, and reads until the server closes the connection (or 20 s pass). */
const stall = (bytes: string) =>
  new Promise<{ closed: boolean; response: string }>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let response = '';
    const giveUp = setTimeout(() => {
      socket.destroy();
      resolve({ closed: false, response });
    }, 20_000);
    socket.on('data', (d: Buffer) => {
      response += d.toString('utf8');
    });
    socket.on('close', () => {
      clearTimeout(giveUp);
      resolve({ closed: true, response });
    });
    socket.on('error', reject);
    socket.write(bytes);
  });

const bodyOf = (response: string) => JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as { error: Record<string, unknown> };

describe('REQUEST_TIMEOUT_MS', () => {
  it('a body that stops arriving → 408 REQUEST_TIMEOUT naming the setting, and the connection is closed; nothing is decided', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const headers = Object.entries(gw.headers(tok.raw)).map(([k, v]) => `${k}: ${v}\r\n`);
    const res = await stall(`POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${headers.join('')}Content-Length: 200\r\n\r\n{"server":"filesystem",`);
    expect(res.closed).toBe(true);
    expect(res.response.split('\r\n')[0]).toBe('HTTP/1.1 408 Request Timeout');
    const problem = `did not arrive whole within REQUEST_TIMEOUT_MS (${TIMEOUT_MS} ms): send the headers and body at once`;
    expect(bodyOf(res.response).error).toEqual({ code: 'REQUEST_TIMEOUT', message: `request: ${problem}`, details: [{ field: 'request', problem }] });
    // The session has had no call.
    expect((await app.inject({ method: 'GET', url: `/v1/sessions/${s.session_id}`, headers: { authorization: `Bearer ${await t.operatorKey(app)}` } })).json()).toMatchObject({ last_calls: [] });
  });

  it('headers that stop arriving → 408 as well', async () => {
    const res = await stall('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    expect(res.closed).toBe(true);
    expect(res.response.split('\r\n')[0]).toBe('HTTP/1.1 408 Request Timeout');
    expect(bodyOf(res.response).error).toMatchObject({ code: 'REQUEST_TIMEOUT' });
  });

  it('a request refused for its credentials before its body ended gets its 401 at once, and its connection is closed too (it was held for as long as the client kept it)', async () => {
    const res = await stall('POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"server":');
    expect(res.closed).toBe(true);
    // The 408 that follows the 401 on the wire is Node's answer to a request still arriving, as its own
    // handler gives it: the client has not finished sending, so it reads no answer to another request.
    expect(res.response.split('\r\n')[0]).toBe('HTTP/1.1 401 Unauthorized');
  });

  it("is given to Node's server as it is made, the headers' limit no longer than the request's, checked every quarter of it between 250 ms and 5 s", () => {
    expect(app.server.requestTimeout).toBe(TIMEOUT_MS);
    expect(app.server.headersTimeout).toBe(TIMEOUT_MS);
    expect(serverTimeouts(30_000)).toEqual({ requestTimeout: 30_000, headersTimeout: 30_000, connectionsCheckingInterval: 5_000 });
    expect(serverTimeouts(120_000)).toEqual({ requestTimeout: 120_000, headersTimeout: 60_000, connectionsCheckingInterval: 5_000 });
    expect(serverTimeouts(8_000).connectionsCheckingInterval).toBe(2_000);
  });
});
