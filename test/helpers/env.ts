// Where the test suite finds Postgres and Redis. Defaults match the development machine and CI.
export const TEST_PG_URL = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const TEST_REDIS_URL = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
/**
 * The migrated database every test file clones its own from: one per run, named after the run's process
 * (global-setup.ts sets KILLSWITCH_TEST_TEMPLATE before any test worker starts, and drops it at the end),
 * so two runs on one Postgres (the suite, and a file run beside it) never drop each other's template.
 */
export const TEMPLATE_DB_PREFIX = 'killswitch_test_template';
export const TEMPLATE_DB = process.env['KILLSWITCH_TEST_TEMPLATE'] ?? TEMPLATE_DB_PREFIX;

export function dbUrl(name: string): string {
  const url = new URL(TEST_PG_URL);
  url.pathname = `/${name}`;
  return url.toString();
}
