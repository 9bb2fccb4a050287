import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, precheckHashSecret } from '../../src/app.js';
import { ConfigError } from '../../src/config.js';
import { hashSecretFingerprint } from '../../src/tokens/secret-fingerprint.js';
import { bearer, LogCapture, TestContext } from '../helpers/context.js';

// Start-up refusals that need a database: replicas whose TOKEN_HASH_SECRET is not the one the
// credentials were hashed with, and the errors that must name the setting at fault.

const SECRET = 'test-secret-test-secret-test-secret-1234';
const OTHER = 'another-secret-another-secret-another-1234';

const contexts: TestContext[] = [];
async function database(): Promise<TestContext> {
  const t = await new TestContext().setup();
  contexts.push(t);
  return t;
}
afterAll(async () => {
  for (const t of contexts) await t.teardown();
});

async function refusal(p: Promise<unknown>): Promise<ConfigError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return err as ConfigError;
}

async function settings(t: TestContext): Promise<Record<string, string>> {
  const { rows } = await t.pool().query<{ key: string; value: string }>(`SELECT key, value FROM settings WHERE key LIKE 'token_hash%'`);
  return Object.fromEntries(rows.map((r) => [r.key, r.value]));
}

describe('TOKEN_HASH_SECRET is checked against the database at start', () => {
  let t: TestContext;
  let ownerKey: string;
  beforeAll(async () => {
    t = await database();
  });

  it('the first start records a fingerprint of the secret (never the secret itself)', async () => {
    const app = await t.app({ tokenHashSecret: SECRET });
    ownerKey = await t.operatorKey(app, 'owner');
    const stored = await settings(t);
    expect(stored).toEqual({ token_hash_fingerprint: hashSecretFingerprint(SECRET) });
    expect(JSON.stringify(stored)).not.toContain(SECRET);
    expect(t.logs.text).toContain('TOKEN_HASH_SECRET: recorded the fingerprint of the configured secret');
  });

  it('a replica with another TOKEN_HASH_SECRET refuses to start, naming it and the way out', async () => {
    const err = await refusal(t.app({ tokenHashSecret: OTHER }));
    expect(err.variable).toBe('TOKEN_HASH_SECRET');
    expect(err.message).toContain("this database's credentials (operator keys, gateway keys, agent tokens) were hashed with another secret than the TOKEN_HASH_SECRET this replica is given");
    expect(err.message).toContain('Set TOKEN_HASH_SECRET to the same value on every replica');
    expect(err.message).toContain('docs/operations.md, "Changing TOKEN_HASH_SECRET"');
    expect(err.message).not.toContain(OTHER);
    expect(err.message).not.toContain(SECRET);
  });

  it('a replica without TOKEN_HASH_SECRET refuses to start rather than generate a secret of its own', async () => {
    const err = await refusal(t.app({ tokenHashSecret: undefined }));
    expect(err.variable).toBe('TOKEN_HASH_SECRET');
    expect(err.message).toContain('TOKEN_HASH_SECRET is not set, and the database stores no generated secret');
    expect(await settings(t)).toEqual({ token_hash_fingerprint: hashSecretFingerprint(SECRET) });
  });

  it('a replica with the same secret starts, and the credentials work on it', async () => {
    const again = await t.app({ tokenHashSecret: SECRET });
    expect((await again.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(ownerKey) })).statusCode).toBe(200);
  });
});

