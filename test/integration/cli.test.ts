import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { intentRow } from '../../src/audit/rows.js';
import { AuditService } from '../../src/audit/service.js';
import { createPool } from '../../src/db/pool.js';
import { bearer, TestContext } from '../helpers/context.js';
import { dbUrl, TEST_PG_URL } from '../helpers/env.js';
import { freePort } from '../helpers/unleash.js';
import { callContext } from './audit-fixtures.js';

const run = promisify(execFile);
const t = new TestContext();
beforeAll(() => t.setup());
afterAll(() => t.teardown());

async function cli(args: string[], env: Record<string, string> = {}, cwd?: string) {
  try {
    const { stdout, stderr } = await run('node', [resolve('bin/killswitch.js'), ...args], { env: { ...process.env, ...env }, timeout: 30_000, ...(cwd ? { cwd } : {}) });
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

  it('--version prints the installed version (exit 0); a usage error exits 2', async () => {
    const version = await cli(['--version']);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe((JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version);
    const unknown = await cli(['audit', 'verify', '--colour']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown option '--colour'");
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
    // The recovery path is on the record like the API's (never the key itself).
    const { rows } = await t.pool().query(`SELECT actor_type, actor_id, details FROM audit_events WHERE action = 'operator_key.created' AND details->>'name' = 'recovery'`);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ actor_type: 'system', actor_id: 'cli', details: { role: 'owner' } });
    expect(JSON.stringify(rows[0])).not.toContain(key);
  });

  it('operators create writes its chain\'s `audit chain head` line on stderr: kept as a witness, audit verify --witnesses finds that chain witnessed', async () => {
    // A database of its own: the CLI's chain is then the only one, and nothing else can witness it.
    const own = await new TestContext().setup();
    try {
      const env = { DATABASE_URL: own.databaseUrl, TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234', LOG_LEVEL: 'warn' };
      const res = await cli(['operators', 'create', '--role', 'viewer', '--name', 'witnessed'], env);
      expect(res.code, res.stderr).toBe(0);
      // The stdout is the key alone; the head line is the control plane's JSON log line.
      expect(res.stdout.trim()).toMatch(/^ksop_[0-9A-Za-z]{28}$/);
      const { rows } = await own.pool().query<{ replica_id: string }>(`SELECT replica_id::text FROM audit_events WHERE action = 'operator_key.created'`);
      expect(rows).toHaveLength(1);
      const line = JSON.parse(res.stderr.split('\n').find((l) => l.includes('audit chain head')) ?? '{}');
      expect(line).toMatchObject({ msg: 'audit chain head', replica_id: rows[0]!.replica_id, seq: 2, audit_head: expect.stringMatching(new RegExp(`^${rows[0]!.replica_id}:2:[0-9a-f]{64}$`)) });

      const file = resolve(tmpdir(), `${own.name}-cli-stderr.log`);
      writeFileSync(file, res.stderr);
      const verify = await cli(['audit', 'verify', '--witnesses', file, '--json'], env);
      expect(verify.code, verify.stdout + verify.stderr).toBe(0);
      const report = JSON.parse(verify.stdout);
      expect(report.unwitnessed).toEqual([]);
      expect(report.witnesses).toMatchObject([{ replica_id: rows[0]!.replica_id, seq: 2, result: 'ok' }]);
    } finally {
      await own.teardown();
    }
  }, 60_000);

  it('audit retention writes its chain\'s `audit chain head` line on stderr too: kept as a witness, its chain is witnessed', async () => {
    const own = await new TestContext().setup();
    try {
      const env = { DATABASE_URL: own.databaseUrl, TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234', LOG_LEVEL: 'warn' };
      // Rows 200 days old for retention to remove, written by a chain of a writer whose clock is back then.
      const pool = createPool(own.databaseUrl, { max: 2 });
      const past = await AuditService.start(own.config(), pool, pino({ level: 'silent' }), { clock: () => Date.now() - 200 * 86_400_000, retentionJob: false, headLog: false, dataDir: await mkdtemp(join(tmpdir(), 'ks-cli-retention-')) });
      await past.recordIntent(intentRow(callContext({}), { decision: 'allow', code: 'OK', message: 'allowed' }));
      await past.close();
      await pool.end();
      const res = await cli(['audit', 'retention'], env);
      expect(res.code, res.stderr).toBe(0);
      const { rows } = await own.pool().query<{ replica_id: string }>(`SELECT replica_id::text FROM audit_events WHERE action = 'audit.retention'`);
      expect(rows).toHaveLength(1);
      const line = JSON.parse(res.stderr.split('\n').find((l) => l.includes('audit chain head')) ?? '{}');
      expect(line).toMatchObject({ msg: 'audit chain head', replica_id: rows[0]!.replica_id });
      const file = resolve(tmpdir(), `${own.name}-retention-stderr.log`);
      writeFileSync(file, res.stderr);
      const verify = await cli(['audit', 'verify', '--witnesses', file, '--json'], env);
      expect(verify.code, verify.stdout + verify.stderr).toBe(0);
      const unwitnessed = JSON.parse(verify.stdout).unwitnessed as Array<{ replica_id: string }>;
      expect(unwitnessed.map((u) => u.replica_id)).not.toContain(rows[0]!.replica_id);
    } finally {
      await own.teardown();
    }
  }, 60_000);

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

  it('audit verify names the database it read (never the password); no audit rows is "nothing verified" (exit 3), an unreadable database exit 4, never OK', async () => {
    const env = { TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234', LOG_LEVEL: 'warn' };
    // Rows to verify: the recovery command writes its audit row (and its chain's CHAIN_START).
    expect((await cli(['operators', 'create', '--role', 'viewer', '--name', 'verify'], { ...env, DATABASE_URL: t.databaseUrl })).code).toBe(0);
    const withPassword = new URL(t.databaseUrl);
    withPassword.password = 'pw-never-printed';
    const ok = await cli(['audit', 'verify'], { ...env, DATABASE_URL: withPassword.toString() });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`audit verify: database "${t.name}" on ${withPassword.host} (DATABASE_URL)`);
    expect(ok.stdout).toMatch(/audit verify: \d+ rows in [1-9]\d* chains: OK/);
    expect(ok.stdout + ok.stderr).not.toContain('pw-never-printed');
    const json = await cli(['audit', 'verify', '--json'], { ...env, DATABASE_URL: withPassword.toString() });
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ database: { host: withPassword.host, database: t.name }, verified: true, ok: true });
    expect(json.stdout).not.toContain('pw-never-printed');

    // Another migrated database, with no audit rows: nothing was verified, which is not OK.
    const other = await new TestContext().setup();
    try {
      const empty = await cli(['audit', 'verify'], { ...env, DATABASE_URL: other.databaseUrl });
      expect(empty.code, empty.stdout).toBe(3);
      expect(empty.stdout).toContain(`database "${other.name}"`);
      expect(empty.stdout).toContain('0 rows in 0 chains: NOTHING VERIFIED');
      expect(empty.stdout).not.toContain(': OK');
      const emptyJson = JSON.parse((await cli(['audit', 'verify', '--json'], { ...env, DATABASE_URL: other.databaseUrl })).stdout);
      expect(emptyJson).toMatchObject({ database: { database: other.name }, verified: false, chains: 0 });
    } finally {
      await other.teardown();
    }

    // A database that does not exist, or a server that does not answer: exit 4, not the 1 of a broken chain.
    const absent = await cli(['audit', 'verify'], { ...env, DATABASE_URL: dbUrl(`${t.name}_absent`) });
    expect(absent.code, absent.stderr).toBe(4);
    expect(absent.stderr).toContain(`database "${t.name}_absent" on ${withPassword.host} named by DATABASE_URL does not exist`);
    expect(absent.stdout).toBe('');
    const down = await cli(['audit', 'verify'], { ...env, DATABASE_URL: 'postgres://postgres:pw-never-printed@127.0.0.1:1/killswitch' });
    expect(down.code, down.stderr).toBe(4);
    expect(down.stderr).toContain('cannot read the database "killswitch" on 127.0.0.1:1');
    expect(down.stderr).not.toContain('pw-never-printed');
  }, 120_000);

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

  it('config check and start refuse UNLEASH_API_TOKEN of another environment, a malformed BOOTSTRAP_OWNER_KEY, and UNLEASH_URL or PUBLIC_URL that are not http(s) URLs: exit 2 before anything connects', async () => {
    // Nothing listens on port 1: a start that connected before checking would fail on Postgres (exit 1) instead.
    const base = { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/killswitch', UNLEASH_URL: 'http://127.0.0.1:1/api', PORT: '0', LOG_LEVEL: 'warn' };
    const cases: Array<[Record<string, string>, string]> = [
      [{ UNLEASH_API_TOKEN: 'default:development.x', UNLEASH_ENVIRONMENT: 'production' }, 'UNLEASH_API_TOKEN is for Unleash environment "development" but UNLEASH_ENVIRONMENT=production'],
      [{ BOOTSTRAP_OWNER_KEY: 'ksop_my-own-owner-key-1234' }, 'BOOTSTRAP_OWNER_KEY=(hidden) is invalid'],
      [{ UNLEASH_URL: 'not-a-url' }, 'UNLEASH_URL="not-a-url" is invalid: expected an http(s) URL'],
      [{ UNLEASH_URL: 'unleash.internal:4242' }, 'UNLEASH_URL="unleash.internal:4242" is invalid: expected an http(s) URL'],
      [{ PUBLIC_URL: 'not-a-url' }, 'PUBLIC_URL="not-a-url" is invalid: expected an http(s) URL'],
    ];
    for (const [env, message] of cases) {
      for (const command of [['config', 'check'], ['start']]) {
        const res = await cli(command, { ...base, ...env });
        expect(res.code, `${command.join(' ')} ${JSON.stringify(env)}: ${res.stderr}`).toBe(2);
        expect(res.stderr).toContain(`killswitch: configuration error: ${message}`);
        expect(res.stderr).not.toContain('my-own-owner-key');
      }
    }
  }, 120_000);

  it('config check warns (exit 0) when UNLEASH_URL does not end in /api, naming the form it expects', async () => {
    const res = await cli(['config', 'check'], { UNLEASH_URL: 'http://127.0.0.1:4242' });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toContain('killswitch: warning: UNLEASH_URL=http://127.0.0.1:4242 does not end in /api');
    expect(res.stderr).toContain('Expected: UNLEASH_URL=http://127.0.0.1:4242/api');
    const ok = await cli(['config', 'check'], { UNLEASH_URL: 'http://127.0.0.1:4242/api' });
    expect(ok.code).toBe(0);
    expect(ok.stderr).toBe('');
  });

  it('config check warns when a server\'s max_execution_time_seconds is not below DECISION_META_TTL_S (the limit could never fire)', async () => {
    const file = resolve(tmpdir(), `ks-inert-limit-${process.pid}.yaml`);
    writeFileSync(file, readFileSync('policy/default.yaml', 'utf8').replace('max_execution_time_seconds: 30', 'max_execution_time_seconds: 7200'));
    const res = await cli(['config', 'check'], { POLICY_FILE: file, UNLEASH_URL: 'http://127.0.0.1:4242/api' });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/killswitch: warning: servers\.\S+\.max_execution_time_seconds is 7200, not below DECISION_META_TTL_S=3600/);
    const raised = await cli(['config', 'check'], { POLICY_FILE: file, UNLEASH_URL: 'http://127.0.0.1:4242/api', DECISION_META_TTL_S: '7201' });
    expect(raised.code).toBe(0);
    expect(raised.stderr).not.toContain('max_execution_time_seconds');
  });

  it('a POLICY_FILE missing from the working directory: config check and start exit 2 naming POLICY_FILE and the absolute path', async () => {
    const elsewhere = tmpdir();
    for (const command of [['config', 'check'], ['start']]) {
      const res = await cli(command, { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/killswitch', UNLEASH_URL: 'http://127.0.0.1:1/api', PORT: '0', POLICY_FILE: '' }, elsewhere);
      expect(res.code, `${command.join(' ')}: ${res.stderr}`).toBe(2);
      expect(res.stderr).toContain(`killswitch: configuration error: POLICY_FILE="policy/default.yaml" is invalid: no file at ${resolve(elsewhere, 'policy/default.yaml')}`);
      expect(res.stderr).toContain(`resolved against the working directory, ${elsewhere}`);
    }
  });

  it('an invalid POLICY_FILE: config check and start exit 2 with the policy errors (file:line:column) first, before the flags sync or anything else starts', async () => {
    // Nothing listens on port 1: a start that went on to the flags sync or Postgres would log that first, or exit 1.
    const env = { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/killswitch', UNLEASH_URL: 'http://127.0.0.1:1/api', PORT: '0', LOG_LEVEL: 'info', POLICY_FILE: 'test/fixtures/policy/broken.yaml' };
    for (const command of [['config', 'check'], ['start']]) {
      const res = await cli(command, env);
      expect(res.code, `${command.join(' ')}: ${res.stdout}${res.stderr}`).toBe(2);
      expect(res.stdout).toBe('');
      const lines = res.stderr.split('\n');
      expect(lines[0]).toBe('killswitch: invalid policy file test/fixtures/policy/broken.yaml (POLICY_FILE), 1 error; fix it (`killswitch policy check test/fixtures/policy/broken.yaml`):');
      expect(lines[1]).toMatch(/^test\/fixtures\/policy\/broken\.yaml:11:41 roles\.code_agent\.allowed_servers\.development\[2\]: unknown server "shel"/);
      expect(res.stderr).not.toContain('flags sync');
    }
  }, 60_000);

  it('start with an unreachable Postgres names the setting and host:port (never the password): DATABASE_URL, or UNLEASH_DATABASE_URL of the embedded Unleash', async () => {
    const env = { REDIS_PREFIX: t.redisPrefix, DATA_DIR: t.dataDir, PORT: '0', LOG_LEVEL: 'warn', TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234' };
    const db = await cli(['start'], { ...env, UNLEASH_URL: 'http://127.0.0.1:1/api', DATABASE_URL: 'postgres://killswitch:pw-never-printed@127.0.0.1:1/killswitch' });
    expect(db.code, db.stderr).toBe(1);
    expect(db.stderr).toContain('killswitch: cannot connect to Postgres at 127.0.0.1:1, database killswitch, user killswitch (DATABASE_URL): connect ECONNREFUSED 127.0.0.1:1');
    expect(db.stdout + db.stderr).not.toContain('pw-never-printed');

    const embedded = await cli(['start'], {
      ...env,
      UNLEASH_URL: '',
      UNLEASH_PORT: String(await freePort()),
      UNLEASH_DATABASE_URL: 'postgres://unleash:pw-never-printed@127.0.0.1:1/unleash',
      DATABASE_URL: t.databaseUrl,
    });
    expect(embedded.code, embedded.stderr).toBe(1);
    expect(embedded.stderr).toContain('killswitch: cannot connect to Postgres at 127.0.0.1:1, database unleash, user unleash (UNLEASH_DATABASE_URL): connect ECONNREFUSED 127.0.0.1:1');
    expect(embedded.stdout + embedded.stderr).not.toContain('pw-never-printed');
  }, 90_000);

  it('start refuses a TOKEN_HASH_SECRET other than the one the database was started with: exit 2 naming it', async () => {
    // This file's database records the fingerprint of the tests' secret.
    await t.close(await t.app());
    const res = await cli(['start'], {
      DATABASE_URL: t.databaseUrl,
      REDIS_PREFIX: t.redisPrefix,
      DATA_DIR: t.dataDir,
      UNLEASH_URL: 'http://127.0.0.1:1/api',
      PORT: '0',
      LOG_LEVEL: 'warn',
      TOKEN_HASH_SECRET: 'another-secret-another-secret-another-1234',
    });
    expect(res.code, res.stderr).toBe(2);
    expect(res.stderr).toContain("killswitch: configuration error: TOKEN_HASH_SECRET: this database's credentials (operator keys, gateway keys, agent tokens) were hashed with another secret");
    expect(res.stdout + res.stderr).not.toContain('another-secret-another');
  }, 60_000);
});
