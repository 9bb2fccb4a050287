import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import { dbUrl, TEMPLATE_DB, TEST_PG_URL } from './env.js';
import { alive, startTestUnleash } from './unleash.js';

/**
 * Builds the migrated template database every test file clones its own database from, and starts the
 * run's embedded Unleash (flags synced) that every test file reaches through inject('unleash'). Gives
 * the run a temporary directory of its own (TMPDIR, below).
 * Vitest calls this once per project in the same process (even with --project); the work is done once
 * and shared, and torn down after the last project, so two setups never drop each other's databases.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const shared = globalThis as typeof globalThis & { __killswitchSetup?: { ready: Promise<Started>; users: number } };
  shared.__killswitchSetup ??= { ready: prepare(), users: 0 };
  const state = shared.__killswitchSetup;
  state.users++;
  const started = await state.ready;
  project.provide('unleash', started.info);
  return async () => {
    if (--state.users > 0) return;
    delete shared.__killswitchSetup;
    try {
      await started.stop();
    } finally {
      removeRunTmpdir();
    }
  };
}

const RUN_TMPDIR_PREFIX = 'killswitch-test-run-';
let runTmpdir: string | undefined;

/**
 * Points TMPDIR (os.tmpdir() of the test workers, and of every process a test starts) at a directory of
 * this run, removed when the run ends: the files and directories tests make there (spools, gateway
 * scratch dirs, policy copies) go with it, also those of a test that failed before its own cleanup.
 * A run that was killed leaves its directory; the next run removes those whose process is gone.
 */
function useRunTmpdir(): void {
  const base = tmpdir();
  for (const name of readdirSync(base)) {
    const pid = Number(name.startsWith(RUN_TMPDIR_PREFIX) ? name.slice(RUN_TMPDIR_PREFIX.length) : Number.NaN);
    if (Number.isInteger(pid) && pid > 0 && !alive(pid)) rmSync(join(base, name), { recursive: true, force: true });
  }
  runTmpdir = join(base, `${RUN_TMPDIR_PREFIX}${process.pid}`);
  mkdirSync(runTmpdir, { recursive: true });
  process.env['TMPDIR'] = runTmpdir;
}

function removeRunTmpdir(): void {
  if (runTmpdir) rmSync(runTmpdir, { recursive: true, force: true });
  runTmpdir = undefined;
}

type Started = Awaited<ReturnType<typeof startTestUnleash>>;

async function prepare(): Promise<Started> {
  useRunTmpdir();
  // Started first: it runs while the template is migrated, and stops with the run (teardown above).
  const unleash = startTestUnleash();
  unleash.catch(() => {}); // awaited below; this only keeps a failure there from being reported twice
  try {
    await buildTemplate();
  } catch (err) {
    await unleash.then((u) => u.stop()).catch(() => {});
    throw err;
  }
  return unleash;
}

async function buildTemplate(): Promise<void> {
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
