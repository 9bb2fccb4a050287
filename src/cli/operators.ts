import { resolveHashSecret } from '../app.js';
import type { Config } from '../config.js';
import { migrate } from '../db/migrate.js';
import { createPool, ensureDatabase } from '../db/pool.js';
import { hashCredential } from '../tokens/format.js';
import { CredentialService } from '../tokens/service.js';

/**
 * Creates an operator key directly in the database (bootstrap, scripts, recovery of a lost owner key).
 * Needs only Postgres: it works while Redis or Unleash are down, which is when it is most needed.
 */
export async function operatorsCreate(config: Config, opts: { name: string; role: 'viewer' | 'operator' | 'owner'; project?: string[] }): Promise<string> {
  await ensureDatabase(config.databaseUrl);
  const pool = createPool(config.databaseUrl, { max: 1 });
  try {
    await migrate(pool);
    const secret = await resolveHashSecret(config, pool, { warn: (msg) => process.stderr.write(`${msg}\n`) });
    const credentials = new CredentialService(pool, { hash: (raw) => hashCredential(secret, raw), announceRevoked: async () => {} });
    const created = await credentials.createOperatorKey('cli', { name: opts.name, role: opts.role, projects: opts.project });
    return created.key;
  } finally {
    await pool.end();
  }
}