describe('installations from before the fingerprint', () => {
  it('a generated secret stored in the database keeps starting; the first start records its fingerprint, and another TOKEN_HASH_SECRET is refused', async () => {
    const t = await database();
    // What a start without TOKEN_HASH_SECRET left in the database before this version.
    await t.pool().query(`INSERT INTO settings (key, value) VALUES ('token_hash_secret', 'generated-generated-generated-generated-1234')`);
    const app = await t.app({ tokenHashSecret: undefined });
    const owner = await t.operatorKey(app, 'owner');
    expect((await settings(t))['token_hash_fingerprint']).toBe(hashSecretFingerprint('generated-generated-generated-generated-1234'));

    const err = await refusal(t.app({ tokenHashSecret: OTHER }));
    expect(err.variable).toBe('TOKEN_HASH_SECRET');
    // Set on purpose to the stored value: the same secret, so it starts.
    const same = await t.app({ tokenHashSecret: 'generated-generated-generated-generated-1234' });
    expect((await same.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(owner) })).statusCode).toBe(200);
  });

  it('a stored generated secret and a TOKEN_HASH_SECRET that differs, with no fingerprint yet: refused, the leftover explained', async () => {
    const t = await database();
    await t.pool().query(`INSERT INTO settings (key, value) VALUES ('token_hash_secret', 'generated-generated-generated-generated-1234')`);
    const err = await refusal(t.app({ tokenHashSecret: SECRET }));
    expect(err.variable).toBe('TOKEN_HASH_SECRET');
    expect(err.message).toContain('records no fingerprint of its secret yet');
    expect((await settings(t))['token_hash_fingerprint']).toBeUndefined();
  });

  it('a configured TOKEN_HASH_SECRET with nothing stored (set from the first start): its fingerprint is recorded at the first start after the upgrade', async () => {
    const t = await database();
    expect(await settings(t)).toEqual({});
    await t.app({ tokenHashSecret: SECRET });
    expect(await settings(t)).toEqual({ token_hash_fingerprint: hashSecretFingerprint(SECRET) });
  });
});

describe('start-up errors name the setting at fault', () => {
  it('a POLICY_FILE that does not exist is a configuration error with the absolute path it was looked for at', async () => {
    const t = await database();
    const err = await refusal(t.app({ policyFile: 'policy/no-such-policy.yaml' }));
    expect(err.variable).toBe('POLICY_FILE');
    expect(err.message).toContain(`no file at ${resolve('policy/no-such-policy.yaml')}`);
    expect(err.message).toContain(`resolved against the working directory, ${process.cwd()}`);
  });

  it('an unreachable DATABASE_URL is named with its host:port, never its password', async () => {
    const t = await database();
    const logs = new LogCapture();
    const err = await buildApp(t.config({ databaseUrl: 'postgres://killswitch:pw-never-shown@127.0.0.1:5439/killswitch' }), { logStream: logs }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/^cannot connect to Postgres at 127\.0\.0\.1:5439, database killswitch, user killswitch \(DATABASE_URL\): .*ECONNREFUSED/);
    expect(err?.message).not.toContain('pw-never-shown');
  });

  it('the check before the flags sync lets a first start through: a database not there yet is created by the start, not refused', async () => {
    const t = await database();
    const absent = new URL(t.config().databaseUrl);
    absent.pathname = `/${t.name}_first`;
    await expect(precheckHashSecret(t.config({ databaseUrl: absent.toString() }))).resolves.toBeUndefined();
    const app = await buildApp(t.config({ databaseUrl: absent.toString() }), { logStream: new LogCapture() });
    await app.close();
    await t.pool().query(`DROP DATABASE IF EXISTS "${t.name}_first" WITH (FORCE)`);
    // An unreachable Postgres still stops it there, named.
    await expect(precheckHashSecret(t.config({ databaseUrl: 'postgres://127.0.0.1:5439/killswitch' }))).rejects.toThrow(/^cannot connect to Postgres at 127\.0\.0\.1:5439, database killswitch \(DATABASE_URL\)/);
  });

  it('UNLEASH_API_TOKEN of another environment is refused before anything connects', async () => {
    const t = await database();
    // An unreachable database: had the check run after connecting, the error would be about Postgres.
    const err = await refusal(buildApp(t.config({ databaseUrl: 'postgres://127.0.0.1:5439/x', unleashApiToken: 'default:development.x', unleashEnvironment: 'production' })));
    expect(err.variable).toBe('UNLEASH_API_TOKEN');
    expect(err.message).toContain('UNLEASH_API_TOKEN is for Unleash environment "development" but UNLEASH_ENVIRONMENT=production');
  });
});
