import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';

// An operator's reason is quoted in every denial a kill causes, in alerts and in the audit trail: one of
// spaces or zero-width characters says nothing to whoever reads it at 3 a.m. (the CLI refused it; the API
// took it). Every reason and note an operator writes now needs one visible character: 400 naming it.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let owner: string;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  owner = await t.operatorKey(app, 'owner');
});
afterAll(() => t.teardown());

const BLANK = [' ', '   ', '\u200b\u200b\u200b', '\u00a0\u3000\u2800', '\ufe0f\u200d'];

describe("an operator's reason without a visible character", () => {
  const id = randomUUID();
  const routes: Array<{ method: 'POST' | 'DELETE'; url: string; body: (blank: string) => Record<string, unknown>; field: string }> = [
    { method: 'POST', url: '/v1/kills', body: (r) => ({ target: 'everything', reason: r }), field: 'reason' },
    { method: 'DELETE', url: `/v1/kills/${id}`, body: (r) => ({ reason: r }), field: 'reason' },
    { method: 'POST', url: `/v1/keys/${id}/revoke`, body: (r) => ({ reason: r }), field: 'reason' },
    { method: 'POST', url: `/v1/keys/${id}/resume`, body: (r) => ({ reason: r }), field: 'reason' },
    { method: 'POST', url: `/v1/gateway-keys/${id}/revoke`, body: (r) => ({ reason: r }), field: 'reason' },
    { method: 'POST', url: `/v1/sessions/${id}/resume`, body: (r) => ({ reason: r }), field: 'reason' },
    { method: 'POST', url: '/v1/grants', body: (r) => ({ token_id: id, kind: 'production', expires_in: 600, reason: `${r}${r}${r}` }), field: 'reason' },
    { method: 'POST', url: `/v1/approvals/${id}/reject`, body: (r) => ({ reason: `${r}${r}${r}` }), field: 'reason' },
    { method: 'POST', url: '/v1/alerts/ack', body: (r) => ({ all: true, note: r }), field: 'note' },
  ];

  for (const r of routes) {
    it(`${r.method} ${r.url.replace(id, ':id')} → 400 naming ${r.field}; nothing done`, async () => {
      for (const blank of BLANK) {
        const res = await app.inject({ method: r.method, url: r.url, headers: bearer(owner), payload: r.body(blank) });
        expect(res.statusCode, `${JSON.stringify(blank)}: ${res.body}`).toBe(400);
        expect(res.json().error).toMatchObject({ code: 'INVALID_REQUEST', details: [{ field: r.field, problem: expect.stringContaining('At least one visible character') }] });
      }
      // The same with a word in it passes validation (whatever the route then says of the unknown id).
      const ok = await app.inject({ method: r.method, url: r.url, headers: bearer(owner), payload: r.body(' incident 42 ') });
      expect(ok.statusCode, ok.body).not.toBe(400);
    });
  }

  it('no kill was made by any of them', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/kills?state=all', headers: bearer(owner) });
    expect(res.json().kills.filter((k: { reason: string }) => k.reason !== ' incident 42 ' && k.reason !== 'incident 42')).toEqual([]);
  });
});
