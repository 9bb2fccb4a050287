import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_REQUEST_ID_LENGTH } from '../../src/http/request-id.js';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// The request id (`reqId` on every log line of a request, and in a 500's message) is what an operator
// searches the logs of every replica for.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let first: GatewayDriver;
let second: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  // Two replicas, each driven through the same requests in the same order.
  first = await new GatewayDriver(t, await t.app({ policyFile: POLICY })).init();
  second = await new GatewayDriver(t, await t.app({ policyFile: POLICY })).init();
});
afterAll(() => t.teardown());

/** The reqId of the `session opened` line of `sessionId`. */
function reqIdOf(sessionId: string): unknown {
  const line = t.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'session opened' && l['session_id'] === sessionId);
  if (!line) throw new Error(`no 'session opened' line for ${sessionId}`);
  return line['reqId'];
}

async function openSession(gw: GatewayDriver, headers: Record<string, string> = {}): Promise<string> {
  const tok = await gw.token('ro');
  const app: FastifyInstance = gw.app;
  const res = await app.inject({ method: 'POST', url: '/v1/sessions', headers: { ...gw.headers(tok.raw), ...headers }, payload: {} });
  expect(res.statusCode).toBe(201);
  return res.json().session_id;
}

describe('request ids', () => {
  it('two replicas that served the same requests do not give them the same request id (Fastify counted req-1, req-2 ... in every process)', async () => {
    const a = reqIdOf(await openSession(first));
    const b = reqIdOf(await openSession(second));
    expect(typeof a).toBe('string');
    expect(a).not.toBe(b);
  });

  it("a client's X-Request-Id (a load balancer's) is the request id; one too long, or with spaces, is replaced by the replica's own", async () => {
    expect(reqIdOf(await openSession(first, { 'x-request-id': 'lb-4bf92f3577b34da6a3ce929d0e0e4736' }))).toBe('lb-4bf92f3577b34da6a3ce929d0e0e4736');
    const long = 'A'.repeat(5_000);
    const replaced = reqIdOf(await openSession(first, { 'x-request-id': long }));
    expect(replaced).not.toBe(long);
    expect(String(replaced).length).toBeLessThanOrEqual(MAX_REQUEST_ID_LENGTH);
    expect(reqIdOf(await openSession(first, { 'x-request-id': 'two words' }))).not.toBe('two words');
  });
});
