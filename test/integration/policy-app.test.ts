import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatIssue, PolicyFileError } from '../../src/policy/index.js';
import { bearer, TestContext } from '../helpers/context.js';

const t = new TestContext();
let dir: string;
beforeAll(async () => {
  await t.setup();
  dir = mkdtempSync(join(tmpdir(), 'ks-policy-app-'));
});
afterAll(async () => {
  await t.teardown();
  rmSync(dir, { recursive: true, force: true });
});

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('policy in the app', () => {
  it('buildApp loads config.policyFile into ctx.policy', async () => {
    const app = await t.app({ policyFile: 'test/fixtures/policy/test.yaml' });
    const policy = app.ctx.policy.current();
    expect(policy.path).toBe('test/fixtures/policy/test.yaml');
    expect(policy.servers.has('liveproxy')).toBe(true);
    expect(app.ctx.policy.status().lastError).toBeNull();
  });

  it('a broken policy file stops the start with line-precise errors', async () => {
    const err = await t.app({ policyFile: 'test/fixtures/policy/broken.yaml' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyFileError);
    expect((err as Error).message).toContain('test/fixtures/policy/broken.yaml:11:41 roles.code_agent.allowed_servers.development[2]: unknown server "shel"');
  });

  it('hot reload takes effect in a running app, a broken edit keeps the last good policy, and close stops the watcher', async () => {
    const file = join(dir, 'policy.yaml');
    copyFileSync('test/fixtures/policy/test.yaml', file);
    const app = await t.app({ policyFile: file });
    const first = app.ctx.policy.current();
    const reloads: string[] = [];
    app.ctx.policy.onReload((e) => {
      reloads.push(e.hash);
    });

    writeFileSync(file, readFileSync(file, 'utf8').replace('  shell:\n', '  extra:\n    identity: { command: extra }\n    class: storage\n  shell:\n'));
    await until('reload', () => app.ctx.policy.current().servers.has('extra'));
    expect(reloads).toEqual([app.ctx.policy.current().hash]);

    const good = app.ctx.policy.current();
    writeFileSync(file, 'servers: {}\nroles:\n  code_agent: { allowed_servers: [nope] }\n');
    await until('rejection', () => app.ctx.policy.status().lastError !== null);
    expect(app.ctx.policy.current()).toBe(good);
    expect(t.logs.text).toContain('policy file rejected; keeping the last good policy');
    expect(good).not.toBe(first);

    await app.close();
    copyFileSync('test/fixtures/policy/test.yaml', file);
    await new Promise((r) => setTimeout(r, 300));
    expect(app.ctx.policy.current()).toBe(good);
  });

  it('a rejected file is visible beyond the log: a metric, a /readyz warning (still ready), one POLICY_REJECTED alert per rejected file', async () => {
    const file = join(dir, 'rejected.yaml');
    copyFileSync('test/fixtures/policy/test.yaml', file);
    const app = await t.app({ policyFile: file });
    const owner = await t.operatorKey(app, 'owner');
    const metric = async (name: string) => {
      const res = await app.inject({ url: '/metrics', headers: bearer(owner) });
      const line = res.body.split('\n').find((l) => l.startsWith(`${name} `));
      return line === undefined ? undefined : Number(line.split(' ')[1]);
    };
    const rejectedAlerts = async () => ((await app.inject({ url: '/v1/alerts?kind=POLICY_REJECTED', headers: bearer(owner) })).json().alerts as Array<{ severity: string; message: string; details: Record<string, unknown> }>).filter((a) =>
        a.message.includes(file),
      );
    const readyz = async () => app.inject({ url: '/readyz' });

    expect(await metric('killswitch_policy_last_reload_ok')).toBe(1);
    expect(await metric('killswitch_policy_reload_failures_total')).toBe(0);
    expect((await readyz()).json().warnings).toEqual([]);

    const good = app.ctx.policy.current();
    // Alerts are once per rejected file in the installation: files no other test of this file writes.
    const broken = (server: string) => `# rejected-file test\nservers: {}\nroles:\n  code_agent: { allowed_servers: [${server}] }\n`;
    writeFileSync(file, broken('nope'));
    await until('rejection', () => app.ctx.policy.status().lastError !== null);
    expect(await metric('killswitch_policy_last_reload_ok')).toBe(0);
    expect(await metric('killswitch_policy_reload_failures_total')).toBe(1);
    // Still deciding with the last good policy: ready, with a warning.
    const res = await readyz();
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ ready: true, warnings: ['policy file rejected: the last good policy is in force'] });
    expect(res.body).not.toContain(file);
    let alerts: Awaited<ReturnType<typeof rejectedAlerts>> = [];
    for (let i = 0; i < 40 && alerts.length === 0; i++) {
      alerts = await rejectedAlerts();
      if (alerts.length === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({ severity: 'warning', details: { kept_hash: good.hash } });
    expect(alerts[0]!.message).toContain('unknown server "nope"');

    // The same broken file again (rewritten, same bytes): no second alert, no second count.
    writeFileSync(file, broken('nope'));
    await app.ctx.policy.reload();
    // Another broken file: a second alert.
    writeFileSync(file, broken('nope2'));
    await app.ctx.policy.reload();
    expect(await metric('killswitch_policy_reload_failures_total')).toBe(2);
    for (let i = 0; i < 40 && alerts.length < 2; i++) {
      alerts = await rejectedAlerts();
      if (alerts.length < 2) await new Promise((r) => setTimeout(r, 50));
    }
    expect(alerts).toHaveLength(2);

    // Fixed: the gauge and /readyz are clear again.
    copyFileSync('test/fixtures/policy/test.yaml', file);
    await app.ctx.policy.reload();
    expect(app.ctx.policy.status().lastError).toBeNull();
    expect(await metric('killswitch_policy_last_reload_ok')).toBe(1);
    expect((await readyz()).json().warnings).toEqual([]);
    expect(app.ctx.policy.current()).toBe(good);
  });

  it('an alias bomb or `max_open_sessions: .inf` swapped in by rename is rejected like any invalid file: GET /v1/policy says why (line:column), a POLICY_REJECTED alert, the good policy stays', async () => {
    const file = join(dir, 'hardened.yaml');
    copyFileSync('test/fixtures/policy/test.yaml', file);
    const app = await t.app({ policyFile: file });
    const owner = await t.operatorKey(app, 'owner');
    const good = app.ctx.policy.current();
    const text = readFileSync(file, 'utf8');
    const swap = (content: string) => {
      writeFileSync(join(dir, '.hardened.next'), content);
      renameSync(join(dir, '.hardened.next'), file);
    };
    const bombed = `${text}\n# hardened test\nx-a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nx-b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nx-c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nx-d: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n`;
    const infinite = `# hardened test\n${text.replace('per_token: { max_calls_per_day: 1000 }', 'per_token: { max_calls_per_day: 1000, max_open_sessions: .inf }')}`;
    expect(infinite).not.toBe(text);
    for (const [content, error] of [
      [bombed, /:\d+:\d+ x-d\[\d\]: aliases expand the file by more than 10000 values/],
      [infinite, /:\d+:60 rate_limits\.per_token\.max_open_sessions: must be a finite number, not \.inf/],
    ] as const) {
      swap(content);
      await until('rejection', () => app.ctx.policy.status().lastRejected?.hash === createHash('sha256').update(content).digest('hex'));
      expect(app.ctx.policy.current()).toBe(good);
      const res = await app.inject({ url: '/v1/policy', headers: bearer(owner) });
      expect(res.json()).toMatchObject({ hash: good.hash, file_rejected: true });
      expect(res.json().last_rejected.errors[0]).toMatch(error);
      let alerts: Array<{ message: string }> = [];
      for (let i = 0; i < 40 && !alerts.some((a) => error.test(a.message)); i++) {
        alerts = (await app.inject({ url: '/v1/alerts?kind=POLICY_REJECTED', headers: bearer(owner) })).json().alerts;
        if (!alerts.some((a) => error.test(a.message))) await new Promise((r) => setTimeout(r, 50));
      }
      expect(alerts.some((a) => error.test(a.message))).toBe(true);
    }
  });

  it('GET /v1/policy (viewer): the file, hash and load time in force, its warnings, and the last rejected reload with its errors; 401 without a key, 403 for an agent token', async () => {
    const file = join(dir, 'shown.yaml');
    copyFileSync('test/fixtures/policy/test.yaml', file);
    const app = await t.app({ policyFile: file });
    const owner = await t.operatorKey(app, 'owner');
    const viewer = await t.operatorKey(app, 'viewer');
    const get = () => app.inject({ url: '/v1/policy', headers: bearer(viewer) });
    const good = app.ctx.policy.current();
    let res = await get();
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ path: file, hash: good.hash, loaded_at: good.loadedAt.toISOString(), warnings: good.warnings.map(formatIssue), roles: [...good.roles.keys()].sort(), file_rejected: false, last_rejected: null });
    expect(res.json().roles).toContain('code_agent');

    // The file cut short before prohibited_capabilities: refused, and shown with why.
    const text = readFileSync(file, 'utf8');
    const cut = text.slice(0, text.indexOf('prohibited_capabilities:'));
    writeFileSync(file, cut);
    expect(await app.ctx.policy.reload()).toBe('rejected');
    res = await get();
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({ hash: good.hash, file_rejected: true, last_rejected: { hash: createHash('sha256').update(cut).digest('hex') } });
    for (const section of ['prohibited_capabilities', 'rate_limits']) {
      expect(body.last_rejected.errors.some((e: string) => e.startsWith(`${file}:1:1 ${section}: missing, but the policy in force has it`)), section).toBe(true);
    }
    expect(new Date(body.last_rejected.at).getTime()).toBeGreaterThanOrEqual(good.loadedAt.getTime());
    expect((await app.inject({ url: '/readyz' })).json().warnings).toEqual(['policy file rejected: the last good policy is in force']);

    const anonymous = await app.inject({ url: '/v1/policy' });
    expect(anonymous.statusCode).toBe(401);
    expect(anonymous.json().error.code).toBe('UNAUTHENTICATED');
    const agent = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { type: 'ro', role: 'code_agent', project_id: 'p1', environment: 'development' } });
    expect(agent.statusCode, agent.body).toBe(201);
    const refused = await app.inject({ url: '/v1/policy', headers: bearer(agent.json().token as string) });
    expect(refused.statusCode).toBe(403);
    expect(refused.json().error.code).toBe('MCP_TOKEN_FORBIDDEN');
  });
});
