import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';

const run = promisify(execFile);
const t = new TestContext();
beforeAll(() => t.setup());
afterAll(() => t.teardown());

async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await run('node', ['bin/killswitch.js', ...args], { env: { ...process.env, ...env }, timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('killswitch CLI', () => {
  it('config check: invalid configuration → message naming the variable, exit 2', async () => {
    const bad = await cli(['config', 'check'], { PORT: 'eighty' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('PORT');
    expect(bad.stderr).toContain('Example: PORT=8080');
    const ok = await cli(['config', 'check'], { PORT: '9999' });
    expect(ok.code).toBe(0);
  });

  it('operators create prints a working owner key once', async () => {
    const res = await cli(['operators', 'create', '--role', 'owner', '--name', 'recovery'], {
      DATABASE_URL: t.databaseUrl,
      REDIS_PREFIX: t.redisPrefix,
      TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234',
      LOG_LEVEL: 'warn',
    });
    expect(res.code).toBe(0);
    const key = res.stdout.trim();
    expect(key).toMatch(/^ksop_[0-9A-Za-z]{28}$/);
    const app = await t.app();
    const list = await app.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(key) });
    expect(list.statusCode).toBe(200);
    expect(list.json().keys.some((k: { name: string; role: string }) => k.name === 'recovery' && k.role === 'owner')).toBe(true);
  });

  it('rejects an unknown role', async () => {
    const res = await cli(['operators', 'create', '--role', 'god', '--name', 'x']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('viewer, operator or owner');
  });
});
