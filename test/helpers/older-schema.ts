import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { MIGRATIONS_DIR } from '../../src/db/migrate.js';
import { dbUrl, TEST_PG_URL } from './env.js';

/**
 * For a test of one migration on an installation that has data: an empty database of the test's own and
 * a directory holding the migrations numbered up to `upTo`. The test migrates the database from `dir`
 * (the older version), writes what such an installation holds, then runs every migration.
 */
export class OlderSchema {
  readonly name = `ks_t_${randomBytes(6).toString('hex')}`;
  readonly url = dbUrl(this.name);
  dir = '';

  constructor(private readonly upTo: number) {}

  async setup(): Promise<void> {
    await admin(`CREATE DATABASE ${this.name}`);
    this.dir = await mkdtemp(join(tmpdir(), 'ks-migrations-'));
    for (const f of await readdir(MIGRATIONS_DIR)) {
      const n = /^(\d{4})_/.exec(f)?.[1];
      if (n !== undefined && Number(n) <= this.upTo) await cp(join(MIGRATIONS_DIR, f), join(this.dir, f));
    }
  }

  async teardown(): Promise<void> {
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
    await admin(`DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`);
  }
}

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_PG_URL });
  await client.connect();
  await client.query(sql).finally(() => client.end());
}
