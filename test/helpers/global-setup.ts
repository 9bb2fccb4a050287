import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { bundledEntry } from '../../bin/bundle.js';
import { migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import { dbUrl, TEMPLATE_DB_PREFIX, TEST_PG_URL } from './env.js';
import { alive, startTestUnleash } from './unleash.js';

/**
 * Builds the migrated template database every test file clones its own database from, and starts the
 * embedded Unleash (flags synced) that a project's files reach through inject('unleash'): one for the
 * `parallel` and `serial` projects, and another for the `unleash-lane` project, whose files turn flags off
 * (UNLEASH_LANE_PROJECT: they run one after another beside the parallel files, which never see their
 * flags). Each Unleash starts only when a project that needs it is in the run. Gives the run a temporary
 * directory of its own (TMPDIR, below).
 * Vitest calls this once per project in the same process (even with --project); the work is done once
 * and shared, and torn down after the last project, so two setups never drop each other's databases.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const shared = globalThis as typeof globalThis & { __killswitchSetup?: SharedSetup };
  shared.__killswitchSetup ??= { template: prepare(), unleash: new Map(), users: 0 };
  const state = shared.__killswitchSetup;
  state.users++;
  // The root project (name '') runs no files: it needs the template only.
  const tag = project.name === '' ? undefined : project.name === UNLEASH_LANE_PROJECT ? 'lane' : 'run';
  const unleash = tag === undefined ? undefined : startOnce(state, tag);
  try {
    await state.template;
    if (unleash) project.provide('unleash', (await unleash).info);
  } catch (err) {
    await teardown(state, shared);
    throw err;
  }
  return () => teardown(state, shared);
}

/** The project whose files each get the run's second Unleash to themselves (vitest.config.ts). */
export const UNLEASH_LANE_PROJECT = 'unleash-lane';

interface SharedSetup {
  template: Promise<void>;
  unleash: Map<string, Promise<Started>>;
  users: number;
}

function startOnce(state: SharedSetup, tag: string): Promise<Started> {
  let started = state.unleash.get(tag);
  if (!started) {
    started = startTestUnleash(tag);
    started.catch(() => {}); // awaited by the project that asked; this only keeps a failure from being reported twice
    state.unleash.set(tag, started);
  }
  return started;
}

async function teardown(state: SharedSetup, shared: { __killswitchSetup?: SharedSetup }): Promise<void> {
  if (--state.users > 0) return;
  delete shared.__killswitchSetup;
  try {
    const stops = [...state.unleash.values()].map((u) => u.then((x) => x.stop(), () => {}));
    await Promise.all(stops);
  } finally {
    removeRunTmpdir();
    await dropRunTemplate();
  }
}

async function dropRunTemplate(): Promise<void> {
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  try {
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${runTemplate} WITH (FORCE)`);
  } catch {
    // Postgres gone at the end of a run: the next run drops it (its pid is then dead).
  } finally {
    await admin.end().catch(() => {});
  }
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

async function prepare(): Promise<void> {
  useRunTmpdir();
  // The bundle every `node bin/killswitch.js` of the run loads, built once before files spawn them at once.
  await Promise.all([buildTemplate(), bundledEntry(true)]);
}

/** This run's template (test/helpers/env.ts): its workers read the name from the environment. */
const runTemplate = `${TEMPLATE_DB_PREFIX}_${process.pid}`;

async function buildTemplate(): Promise<void> {
  process.env['KILLSWITCH_TEST_TEMPLATE'] = runTemplate;
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  await admin.connect();
  try {
    // Templates of runs whose process is gone (killed before their teardown); a live run's is left alone.
    const { rows } = await admin.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1', [`${TEMPLATE_DB_PREFIX}\\_%`]);
    for (const { datname } of rows) {
      const pid = Number(datname.slice(TEMPLATE_DB_PREFIX.length + 1));
      if (datname === runTemplate || (Number.isInteger(pid) && pid > 0 && !alive(pid))) await admin.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`);
    }
    await admin.query(`CREATE DATABASE ${runTemplate}`);
  } finally {
    await admin.end();
  }
  const pool = createPool(dbUrl(runTemplate), { max: 1 });
  try {
    await migrate(pool);
  } finally {
    await pool.end();
  }
}
