import pg from 'pg';
import { migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import { dbUrl, TEMPLATE_DB, TEST_PG_URL } from './env.js';

/** Builds the migrated template database every test file clones its own database from. */
export default async function setup(): Promise<void> {
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DB} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${TEMPLATE_DB}`);
  } finally {
    await admin.end();
  }
  const pool = createPool(dbUrl(TEMPLATE_DB), { max: 1 });
  try {
    await migrate(pool);
  } finally {
    await pool.end();
  }
}
