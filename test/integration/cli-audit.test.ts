import { writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { intentRow } from '../../src/audit/rows.js';
import { AuditService } from '../../src/audit/service.js';
import { createPool } from '../../src/db/pool.js';
import { killswitch } from '../helpers/cli.js';
import { TestContext } from '../helpers/context.js';
import { dbUrl } from '../helpers/env.js';
import { callContext } from './audit-fixtures.js';

const t = new TestContext();
beforeAll(() => t.setup());
afterAll(() => t.teardown());

const cli = (args: string[], env: Record<string, string> = {}, cwd?: string) => killswitch(args, { env, ...(cwd ? { cwd } : {}) });

describe('killswitch CLI: audit verify, and the chain-head witness lines of operators create and audit retention', () => {
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
      // CHAIN_START, the key's row, CHAIN_END.
      expect(line).toMatchObject({ msg: 'audit chain head', replica_id: rows[0]!.replica_id, seq: 3, audit_head: expect.stringMatching(new RegExp(`^${rows[0]!.replica_id}:3:[0-9a-f]{64}$`)) });

      const file = resolve(tmpdir(), `${own.name}-cli-stderr.log`);
      writeFileSync(file, res.stderr);
      const verify = await cli(['audit', 'verify', '--witnesses', file, '--json'], env);
      expect(verify.code, verify.stdout + verify.stderr).toBe(0);
      const report = JSON.parse(verify.stdout);
      expect(report.unwitnessed).toEqual([]);
      expect(report.witnesses).toMatchObject([{ replica_id: rows[0]!.replica_id, seq: 3, result: 'ok' }]);
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

  it('audit retention --days shorter than AUDIT_RETENTION_DAYS removes nothing without --yes (exit 2); a database it cannot reach is named (exit 1)', async () => {
    const own = await new TestContext().setup();
    try {
      const env = { DATABASE_URL: own.databaseUrl, AUDIT_RETENTION_DAYS: '90', TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234', LOG_LEVEL: 'warn' };
      // A row 60 days old: the retention in force (90 days) keeps it, --days 1 would remove it.
      const pool = createPool(own.databaseUrl, { max: 2 });
      const past = await AuditService.start(own.config(), pool, pino({ level: 'silent' }), { clock: () => Date.now() - 60 * 86_400_000, retentionJob: false, headLog: false, dataDir: await mkdtemp(join(tmpdir(), 'ks-cli-retention-')) });
      await past.recordIntent(intentRow(callContext({}), { decision: 'allow', code: 'OK', message: 'allowed' }));
      await past.close();
      await pool.end();
      const count = async () => Number((await own.pool().query<{ n: string }>(`SELECT count(*) AS n FROM audit_events WHERE ts < now() - interval '30 days'`)).rows[0]!.n);
      const before = await count();
      expect(before).toBeGreaterThan(0);

      const refused = await cli(['audit', 'retention', '--days', '1'], env);
      expect(refused.code, refused.stdout + refused.stderr).toBe(2);
      expect(refused.stderr).toContain('killswitch: audit retention: --days 1 is shorter than AUDIT_RETENTION_DAYS=90');
      expect(refused.stderr).toContain('add --yes to remove them. Nothing was removed.');
      expect(refused.stdout).toBe('');
      expect(await count()).toBe(before);
      // Counting needs no --yes, and neither does a run that keeps at least as much as the retention in force.
      expect((await cli(['audit', 'retention', '--days', '1', '--dry-run'], env)).code).toBe(0);
      const longer = await cli(['audit', 'retention', '--days', '365'], env);
      expect(longer.code, longer.stderr).toBe(0);
      expect(await count()).toBe(before);

      const confirmed = await cli(['audit', 'retention', '--days', '1', '--yes'], env);
      expect(confirmed.code, confirmed.stderr).toBe(0);
      expect(JSON.parse(confirmed.stdout).rows_removed).toBeGreaterThan(0);
      expect(await count()).toBe(0);
    } finally {
      await own.teardown();
    }
    // It printed `killswitch: connect ECONNREFUSED 127.0.0.1:1` alone.
    const down = await cli(['audit', 'retention', '--dry-run'], { DATABASE_URL: 'postgres://postgres:pw@127.0.0.1:1/killswitch' });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('killswitch: audit retention: cannot read the database "killswitch" on 127.0.0.1:1 named by DATABASE_URL: connect ECONNREFUSED');
    expect(down.stderr).not.toContain('pw@');
  }, 120_000);

  it('audit verify names the database it read (never the password); no audit rows is "nothing verified" (exit 3), an unreadable database exit 4, never OK', async () => {
    const env = { TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234', LOG_LEVEL: 'warn' };
    // Rows to verify: the recovery command writes its audit row (and its chain's CHAIN_START).
    const created = await cli(['operators', 'create', '--role', 'viewer', '--name', 'verify'], { ...env, DATABASE_URL: t.databaseUrl });
    expect(created.code).toBe(0);
    // Which database got the key (an operator's shell without DATABASE_URL would write to the default one).
    expect(created.stderr).toContain(`killswitch: operator key created in the database "${t.name}" on ${new URL(t.databaseUrl).host} (DATABASE_URL)`);
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

    // DATABASE_URL missing from the shell (empty counts as unset): the default database is read, and the
    // output says it is the default, whether that database answers or not (it said "(DATABASE_URL)").
    const unset = await cli(['audit', 'verify'], { ...env, DATABASE_URL: '' });
    expect(unset.stdout + unset.stderr).toContain('database "killswitch" on 127.0.0.1:5432 (the default: DATABASE_URL is not set)');

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
});
