import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { loadConfig } from '../../src/config.js';
import { UnleashAdmin } from '../../src/flags/admin-client.js';
import { desiredFlags, loadFlagDefinitions } from '../../src/flags/definitions.js';
import { type EmbeddedUnleash, startEmbeddedUnleash } from '../../src/flags/embedded.js';
import { FLAGS_DIR, flagNamesFromPolicyFile, syncFromConfig } from '../../src/flags/setup.js';
import { describeSyncReport, managedStrategy } from '../../src/flags/sync.js';
import { dbUrl, TEST_PG_URL } from './env.js';

// Embedded unleash-servers for a whole test run (global setup starts them, every test file reads its
// project's URL and tokens through vitest's provide/inject): one that every file shares, and one for the
// files of the unleash-lane project, which turn flags off (test/unleash-lane.test.ts). Each run gets its own database and free ports, so
// two test runs on one machine (or the parallel and serial invocations of `npm test`) never share flags.
// Each run's database is cloned from a template that is already migrated and synced (built once per
// Unleash version and flag definitions), so a run pays for an Unleash boot and an idempotent sync only.
// Set TEST_UNLEASH_URL (+ TEST_UNLEASH_ADMIN_TOKEN, TEST_UNLEASH_API_TOKEN) to use an existing Unleash.

export interface TestUnleash {
  apiUrl: string;
  uiUrl: string;
  adminToken: string;
  apiToken: string;
  environment: string;
  /** Port the registered webhook points at (http://127.0.0.1:PORT/v1/flags/events); listen there to receive it. */
  webhookPort: number;
  webhookSecret: string;
  /** Servers whose mcp.<server>.read|write|delete flags were synced. */
  servers: string[];
}

declare module 'vitest' {
  export interface ProvidedContext {
    unleash: TestUnleash;
  }
}

export const TEST_UNLEASH_ADMIN_TOKEN = '*:*.killswitch-test-admin-token';
export const TEST_UNLEASH_API_TOKEN = 'default:development.killswitch-test-backend-token';
/** UNLEASH_WEBHOOK_SECRET of the run's control planes (configured: tests of the stored secret unset it). */
export const TEST_WEBHOOK_SECRET = 'killswitch-test-webhook-secret';
/** Fixture MCP servers of the tests, on top of policy/default.yaml's. */
export const FIXTURE_SERVERS = ['filesystem', 'memory', 'github', 'postgres', 'fetch', 'shell', 'git', 'sqlite', 'everything'];
const DB_PREFIX = 'killswitch_test_unleash_';
const TEMPLATE = 'killswitch_test_unleash_template';
const DEFAULT_POLICY = fileURLToPath(new URL('../../policy/default.yaml', import.meta.url));

/**
 * Where freePort looks: below Linux's ephemeral range (ip_local_port_range, 32768-60999 by default), from
 * which the kernel picks the local port of every outgoing connection. A port found free there could be
 * taken before its server listened by a connection made meanwhile (a control plane's own to Postgres,
 * Redis and Unleash while it starts): EADDRINUSE, seen once in a test. Nothing picks ports here by itself;
 * 19000-19999 is left to hand-picked ones.
 */
const FREE_PORTS = { from: 20_000, to: 32_000 };

/** A port nothing listens on now, for a server a test starts next (a child process, or an app it builds first). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = FREE_PORTS.from + Math.floor(Math.random() * (FREE_PORTS.to - FREE_PORTS.from));
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.unref();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error(`no free port between ${FREE_PORTS.from} and ${FREE_PORTS.to} after 100 tries`);
}

/** Whether a process with this pid runs (one of another user counts: EPERM). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function adminQuery(sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: TEST_PG_URL });
  client.on('error', () => {});
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end();
  }
}

/** Drops databases of earlier runs whose process is gone (a killed run cannot clean up after itself). */
async function dropStaleDatabases(): Promise<void> {
  const { rows } = await adminQuery('SELECT datname FROM pg_database WHERE datname LIKE $1', [`${DB_PREFIX}%`]);
  for (const { datname } of rows as Array<{ datname: string }>) {
    const pid = Number(datname.slice(DB_PREFIX.length).split('_')[0]);
    if (Number.isInteger(pid) && pid > 0 && !alive(pid)) await adminQuery(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)} WITH (FORCE)`).catch(() => {});
  }
}

/** Database names for a standalone embedded Unleash (tests of start/stop/restart): dropped by the caller. */
export function unleashDatabaseName(tag: string): string {
  return `${DB_PREFIX}${process.pid}_${tag}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
}

