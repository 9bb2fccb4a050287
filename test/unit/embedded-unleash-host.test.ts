import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { embeddedOptionsFromConfig, publishedAdminDefaults } from '../../src/flags/embedded.js';

const secrets = { UNLEASH_ADMIN_TOKEN: '*:*.3f9a1c0b7d2e4a6b8c1d', UNLEASH_ADMIN_PASSWORD: 'a-long-admin-password' };

describe('where the embedded Unleash listens', () => {
  it('loopback when HOST is loopback, whatever the credentials', () => {
    expect(embeddedOptionsFromConfig(loadConfig({})).host).toBe('127.0.0.1');
    expect(embeddedOptionsFromConfig(loadConfig({ ...secrets })).host).toBe('127.0.0.1');
  });

  it('beyond loopback with HOST=0.0.0.0 only when neither admin credential is a published default', () => {
    expect(embeddedOptionsFromConfig(loadConfig({ HOST: '0.0.0.0', ...secrets })).host).toBe('0.0.0.0');
    expect(embeddedOptionsFromConfig(loadConfig({ HOST: '::', ...secrets })).host).toBe('::');
    // Anyone reaching its port with a published credential could turn a flag back on.
    expect(embeddedOptionsFromConfig(loadConfig({ HOST: '0.0.0.0' })).host).toBe('127.0.0.1');
    expect(embeddedOptionsFromConfig(loadConfig({ HOST: '0.0.0.0', UNLEASH_ADMIN_PASSWORD: secrets.UNLEASH_ADMIN_PASSWORD })).host).toBe('127.0.0.1');
    expect(embeddedOptionsFromConfig(loadConfig({ HOST: '0.0.0.0', UNLEASH_ADMIN_TOKEN: secrets.UNLEASH_ADMIN_TOKEN })).host).toBe('127.0.0.1');
  });

  it('names the credentials still at their published values', () => {
    expect(publishedAdminDefaults(loadConfig({}))).toEqual(['UNLEASH_ADMIN_TOKEN', 'UNLEASH_ADMIN_PASSWORD']);
    expect(publishedAdminDefaults(loadConfig({ UNLEASH_ADMIN_TOKEN: secrets.UNLEASH_ADMIN_TOKEN }))).toEqual(['UNLEASH_ADMIN_PASSWORD']);
    expect(publishedAdminDefaults(loadConfig(secrets))).toEqual([]);
  });
});
