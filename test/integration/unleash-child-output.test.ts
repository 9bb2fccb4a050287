import { afterAll, describe, expect, it, vi } from 'vitest';
import { type EmbeddedUnleash, startEmbeddedUnleash } from '../../src/flags/embedded.js';
import { dbUrl } from '../helpers/env.js';
import { captureStderr } from '../helpers/stderr.js';
import { dropDatabase, freePort, TEST_UNLEASH_ADMIN_TOKEN, TEST_UNLEASH_API_TOKEN, unleashDatabaseName } from '../helpers/unleash.js';

// The embedded Unleash's output is piped to our stderr, which operators ship to their log store. On a new
// database Unleash logs, at info, the password it creates the admin user with: it must arrive masked.

const database = unleashDatabaseName('child_output');
let unleash: EmbeddedUnleash | undefined;

afterAll(async () => {
  vi.restoreAllMocks();
  await unleash?.stop();
  await dropDatabase(database);
});

describe('embedded Unleash output', () => {
  it('reaches our stderr without UNLEASH_ADMIN_PASSWORD, the Unleash tokens or the database password', { timeout: 120_000 }, async () => {
    await dropDatabase(database);
    const written = captureStderr();
    const adminPassword = 'planted-Admin-Passw0rd-7q4';
    unleash = await startEmbeddedUnleash({
      port: await freePort(),
      host: '127.0.0.1',
      databaseUrl: dbUrl(database),
      adminPassword,
      adminToken: TEST_UNLEASH_ADMIN_TOKEN,
      backendTokens: [TEST_UNLEASH_API_TOKEN],
      logLevel: 'info',
    });
    const text = written.join('');
    // Unleash did write the line that names the password (else this test proves nothing)...
    expect(text).toMatch(/Creating default admin user, with username 'admin' and password '\[REDACTED\]'/);
    // ...and no credential we gave it came through.
    for (const secret of [adminPassword, TEST_UNLEASH_ADMIN_TOKEN, TEST_UNLEASH_API_TOKEN]) expect(text).not.toContain(secret);
  });
});
