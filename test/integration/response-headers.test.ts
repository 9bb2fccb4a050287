import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';

// The admin API's answers hold what operators read and, once, a raw key just made: no browser or proxy
// keeps them (no-store), and none is read as anything but JSON (nosniff). The admin UI is the browser
// that asks for them; signing out of it must leave no copy in its disk cache.

const t = new TestContext();
let app: FastifyInstance;
let owner: string;

beforeAll(async () => {
  await t.setup();
  app = await t.app();
  owner = await t.operatorKey(app, 'owner');
});
afterAll(() => t.teardown());

describe('response headers', () => {
  it('a key shown once is answered with Cache-Control: no-store and nosniff', async () => {
    const made = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { type: 'ro', role: 'code_agent', project_id: 'alpha', environment: 'development' } });
    expect(made.statusCode, made.body).toBe(201);
    expect(made.json().token).toMatch(/^mcp_ro_/);
    expect(made.headers['cache-control']).toBe('no-store');
    expect(made.headers['x-content-type-options']).toBe('nosniff');
    const operator = await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(owner), payload: { name: 'second operator', role: 'viewer' } });
    expect(operator.statusCode, operator.body).toBe(201);
    expect(operator.headers['cache-control']).toBe('no-store');
  });

  it('reads of the admin API and its errors are not stored either', async () => {
    for (const url of ['/v1/keys', '/v1/audit', '/v1/sessions', '/v1/ui/settings']) {
      const res = await app.inject({ url, headers: bearer(owner) });
      expect(res.statusCode, `${url}: ${res.body}`).toBe(200);
      expect(res.headers['cache-control'], url).toBe('no-store');
      expect(res.headers['x-content-type-options'], url).toBe('nosniff');
    }
    const unknown = await app.inject({ url: '/v1/no-such-route', headers: bearer(owner) });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.headers['cache-control']).toBe('no-store');
    expect(unknown.headers['x-content-type-options']).toBe('nosniff');
    const refused = await app.inject({ url: '/v1/keys' });
    expect(refused.statusCode).toBe(401);
    expect(refused.headers['cache-control']).toBe('no-store');
    expect(refused.headers['x-content-type-options']).toBe('nosniff');
  });

  it("a route's own cache-control stays: the UI's index is revalidated", async () => {
    const res = await app.inject({ url: '/ui/' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['cache-control']).toBe('no-cache');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
  });
});
