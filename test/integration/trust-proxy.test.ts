import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Which address audit rows record as `ip` (TRUST_PROXY): behind a load balancer, X-Forwarded-For's
// client only when the connection comes from a proxy the operator named; otherwise the peer, whatever
// the header claims.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let trusting: FastifyInstance;
let plain: FastifyInstance;

beforeAll(async () => {
  await t.setup();
  trusting = await t.app({ policyFile: POLICY, trustProxy: ['127.0.0.1'] });
  plain = await t.app({ policyFile: POLICY });
});
afterAll(() => t.teardown());

async function decisionIp(app: FastifyInstance, headers: Record<string, string>, remoteAddress: string): Promise<string | null> {
  const gw = await new GatewayDriver(t, app).init();
  const tok = await gw.token('ro');
  const s = await gw.session(tok.raw);
  const res = await app.inject({
    method: 'POST',
    url: '/v1/decisions',
    remoteAddress,
    headers: { ...gw.headers(tok.raw), ...headers },
    payload: { session_id: s.session_id, server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' } },
  });
  expect(res.statusCode, res.body).toBe(200);
  await app.ctx.audit.writer.flush();
  const { rows } = await t.pool().query<{ ip: string | null }>('SELECT ip FROM audit_events WHERE decision_id = $1', [res.json().decision_id]);
  return rows[0]!.ip;
}

describe('TRUST_PROXY', () => {
  it('a request from a trusted proxy is recorded with the client X-Forwarded-For names', async () => {
    expect(await decisionIp(trusting, { 'x-forwarded-for': '203.0.113.7' }, '127.0.0.1')).toBe('203.0.113.7');
  });

  it('from an address it does not name, the header is ignored: the peer is recorded', async () => {
    expect(await decisionIp(trusting, { 'x-forwarded-for': '203.0.113.7' }, '198.51.100.9')).toBe('198.51.100.9');
  });

  it('unset, X-Forwarded-For never counts', async () => {
    expect(await decisionIp(plain, { 'x-forwarded-for': '203.0.113.7' }, '127.0.0.1')).toBe('127.0.0.1');
    expect((await plain.inject({ url: '/v1/keys', headers: bearer('ksop_garbage') })).statusCode).toBe(401);
  });
});
