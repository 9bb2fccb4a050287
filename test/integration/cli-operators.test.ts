import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killswitch } from '../helpers/cli.js';
import { bearer, TestContext } from '../helpers/context.js';
import { dbUrl, TEST_PG_URL } from '../helpers/env.js';

const t = new TestContext();
beforeAll(() => t.setup());
afterAll(() => t.teardown());

const cli = (args: string[], env: Record<string, string> = {}, cwd?: string) => killswitch(args, { env, ...(cwd ? { cwd } : {}) });

describe('killswitch CLI: operators create', () => {
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
    // The recovery path is on the record like the API's (never the key itself).
    const { rows } = await t.pool().query(`SELECT actor_type, actor_id, details FROM audit_events WHERE action = 'operator_key.created' AND details->>'name' = 'recovery'`);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ actor_type: 'system', actor_id: 'cli', details: { role: 'owner' } });
    expect(JSON.stringify(rows[0])).not.toContain(key);
  });

  it('operators create refuses a TOKEN_HASH_SECRET other than the control plane recorded: exit 2, no key (it would never authenticate)', async () => {
    // The control plane of the test above recorded the fingerprint of the test secret.
    await t.app();
    const res = await cli(['operators', 'create', '--role', 'owner', '--name', 'wrong-secret'], {
      DATABASE_URL: t.databaseUrl,
      TOKEN_HASH_SECRET: 'another-secret-another-secret-another-1234',
      LOG_LEVEL: 'warn',
    });
    expect(res.code).toBe(2);
    expect(res.stdout).toBe('');
    expect(res.stderr).toContain('is not the one your control plane hashes credentials with');
    const { rows } = await t.pool().query(`SELECT 1 FROM operator_keys WHERE name = 'wrong-secret'`);
    expect(rows).toHaveLength(0);
  });

  it('rejects an unknown role, and a missing one (no owner key by default), with exit 2', async () => {
    const res = await cli(['operators', 'create', '--role', 'god', '--name', 'x']);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('viewer, operator, owner');
    const missing = await cli(['operators', 'create', '--name', 'x'], { DATABASE_URL: t.databaseUrl, TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234' });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--role is required: one of viewer, operator, owner');
    expect(missing.stdout).toBe('');
  });

  it('operators create refuses without TOKEN_HASH_SECRET when the database stores none (it never makes up a secret)', async () => {
    const pool = t.pool();
    // An installation that never set TOKEN_HASH_SECRET: no fingerprint of the configured one the earlier tests used.
    await pool.query(`DELETE FROM settings WHERE key IN ('token_hash_secret', 'token_hash_fingerprint')`);
    const res = await cli(['operators', 'create', '--role', 'owner', '--name', 'lost'], { DATABASE_URL: t.databaseUrl, TOKEN_HASH_SECRET: '', LOG_LEVEL: 'warn' });
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('TOKEN_HASH_SECRET is not set and the database stores none');
    expect(res.stdout).toBe('');
    expect((await pool.query(`SELECT 1 FROM settings WHERE key = 'token_hash_secret'`)).rowCount).toBe(0);
    expect((await pool.query(`SELECT 1 FROM operator_keys WHERE name = 'lost'`)).rowCount).toBe(0);

    // A control plane started without TOKEN_HASH_SECRET stored one: the recovery command of the guide uses it.
    await pool.query(`INSERT INTO settings (key, value) VALUES ('token_hash_secret', 'stored-secret-stored-secret-stored-secret')`);
    try {
      const recovered = await cli(['operators', 'create', '--role', 'owner', '--name', 'you'], { DATABASE_URL: t.databaseUrl, TOKEN_HASH_SECRET: '', LOG_LEVEL: 'warn' });
      expect(recovered.code, recovered.stderr).toBe(0);
      expect(recovered.stderr).toContain('using the secret stored in the database');
      const app = await t.app({ tokenHashSecret: undefined });
      expect((await app.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(recovered.stdout.trim()) })).statusCode).toBe(200);
    } finally {
      await pool.query(`DELETE FROM settings WHERE key IN ('token_hash_secret', 'token_hash_fingerprint')`);
    }
  }, 120_000); // two CLI processes and an app: over 30 s in a loaded CI run

  it('operators create never creates or migrates a database: exit 2 naming DATABASE_URL', async () => {
    const name = `${t.name}_other`;
    const admin = new pg.Client({ connectionString: TEST_PG_URL });
    await admin.connect();
    const env = { TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234', LOG_LEVEL: 'warn', DATABASE_URL: dbUrl(name) };
    try {
      const absent = await cli(['operators', 'create', '--role', 'owner', '--name', 'x'], env);
      expect(absent.code).toBe(2);
      expect(absent.stderr).toContain(`database "${name}"`);
      expect(absent.stderr).toContain('named by DATABASE_URL does not exist');
      expect((await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount).toBe(0);

      await admin.query(`CREATE DATABASE ${name}`);
      const empty = await cli(['operators', 'create', '--role', 'owner', '--name', 'x'], env);
      expect(empty.code).toBe(2);
      expect(empty.stderr).toContain('named by DATABASE_URL is not a migrated killswitch database');
      const other = new pg.Client({ connectionString: dbUrl(name) });
      await other.connect();
      const tables = await other.query(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'`);
      await other.end();
      expect(tables.rows[0].n).toBe(0);
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
      await admin.end();
    }
  });
});
