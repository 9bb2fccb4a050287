import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PolicyFileError } from '../../src/policy/index.js';
import { TestContext } from '../helpers/context.js';

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
});
