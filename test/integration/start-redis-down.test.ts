import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// A replica that starts while Redis is unreachable (a blip during a rollout) must come up, say why it is
// not ready, and deny: not exit with an error that names no dependency (a crash loop).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();

beforeAll(() => t.setup());
afterAll(() => t.teardown());

describe('Redis unreachable at start', () => {
  it('the control plane starts, is not ready, and denies decisions with DEPENDENCY_UNAVAILABLE', { timeout: 60_000 }, async () => {
    // Credentials are made on a healthy replica first; the second one cannot reach Redis at all.
    const healthy = await t.app({ policyFile: POLICY });
    const gw = await new GatewayDriver(t, healthy).init();
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);

    const cut = await t.app({ policyFile: POLICY, redisUrl: 'redis://127.0.0.1:1' });
    const ready = await cut.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    expect(ready.body).toMatch(/redis/i);
    const d = await cut.inject({
      method: 'POST',
      url: '/v1/decisions',
      headers: gw.headers(tok.raw),
      payload: { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id: s.session_id },
    });
    expect(d.statusCode).toBe(200);
    expect(d.json()).toMatchObject({ decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE' });
  });
});
