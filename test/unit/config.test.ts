import { describe, expect, it } from 'vitest';
import { ConfigError, checkStartConfig, configWarnings, loadConfig, wellKnownSecretsInUse } from '../../src/config.js';
import { generateCredential } from '../../src/tokens/format.js';

describe('config', () => {
  it('has defaults that work on a fresh machine', () => {
    const c = loadConfig({});
    expect(c.databaseUrl).toBe('postgres://postgres@127.0.0.1:5432/killswitch');
    expect(c.redisUrl).toBe('redis://127.0.0.1:6379');
    expect(c.port).toBe(8080);
  });

  it('names the bad variable and shows an example', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(ConfigError);
    try {
      loadConfig({ PORT: 'eighty' });
    } catch (err) {
      expect((err as ConfigError).variable).toBe('PORT');
      expect((err as Error).message).toMatch(/PORT=.*Example: PORT=8080/);
    }
    expect(() => loadConfig({ DATABASE_URL: 'not a url' })).toThrow(/DATABASE_URL/);
    expect(() => loadConfig({ LOG_LEVEL: 'loud' })).toThrow(/LOG_LEVEL.*one of/);
    expect(() => loadConfig({ TOKEN_HASH_SECRET: 'short' })).toThrow(/TOKEN_HASH_SECRET/);
  });

  it('RECORDS_RETENTION_DAYS: 90 days by default, 0 keeps the records forever, anything else is refused naming the variable', () => {
    expect(loadConfig({}).recordsRetentionDays).toBe(90);
    expect(loadConfig({ RECORDS_RETENTION_DAYS: '0' }).recordsRetentionDays).toBe(0);
    expect(loadConfig({ RECORDS_RETENTION_DAYS: '365' }).recordsRetentionDays).toBe(365);
    for (const bad of ['-1', '30d', 'ninety', '1.5', '36501']) {
      let err: unknown;
      try {
        loadConfig({ RECORDS_RETENTION_DAYS: bad });
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).variable).toBe('RECORDS_RETENTION_DAYS');
      expect((err as Error).message).toMatch(/^RECORDS_RETENTION_DAYS=.* is invalid: .*Example: RECORDS_RETENTION_DAYS=365$/);
    }
  });

  it('never echoes a secret value in the error', () => {
    try {
      loadConfig({ DATABASE_URL: 'postgres-password-hunter2 nope' });
    } catch (err) {
      expect((err as Error).message).not.toContain('hunter2');
    }
  });
});

describe('well-known default secrets', () => {
  it('are reported only when HOST reaches beyond this machine', () => {
    expect(wellKnownSecretsInUse(loadConfig({}))).toEqual([]);
    expect(wellKnownSecretsInUse(loadConfig({ HOST: '::1' }))).toEqual([]);
    expect(wellKnownSecretsInUse(loadConfig({ HOST: '0.0.0.0' }))).toEqual(['UNLEASH_API_TOKEN', 'UNLEASH_ADMIN_TOKEN', 'UNLEASH_ADMIN_PASSWORD']);
  });

  it('UNLEASH_WEBHOOK_SECRET has no default (one is generated and stored in the database); empty is unset; its old published default is still named when set', () => {
    expect(loadConfig({}).unleashWebhookSecret).toBeUndefined();
    expect(loadConfig({ UNLEASH_WEBHOOK_SECRET: '' }).unleashWebhookSecret).toBeUndefined();
    expect(loadConfig({ UNLEASH_WEBHOOK_SECRET: 'k2' }).unleashWebhookSecret).toBe('k2');
    expect(wellKnownSecretsInUse(loadConfig({ HOST: '0.0.0.0', UNLEASH_WEBHOOK_SECRET: 'killswitch-dev-webhook-secret' }))).toContain('UNLEASH_WEBHOOK_SECRET');
  });

  it('name only those still at their default (the password only for the embedded Unleash; the compose placeholder of TOKEN_HASH_SECRET)', () => {
    const env = {
      HOST: '10.0.0.5',
      UNLEASH_URL: 'https://unleash.internal/api',
      UNLEASH_API_TOKEN: 'default:production.0f3a',
      UNLEASH_ADMIN_TOKEN: '*:*.9c1e',
      TOKEN_HASH_SECRET: 'change-me-to-a-long-random-string-of-48-chars',
    };
    expect(wellKnownSecretsInUse(loadConfig(env))).toEqual(['TOKEN_HASH_SECRET']);
    expect(wellKnownSecretsInUse(loadConfig({ ...env, UNLEASH_WEBHOOK_SECRET: 'k2', TOKEN_HASH_SECRET: 'x'.repeat(48) }))).toEqual([]);
  });
});

