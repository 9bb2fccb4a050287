import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Seed 002's required restrictions, through HTTP: a network server's URLs must be https on an allowed
// domain (servers.fetch.network), a file server's paths must lie in its allowed directories
// (servers.filesystem.paths). Refusals of the policy step: audited, nothing halted.
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: 'test/fixtures/decisions/restrictions.yaml' });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(async () => {
  await t.teardown();
});

async function intentCode(decisionId: string): Promise<string | undefined> {
  // A denial answers before its INTENT row is durable (nothing runs): wait for the writer's batch.
  await app.ctx.audit.writer.flush();
  const { rows } = await t.pool().query(`SELECT code FROM audit_events WHERE decision_id = $1 AND kind = 'INTENT'`, [decisionId]);
  return rows[0]?.code;
}

describe('POST /v1/decisions: servers.<name>.network', () => {
  it('G3: a read-only token fetching http://evil.example.com/x → PERMISSION_DENIED naming the scheme, host and rule; audited; the session goes on', async () => {
    const tok = await gw.token('ro', { scopes: ['storage:read', 'net:read'] });
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, { server: 'fetch', tool: 'fetch', arguments: { url: 'http://evil.example.com/x' }, session_id: s.session_id });
    expect(d).toMatchObject({ decision: 'deny', code: 'PERMISSION_DENIED' });
    expect(d.message).toBe('fetch/fetch: argument url is a http:// URL (host evil.example.com), and servers.fetch.network.https_only allows https:// URLs only');
    expect(d.session).toBeUndefined(); // no halt: a halt answers with the session's state and trigger
    expect(await intentCode(d.decision_id)).toBe('PERMISSION_DENIED');

    const other = await gw.decide(tok.raw, { server: 'fetch', tool: 'fetch', arguments: { url: 'https://evil.example.net/x' }, session_id: s.session_id });
    expect(other).toMatchObject({ decision: 'deny', code: 'PERMISSION_DENIED' });
    expect(other.message).toContain('reaches host evil.example.net, which is not in servers.fetch.network.allowed_domains (example.com; each allows its subdomains)');

    const ok = await gw.decide(tok.raw, { server: 'fetch', tool: 'fetch', arguments: { url: 'https://api.example.com/x' }, session_id: s.session_id });
    expect(ok).toMatchObject({ decision: 'allow', code: 'OK' });
  });
});

describe('POST /v1/decisions: servers.<name>.paths', () => {
  it('G4: a write token writing through /tmp/ks-demo/../../etc → PERMISSION_DENIED naming the path and the allowed directories; audited; the session goes on', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const d = await gw.decide(tok.raw, {
      server: 'filesystem',
      tool: 'write_file',
      arguments: { path: '/tmp/ks-demo/../../etc/cron.d/x', content: '* * * * * root sh' },
      resources: ['file:///etc/cron.d/x'],
      session_id: s.session_id,
    });
    expect(d).toMatchObject({ decision: 'deny', code: 'PERMISSION_DENIED' });
    expect(d.message).toBe(
      'filesystem/write_file: path /etc/cron.d/x (argument path, written "/tmp/ks-demo/../../etc/cron.d/x") is outside servers.filesystem.paths.allowed (/tmp/ks-demo)',
    );
    expect(d.session).toBeUndefined(); // no halt: a halt answers with the session's state and trigger
    expect(await intentCode(d.decision_id)).toBe('PERMISSION_DENIED');

    const ok = await gw.decide(tok.raw, { server: 'filesystem', tool: 'write_file', arguments: { path: '/tmp/ks-demo/a.md', content: 'x' }, resources: ['file:///tmp/ks-demo/a.md'], session_id: s.session_id });
    expect(ok).toMatchObject({ decision: 'allow', code: 'OK' });
  });
});