export async function dropDatabase(name: string): Promise<void> {
  await adminQuery(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
}

/** Flag names of policy/default.yaml plus the fixture servers. */
export async function testPolicyNames(): Promise<{ servers: string[]; extraFlags: string[] }> {
  const names = await flagNamesFromPolicyFile(DEFAULT_POLICY);
  return { servers: [...new Set([...names.servers, ...FIXTURE_SERVERS])].sort(), extraFlags: names.extraFlags };
}

/** Runs the flags sync (webhook included unless webhookPort is 0) against a test Unleash. */
export async function syncTestFlags(info: Omit<TestUnleash, 'servers'>): Promise<string[]> {
  const names = await testPolicyNames();
  const config = loadConfig({}, { unleashUrl: info.apiUrl, unleashAdminToken: info.adminToken, unleashEnvironment: info.environment, unleashWebhookSecret: info.webhookSecret });
  const report = await syncFromConfig(config, { names, webhookUrl: info.webhookPort ? `http://127.0.0.1:${info.webhookPort}/v1/flags/events` : null });
  if (report.drifted.length || report.archived.length) throw new Error(`test Unleash is not clean: ${describeSyncReport(report, info.environment).join('; ')}`);
  return names.servers;
}

/**
 * Starts an embedded Unleash (the npm start code path) on a free port, on a fresh database: a clone of
 * the synced template by default, or an empty one (`empty: true`) that Unleash migrates itself.
 */
export async function startStandaloneUnleash(tag: string, opts: { port?: number; empty?: boolean } = {}): Promise<{ unleash: EmbeddedUnleash; database: string; port: number }> {
  const database = unleashDatabaseName(tag);
  await dropDatabase(database);
  if (!opts.empty) await cloneTemplate(database);
  const p = opts.port ?? (await freePort());
  const unleash = await startEmbeddedUnleash({
    port: p,
    host: '127.0.0.1',
    databaseUrl: dbUrl(database),
    adminPassword: 'unleash4all',
    adminToken: TEST_UNLEASH_ADMIN_TOKEN,
    backendTokens: [TEST_UNLEASH_API_TOKEN],
    logLevel: 'error',
  });
  return { unleash, database, port: p };
}

/** Fingerprint of what the template holds: Unleash version, flag files, policy servers. */
async function templateVersion(): Promise<string> {
  const h = createHash('sha256');
  h.update(JSON.parse(await readFile(fileURLToPath(new URL('../../node_modules/unleash-server/package.json', import.meta.url)), 'utf8')).version);
  for (const f of (await readdir(FLAGS_DIR)).sort()) h.update(f).update(await readFile(`${FLAGS_DIR}/${f}`));
  h.update(JSON.stringify(await testPolicyNames()));
  return h.digest('hex').slice(0, 16);
}

/** Builds the synced template once per version; concurrent runs wait on an advisory lock. */
async function ensureTemplate(): Promise<void> {
  const version = await templateVersion();
  const lock = new pg.Client({ connectionString: TEST_PG_URL });
  lock.on('error', () => {});
  await lock.connect();
  try {
    await lock.query('SELECT pg_advisory_lock(hashtext($1))', [TEMPLATE]);
    const { rows } = await lock.query('SELECT shobj_description(oid, $2) AS v FROM pg_database WHERE datname = $1', [TEMPLATE, 'pg_database']);
    if ((rows[0] as { v?: string } | undefined)?.v === version) return;
    await dropDatabase(TEMPLATE);
    const { unleash } = await startStandaloneUnleash('template', { empty: true });
    try {
      await syncTestFlags({ apiUrl: unleash.apiUrl, uiUrl: unleash.uiUrl, adminToken: TEST_UNLEASH_ADMIN_TOKEN, apiToken: TEST_UNLEASH_API_TOKEN, environment: 'development', webhookPort: 0, webhookSecret: 'unused' });
    } finally {
      await unleash.stop();
    }
    const built = unleashDatabaseName('template');
    await adminQuery(`ALTER DATABASE ${pg.escapeIdentifier(built)} RENAME TO ${pg.escapeIdentifier(TEMPLATE)}`);
    await adminQuery(`COMMENT ON DATABASE ${pg.escapeIdentifier(TEMPLATE)} IS ${pg.escapeLiteral(version)}`);
  } finally {
    await lock.end();
  }
}

async function cloneTemplate(database: string): Promise<void> {
  await ensureTemplate();
  for (let attempt = 0; ; attempt++) {
    try {
      await adminQuery(`CREATE DATABASE ${pg.escapeIdentifier(database)} TEMPLATE ${pg.escapeIdentifier(TEMPLATE)}`);
      return;
    } catch (err) {
      // Another run is cloning it at this instant.
      if (attempt > 30 || !/being accessed by other users/.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
}

/**
 * Global setup: one of the run's Unleash instances (`tag`: 'run', or 'lane' for the unleash-lane project),
 * synced. Returns what tests inject and how to stop it. With TEST_UNLEASH_URL both are that one Unleash
 * (vitest.config.ts then runs the lane after the parallel files).
 */
export async function startTestUnleash(tag = 'run'): Promise<{ info: TestUnleash; stop: () => Promise<void> }> {
  const webhookSecret = TEST_WEBHOOK_SECRET;
  const webhookPort = await freePort();
  const external = process.env['TEST_UNLEASH_URL'];
  if (external) {
    const base = {
      apiUrl: external,
      uiUrl: external.replace(/\/api\/?$/, ''),
      adminToken: process.env['TEST_UNLEASH_ADMIN_TOKEN'] ?? TEST_UNLEASH_ADMIN_TOKEN,
      apiToken: process.env['TEST_UNLEASH_API_TOKEN'] ?? TEST_UNLEASH_API_TOKEN,
      environment: 'development',
      webhookPort,
      webhookSecret,
    };
    return { info: { ...base, servers: await syncTestFlags(base) }, stop: async () => {} };
  }
  await dropStaleDatabases();
  const { unleash, database } = await startStandaloneUnleash(tag);
  try {
    const base = { apiUrl: unleash.apiUrl, uiUrl: unleash.uiUrl, adminToken: TEST_UNLEASH_ADMIN_TOKEN, apiToken: TEST_UNLEASH_API_TOKEN, environment: 'development', webhookPort, webhookSecret };
    const servers = await syncTestFlags(base);
    return {
      info: { ...base, servers },
      stop: async () => {
        await unleash.stop();
        await dropDatabase(database).catch(() => {});
      },
    };
  } catch (err) {
    await unleash.stop();
    throw err;
  }
}

/** Admin API client for a test's Unleash. */
export function testAdmin(info: Pick<TestUnleash, 'apiUrl' | 'adminToken'>): UnleashAdmin {
  return new UnleashAdmin(info.apiUrl, info.adminToken);
}

/** Puts a flag back as flags sync creates it (managed strategies, on in the environment). */
export async function restoreFlag(info: Pick<TestUnleash, 'apiUrl' | 'adminToken' | 'environment'>, name: string): Promise<void> {
  const admin = testAdmin(info);
  const flag = desiredFlags(await loadFlagDefinitions(FLAGS_DIR), await testPolicyNames()).find((f) => f.name === name);
  if (!flag) throw new Error(`no definition for ${name}`);
  if (!(await admin.getFeature(name))) {
    if ((await admin.archivedFeatureNames()).has(name)) await admin.reviveFeature(name);
    else await admin.createFeature(flag);
  }
  // The new strategies first, then the old ones out: Unleash disables a flag whose last strategy is
  // deleted, so deleting first turned a flag that was on off for a moment, which a control plane polling
  // then saw (a test that had not touched the flag found it off).
  const old = await admin.getStrategies(name, info.environment);
  for (let i = 0; i < flag.strategies.length; i++) await admin.addStrategy(name, info.environment, managedStrategy(flag, i));
  for (const s of old) if (s.id) await admin.deleteStrategy(name, info.environment, s.id);
  await admin.setEnabled(name, info.environment, true);
}

/** Polls `check` until it returns true; resolves with the elapsed ms, rejects after `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string, intervalMs = 10): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await check()) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
