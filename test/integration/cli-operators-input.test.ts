import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killswitch } from '../helpers/cli.js';
import { bearer, TestContext } from '../helpers/context.js';

const t = new TestContext();
beforeAll(() => t.setup());
afterAll(() => t.teardown());

const cli = (args: string[], env: Record<string, string> = {}, cwd?: string) => killswitch(args, { env, ...(cwd ? { cwd } : {}) });

describe('killswitch CLI: operators create checks its input as POST /v1/operator-keys does', () => {
  it('operators create checks --name as POST /v1/operator-keys does: no visible character, a bidi override or a line break → exit 2, no key', async () => {
    const env = { DATABASE_URL: t.databaseUrl, TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234', LOG_LEVEL: 'warn' };
    const keys = async () => (await t.pool().query('SELECT count(*)::int AS n FROM operator_keys')).rows[0].n;
    const before = await keys();
    const cases: Array<[string, string]> = [
      ['\u200B\u200D', 'must contain at least one visible character'],
      ['   ', 'must contain at least one visible character'],
      ['ana\u202Etxt.exe', 'must not contain control characters'],
      ['ana\nOperator root revoked every token', 'must not contain control characters'],
    ];
    for (const [name, problem] of cases) {
      const res = await cli(['operators', 'create', '--role', 'owner', '--name', name], env);
      expect(res.code, `${JSON.stringify(name)}: ${res.stderr}`).toBe(2);
      expect(res.stderr).toContain(`--name: ${problem}`);
      expect(res.stdout).toBe('');
    }
    expect(await keys()).toBe(before);
  }, 120_000); // one CLI process per case

  it('operators create checks --project as POST /v1/operator-keys does: a project id the route refuses, or one given twice → exit 2, no key', async () => {
    const env = { DATABASE_URL: t.databaseUrl, TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234', LOG_LEVEL: 'warn' };
    const keys = async () => (await t.pool().query('SELECT count(*)::int AS n FROM operator_keys')).rows[0].n;
    const app = await t.app();
    const owner = await t.operatorKey(app, 'owner');
    const before = await keys();
    const cases: Array<[string[], string]> = [
      [['alpha beta'], '--project "alpha beta": must be 1 to 100 characters'],
      [['alpha', 'team/prod'], '--project "team/prod": must be 1 to 100 characters'],
      [['x'.repeat(101)], `--project "${'x'.repeat(101)}": must be 1 to 100 characters`],
      [['al\u202Epha'], '--project "al\\u202epha": must be 1 to 100 characters'],
      [['alpha', 'alpha'], '--project "alpha": given more than once'],
    ];
    for (const [projects, problem] of cases) {
      const res = await cli(['operators', 'create', '--role', 'viewer', '--name', 'scoped', '--project', ...projects], env);
      expect(res.code, `${JSON.stringify(projects)}: ${res.stderr}`).toBe(2);
      expect(res.stderr).toContain(problem);
      expect(res.stdout).toBe('');
      // The same projects are refused by the route: the command accepts no key the API would not make.
      const route = await app.inject({ method: 'POST', url: '/v1/operator-keys', headers: bearer(owner), payload: { name: 'scoped', role: 'viewer', projects } });
      expect(route.statusCode, JSON.stringify(projects)).toBe(400);
      expect(route.json().error.details[0].field).toMatch(/^projects/);
    }
    expect(await keys()).toBe(before);

    const ok = await cli(['operators', 'create', '--role', 'viewer', '--name', 'scoped', '--project', 'alpha', 'team_b.2-x'], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect((await t.pool().query(`SELECT projects FROM operator_keys WHERE name = 'scoped'`)).rows).toEqual([{ projects: ['alpha', 'team_b.2-x'] }]);
    await t.close(app);
  }, 120_000); // six CLI processes: a few seconds each when the machine is busy
});
