import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { ConfigError } from '../../src/config.js';
import { AUDIT_WRITER_ROLE } from '../../src/db/privileges.js';
import { killswitch } from '../helpers/cli.js';
import { TestContext } from '../helpers/context.js';
import { dbUrl } from '../helpers/env.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// A managed Postgres (RDS, Cloud SQL, Azure): the control plane's user is no superuser. docs/operations.md,
// "Managed Postgres". Roles are cluster-wide: this file's are named after its context and dropped at the end.

const t = new TestContext();
const POLICY = 'test/fixtures/decisions/policy.yaml';
/** CREATEDB and CREATEROLE, in a database it owns: what RDS's master user is. */
const rds = `${t.name}_rds`;
const rdsDb = `${t.name}_rds`;
/** Neither CREATEDB nor CREATEROLE: a DBA creates what it needs. In a database another role owns. */
const plain = `${t.name}_plain`;
const plainDb = `${t.name}_plain`;
let version = 0;

async function asSuperuser<T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: dbUrl(database) });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const urlOf = (user: string, database: string) => {
  const url = new URL(dbUrl(database));
  url.username = user;
  url.password = '';
  return url.toString();
};

async function start(user: string, database: string): Promise<FastifyInstance> {
  const app = await buildApp(t.config({ databaseUrl: urlOf(user, database), policyFile: POLICY }), { logStream: t.logs });
  t.apps.push(app);
  return app;
}

async function startRefused(user: string, database: string): Promise<ConfigError> {
  const err = await start(user, database).then(
    () => new Error('started'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).variable).toBe('DATABASE_URL');
  return err as ConfigError;
}

/** An allowed call, and its INTENT row in Postgres itself (written by the writer role, not left in the spool). */
async function allowedCallIsAudited(app: FastifyInstance, database: string, table: string): Promise<void> {
  const gw = await new GatewayDriver(t, app).init();
  const tok = await gw.token('ro');
  const s = await gw.session(tok.raw);
  const d = await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' }, session_id: s.session_id });
  expect(d).toMatchObject({ decision: 'allow', code: 'OK' });
  await until(
    async () => (await asSuperuser(database, (c) => c.query(`SELECT 1 FROM ${table} WHERE decision_id = $1 AND kind = 'INTENT'`, [d.decision_id]))).rowCount === 1,
    10_000,
    'the INTENT row in Postgres',
    100,
  );
  expect(t.logs.text).not.toContain('audit INSERT failed');
}

beforeAll(async () => {
  await t.setup();
  await asSuperuser('postgres', async (c) => {
    version = Number((await c.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v);
    await c.query(`CREATE ROLE ${rds} LOGIN CREATEDB CREATEROLE NOSUPERUSER`);
    await c.query(`CREATE DATABASE ${rdsDb} OWNER ${rds}`);
    await c.query(`CREATE ROLE ${plain} LOGIN NOSUPERUSER`);
    // Owned by the superuser; the app may connect and create schemas, and `public` keeps Postgres 15's defaults.
    await c.query(`CREATE DATABASE ${plainDb}`);
    await c.query(`GRANT CONNECT, CREATE ON DATABASE ${plainDb} TO ${plain}`);
  });
});

afterAll(async () => {
  await t.teardown();
  await asSuperuser('postgres', async (c) => {
    for (const db of [rdsDb, plainDb]) await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => {});
    for (const role of [rds, plain]) {
      await c.query(`DROP OWNED BY ${role}`).catch(() => {});
      await c.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
    }
  });
});

describe('a user with CREATEDB and CREATEROLE, no superuser (RDS, Cloud SQL, Azure)', () => {
  it('migrates a database it owns, switches to the audit writer, and the audit trail is in Postgres', async () => {
    // From Postgres 16 on, a CREATEROLE user that creates the role gets ADMIN OPTION on it and nothing else:
    // migration 0002 found that "membership" enough, so the writer could never switch to it. Here the role
    // exists already (the test template made it), so the same grant stands in for having created it.
    if (version >= 160_000) await asSuperuser('postgres', (c) => c.query(`GRANT ${AUDIT_WRITER_ROLE} TO ${rds} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE`));
    const app = await start(rds, rdsDb);
    await allowedCallIsAudited(app, rdsDb, 'audit_events');
    const can = await asSuperuser(rdsDb, (c) => c.query<{ ok: boolean }>(`SELECT pg_has_role($1, $2, $3) AS ok`, [rds, AUDIT_WRITER_ROLE, version >= 160_000 ? 'SET' : 'MEMBER']));
    expect(can.rows[0]!.ok).toBe(true);
  });
});

describe('a user with neither CREATEDB nor CREATEROLE, in a database another role owns', () => {
  it('is refused before anything is created, naming every GRANT the DBA runs', async () => {
    const err = await startRefused(plain, plainDb);
    // Postgres 15 gives CREATE on public to the database owner only; the writer role was never granted.
    expect(err.message).toContain(`GRANT CREATE ON SCHEMA "public" TO "${plain}";`);
    expect(err.message).toContain(`CREATE SCHEMA AUTHORIZATION "${plain}";`);
    expect(err.message).toContain(`GRANT ${AUDIT_WRITER_ROLE} TO "${plain}"`);
    expect(err.message).toContain('docs/operations.md, "Managed Postgres"');
    const left = await asSuperuser(plainDb, (c) => c.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t"));
    expect(left.rows[0]!.t).toBeNull();
  });

  it('a database that is missing: names the CREATE DATABASE the DBA runs', async () => {
    const err = await startRefused(plain, `${t.name}_missing`);
    expect(err.message).toContain(`CREATE DATABASE "${t.name}_missing" OWNER "${plain}";`);
  });

  it("after the DBA's procedure (a schema named after the user, the writer role granted) it starts, and the CLI verifies and applies retention", async () => {
    await asSuperuser(plainDb, async (c) => {
      await c.query(`CREATE SCHEMA AUTHORIZATION ${plain}`);
      await c.query(`GRANT ${AUDIT_WRITER_ROLE} TO ${plain}`);
    });
    const app = await start(plain, plainDb);
    // The tables are in the user's schema: the writer, switched to its role, must still find them there.
    await allowedCallIsAudited(app, plainDb, `${plain}.audit_events`);
    const env = { DATABASE_URL: urlOf(plain, plainDb), DATA_DIR: t.dataDir };
    const verify = await killswitch(['audit', 'verify'], { env });
    expect(verify.code, verify.stderr).toBe(0);
    const retention = await killswitch(['audit', 'retention', '--days', '1', '--yes'], { env });
    expect(retention.code, retention.stderr).toBe(0);
    expect(JSON.parse(retention.stdout)).toHaveProperty('cutoff');
    await t.close(t.apps.pop()!);
  });

  it('a writer role taken away after the migrations stops the start, instead of spooling every audit row', async () => {
    await asSuperuser('postgres', (c) => c.query(`REVOKE ${AUDIT_WRITER_ROLE} FROM ${plain}`));
    const err = await startRefused(plain, plainDb);
    expect(err.message).toContain(`permission denied to set role "${AUDIT_WRITER_ROLE}"`);
    expect(err.message).toContain(`GRANT ${AUDIT_WRITER_ROLE} TO "${plain}"`);
  });
});