function refusal(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('BOOTSTRAP_OWNER_KEY', () => {
  it('accepts an operator key as the product makes them', () => {
    const key = generateCredential('ksop_');
    expect(loadConfig({ BOOTSTRAP_OWNER_KEY: key }).bootstrapOwnerKey).toBe(key);
    expect(loadConfig({}).bootstrapOwnerKey).toBeUndefined();
  });

  it('refuses anything else, naming the variable, saying what a valid one is and what to do, never echoing the value', () => {
    const valid = generateCredential('ksop_');
    const cases: Array<[string, string]> = [
      ['my-owner-key', 'it does not start with ksop_'],
      ['ksop_my-own-owner-key', 'after ksop_ it is not 28 letters and digits ending in a valid checksum'],
      [valid.slice(0, -1), 'after ksop_ it is not 28 letters and digits ending in a valid checksum'],
      [`${valid.slice(0, -1)}${valid.endsWith('A') ? 'B' : 'A'}`, 'after ksop_ it is not 28 letters and digits ending in a valid checksum'],
      [generateCredential('ksgw_'), 'it is a gateway key (ksgw_), not an operator key'],
      [generateCredential('mcp_admin_'), 'it is an agent token (mcp_), not an operator key'],
    ];
    for (const [value, why] of cases) {
      const err = refusal(() => loadConfig({ BOOTSTRAP_OWNER_KEY: value }));
      expect(err.variable, value).toBe('BOOTSTRAP_OWNER_KEY');
      expect(err.message).toContain(`BOOTSTRAP_OWNER_KEY=(hidden) is invalid: ${why}`);
      expect(err.message).toContain('ksop_ followed by 28 letters and digits, the last 6 a checksum of the rest');
      expect(err.message).toContain('Leave BOOTSTRAP_OWNER_KEY unset: the first start then generates a working owner key itself (its output says where to find it).');
      expect(err.message).not.toContain(value);
    }
  });
});

describe('UNLEASH_URL and PUBLIC_URL', () => {
  it('are http(s) URLs or empty (embedded Unleash; http://HOST:PORT)', () => {
    expect(loadConfig({}).unleashUrl).toBe('');
    expect(loadConfig({}).publicUrl).toBe('');
    expect(loadConfig({ UNLEASH_URL: 'https://unleash.internal/api', PUBLIC_URL: 'http://killswitch.internal:8080' })).toMatchObject({
      unleashUrl: 'https://unleash.internal/api',
      publicUrl: 'http://killswitch.internal:8080',
    });
    for (const env of ['UNLEASH_URL', 'PUBLIC_URL']) {
      for (const bad of ['not-a-url', 'unleash.internal:4242', 'ftp://unleash.internal/api', 'http://', '/api']) {
        const err = refusal(() => loadConfig({ [env]: bad }));
        expect(err.variable, `${env}=${bad}`).toBe(env);
        expect(err.message).toMatch(new RegExp(`^${env}=${JSON.stringify(JSON.stringify(bad)).slice(1, -1).replace(/[/.]/g, '\\$&')} is invalid: expected an http\\(s\\) URL\\. Example: ${env}=http`));
      }
    }
  });

  it('UNLEASH_URL without /api is accepted with a warning that names the expected form', () => {
    expect(configWarnings(loadConfig({}))).toEqual([]);
    expect(configWarnings(loadConfig({ UNLEASH_URL: 'https://unleash.internal/api' }))).toEqual([]);
    expect(configWarnings(loadConfig({ UNLEASH_URL: 'https://unleash.internal/unleash/api/' }))).toEqual([]);
    const [warning, ...rest] = configWarnings(loadConfig({ UNLEASH_URL: 'http://127.0.0.1:4242' }));
    expect(rest).toEqual([]);
    expect(warning).toMatch(/^UNLEASH_URL=http:\/\/127\.0\.0\.1:4242 does not end in \/api: /);
    expect(warning).toMatch(/Expected: UNLEASH_URL=http:\/\/127\.0\.0\.1:4242\/api$/);
    expect(configWarnings(loadConfig({ UNLEASH_URL: 'https://edge.internal/unleash/' }))[0]).toMatch(/Expected: UNLEASH_URL=https:\/\/edge\.internal\/unleash\/api$/);
    // Credentials in the URL are not repeated (loadConfig refuses them; a Config built otherwise may hold them).
    expect(configWarnings({ ...loadConfig({}), unleashUrl: 'https://user:pw-hidden@unleash.internal' })[0]).not.toContain('pw-hidden');
  });
});

describe('a password in a URL setting', () => {
  it('UNLEASH_URL and PUBLIC_URL with a user name or password are refused, without repeating them (they are logged and printed as given)', () => {
    for (const env of ['UNLEASH_URL', 'PUBLIC_URL']) {
      for (const url of ['https://user:pw-hidden-1@unleash.internal/api', 'https://:pw-hidden-1@unleash.internal/api', 'https://pw-hidden-1@unleash.internal/api']) {
        const err = refusal(() => loadConfig({ [env]: url }));
        expect(err.variable, `${env}=${url}`).toBe(env);
        expect(err.message).toMatch(new RegExp(`^${env} holds a user name or password \\(https://\\*\\*\\*@unleash\\.internal\\): remove them\\. Example: ${env}=http`));
        expect(err.message).not.toContain('pw-hidden-1');
      }
    }
  });

  it('an invalid URL setting that is not a secret is repeated with its password masked', () => {
    for (const [env, url] of [
      ['UNLEASH_URL', 'ftp://user:pw-hidden-2@unleash.internal/api'],
      ['KILLSWITCH_URL', 'not a url://user:pw-hidden-2@host'],
      ['OTEL_EXPORTER_OTLP_ENDPOINT', 'ftp://user:pw-hidden-2@otel:4318'],
    ] as const) {
      const err = refusal(() => loadConfig({ [env]: url }));
      expect(err.variable, `${env}=${url}`).toBe(env);
      expect(err.message).toContain('://user:[REDACTED]@');
      expect(err.message).not.toContain('pw-hidden-2');
    }
  });
});

describe('UNLEASH_API_TOKEN of another environment than UNLEASH_ENVIRONMENT', () => {
  it('is refused by the start checks, with the message that names both', () => {
    const err = refusal(() => checkStartConfig(loadConfig({ UNLEASH_API_TOKEN: 'default:development.abc', UNLEASH_ENVIRONMENT: 'production' })));
    expect(err.variable).toBe('UNLEASH_API_TOKEN');
    expect(err.message).toBe(
      'UNLEASH_API_TOKEN is for Unleash environment "development" but UNLEASH_ENVIRONMENT=production: flags would be read from the wrong environment. Example: UNLEASH_API_TOKEN=default:production.<secret>',
    );
    // The default token is for development: UNLEASH_ENVIRONMENT=production needs a token of its own.
    expect(() => checkStartConfig(loadConfig({ UNLEASH_ENVIRONMENT: 'production' }))).toThrow(ConfigError);
  });

  it('passes a token of the same environment or of every environment (*)', () => {
    expect(() => checkStartConfig(loadConfig({}))).not.toThrow();
    expect(() => checkStartConfig(loadConfig({ UNLEASH_API_TOKEN: 'default:production.abc', UNLEASH_ENVIRONMENT: 'production' }))).not.toThrow();
    expect(() => checkStartConfig(loadConfig({ UNLEASH_API_TOKEN: '*:*.abc', UNLEASH_ENVIRONMENT: 'production' }))).not.toThrow();
  });

  it('is not a reason to refuse commands that do not read flags (flags sync with the admin token only, kill)', () => {
    expect(loadConfig({ UNLEASH_ENVIRONMENT: 'production' }).unleashEnvironment).toBe('production');
  });
});

describe('UNLEASH_DATABASE_URL', () => {
  it("unset, is DATABASE_URL's server, user, password and parameters with _unleash after its database name", () => {
    expect(loadConfig({}).unleashDatabaseUrl).toBe('postgres://postgres@127.0.0.1:5432/killswitch_unleash');
    const c = loadConfig({ DATABASE_URL: 'postgres://ks:s3cret@db.internal:6543/prod_ks?sslmode=require&application_name=ks' });
    expect(c.unleashDatabaseUrl).toBe('postgres://ks:s3cret@db.internal:6543/prod_ks_unleash?sslmode=require&application_name=ks');
    // No database in the URL: the default name's.
    expect(loadConfig({ DATABASE_URL: 'postgresql://ks@db', UNLEASH_DATABASE_URL: '' }).unleashDatabaseUrl).toBe('postgresql://ks@db/killswitch_unleash');
    // Overrides (tests, bench) derive from their own DATABASE_URL too.
    expect(loadConfig({}, { databaseUrl: 'postgres://a:b@h:1/x' }).unleashDatabaseUrl).toBe('postgres://a:b@h:1/x_unleash');
    // Two installations on one Postgres never share an Unleash (a flag turned off for one would stop the other).
    expect(loadConfig({ DATABASE_URL: 'postgres://p@db/team_a' }).unleashDatabaseUrl).not.toBe(loadConfig({ DATABASE_URL: 'postgres://p@db/team_b' }).unleashDatabaseUrl);
    // Within Postgres's 63-byte names.
    expect(new URL(loadConfig({ DATABASE_URL: `postgres://p@db/${'d'.repeat(63)}` }).unleashDatabaseUrl).pathname).toBe(`/${'d'.repeat(55)}_unleash`);
  });

  it('set, is used as given', () => {
    const c = loadConfig({ DATABASE_URL: 'postgres://ks:pw@db:5432/killswitch', UNLEASH_DATABASE_URL: 'postgres://unleash:pw2@other:5432/unleash' });
    expect(c.unleashDatabaseUrl).toBe('postgres://unleash:pw2@other:5432/unleash');
  });

  it("is refused by the start checks when it names DATABASE_URL's database and Unleash is embedded", () => {
    const err = refusal(() => checkStartConfig(loadConfig({ DATABASE_URL: 'postgres://ks:pw@db:5432/killswitch', UNLEASH_DATABASE_URL: 'postgres://ks:pw@db:5432/killswitch' })));
    expect(err.variable).toBe('UNLEASH_DATABASE_URL');
    expect(err.message).not.toContain('pw@');
    expect(() => checkStartConfig(loadConfig({ DATABASE_URL: 'postgres://a@db/ks', UNLEASH_DATABASE_URL: 'postgres://b:x@DB:5432/ks' }))).toThrow(ConfigError);
    // An external Unleash has its own database.
    expect(() => checkStartConfig(loadConfig({ DATABASE_URL: 'postgres://ks@db/killswitch_unleash', UNLEASH_URL: 'http://unleash:4242/api' }))).not.toThrow();
    expect(() => checkStartConfig(loadConfig({ DATABASE_URL: 'postgres://ks@db/ks', UNLEASH_DATABASE_URL: 'postgres://ks@db:5433/ks' }))).not.toThrow();
  });
});

describe('TRUST_PROXY', () => {
  it('takes addresses, CIDR ranges and the named ranges; refuses anything else naming the variable', () => {
    expect(loadConfig({}).trustProxy).toEqual([]);
    expect(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1,::1,fd00::/8,loopback' }).trustProxy).toEqual(['10.0.0.0/8', '127.0.0.1', '::1', 'fd00::/8', 'loopback']);
    for (const bad of ['10.0.0.0/33', 'lb.internal', '10.0.0.1/8/1', 'true', '*']) {
      expect(() => loadConfig({ TRUST_PROXY: bad }), bad).toThrow(/TRUST_PROXY names/);
    }
  });
});
