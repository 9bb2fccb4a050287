import { request } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// A credential header sent twice: Node kept the first Authorization and dropped the rest, and joined two
// X-Agent-Token values with ", ". A proxy in front may read the other one, so the two would act on
// different credentials. Such a request is refused with 400 naming the header, whichever values it holds.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let owner: string;
let port: number;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  await app.ctx.sessions.ensureState();
  gw = await new GatewayDriver(t, app).init();
  owner = await t.operatorKey(app, 'owner');
  await app.listen({ port: 0, host: '127.0.0.1' });
  port = (app.server.address() as { port: number }).port;
});
afterAll(() => t.teardown());

/** A request over a real socket; an array value is sent as that many header lines. */
function send(method: string, path: string, headers: Record<string, string | string[]>, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ host: '127.0.0.1', port, method, path, agent: false, headers: { ...headers, ...(payload ? { 'content-type': 'application/json' } : {}) } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => {
        text += c.toString('utf8');
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : {} }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

describe('a credential header sent more than once', () => {
  it('POST /v1/decisions with Authorization twice → 400 naming it, whichever key comes first; once → decided', async () => {
    const tok = await gw.token('rw');
    const session = (await gw.session(tok.raw)).session_id;
    const call = { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' }, session_id: session };
    for (const keys of [
      [gw.gatewayKey, owner],
      [owner, gw.gatewayKey],
      [gw.gatewayKey, gw.gatewayKey],
    ]) {
      const res = await send('POST', '/v1/decisions', { authorization: keys.map((k) => `Bearer ${k}`), 'x-agent-token': tok.raw }, call);
      expect(res.status).toBe(400);
      expect(res.json['error']).toMatchObject({
        code: 'INVALID_REQUEST',
        message: 'authorization: authorization was sent 2 times: send it once (a proxy and this service could each read a different one)',
        details: [{ field: 'authorization', problem: expect.stringContaining('sent 2 times') }],
      });
    }
    const once = await send('POST', '/v1/decisions', { authorization: `Bearer ${gw.gatewayKey}`, 'x-agent-token': tok.raw }, call);
    expect(once.status).toBe(200);
    expect(once.json['code']).toBe('OK');
  });

  it('X-Agent-Token twice → 400 naming it (it was a 401 for the joined value); nothing is decided', async () => {
    const [a, b] = [await gw.token('rw'), await gw.token('ro')];
    const session = (await gw.session(a.raw)).session_id;
    const res = await send('POST', '/v1/decisions', { authorization: `Bearer ${gw.gatewayKey}`, 'x-agent-token': [a.raw, b.raw] }, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' }, session_id: session });
    expect(res.status).toBe(400);
    expect(res.json['error']).toMatchObject({ code: 'INVALID_REQUEST', details: [{ field: 'x-agent-token' }] });
    expect((await send('POST', '/v1/sessions', { authorization: `Bearer ${gw.gatewayKey}`, 'x-agent-token': [a.raw, a.raw] }, {})).status).toBe(400);
  });

  it('the admin API: Authorization twice → 400, once → 200', async () => {
    const viewer = await t.operatorKey(app, 'viewer');
    const twice = await send('GET', '/v1/operator-keys', { authorization: [`Bearer ${viewer}`, `Bearer ${owner}`] });
    expect(twice.status).toBe(400);
    expect(twice.json['error']).toMatchObject({ code: 'INVALID_REQUEST', details: [{ field: 'authorization' }] });
    expect((await send('GET', '/v1/operator-keys', { authorization: `Bearer ${owner}` })).status).toBe(200);
  });
});
