import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, wellKnownSecretsInUse } from '../../src/config.js';

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
    expect(wellKnownSecretsInUse(loadConfig({ HOST: '0.0.0.0' }))).toEqual(['UNLEASH_API_TOKEN', 'UNLEASH_ADMIN_TOKEN', 'UNLEASH_WEBHOOK_SECRET', 'UNLEASH_ADMIN_PASSWORD']);
  });

  it('name only those still at their default (the password only for the embedded Unleash; the compose placeholder of TOKEN_HASH_SECRET)', () => {
    const env = {
      HOST: '10.0.0.5',
      UNLEASH_URL: 'https://unleash.internal/api',
      UNLEASH_API_TOKEN: 'default:production.0f3a',
      UNLEASH_ADMIN_TOKEN: '*:*.9c1e',
      TOKEN_HASH_SECRET: 'change-me-to-a-long-random-string-of-48-chars',
    };
    expect(wellKnownSecretsInUse(loadConfig(env))).toEqual(['UNLEASH_WEBHOOK_SECRET', 'TOKEN_HASH_SECRET']);
    expect(wellKnownSecretsInUse(loadConfig({ ...env, UNLEASH_WEBHOOK_SECRET: 'k2', TOKEN_HASH_SECRET: 'x'.repeat(48) }))).toEqual([]);
  });
});
