import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';

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

  it('never echoes a secret value in the error', () => {
    try {
      loadConfig({ DATABASE_URL: 'postgres-password-hunter2 nope' });
    } catch (err) {
      expect((err as Error).message).not.toContain('hunter2');
    }
  });
});
