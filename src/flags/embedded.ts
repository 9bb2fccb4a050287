import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Logger } from 'pino';
import { type Config, inheritedEnv, SETTINGS } from '../config.js';
import { ensureDatabase } from '../db/pool.js';
import { MANAGED_POSTGRES_DOC } from '../db/privileges.js';
import { maskedChildOutput, urlPassword } from './child-output.js';
import { orphanedLauncher, portHolder, portTaken } from './port-holder.js';

// The embedded Unleash for local use and tests: unleash-server 7.5.1 in a child process (see
// scripts/unleash/launcher.cjs for why not in-process), on its own Postgres database.

export const LAUNCHER = fileURLToPath(new URL('../../scripts/unleash/launcher.cjs', import.meta.url));

export interface EmbeddedUnleashOptions {
  port: number;
  host: string;
  databaseUrl: string;
  adminPassword: string;
  adminToken: string;
  backendTokens: string[];
  /** How long to wait for Unleash to answer /health (migrations on an empty database included). */
  startTimeoutMs?: number;
  /** Unleash's own log level (its logs go to this process's stderr). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  /** Gives up a start still waiting for Unleash (the control plane is shutting down): the child is stopped. */
  signal?: AbortSignal;
  /** Told the child's pid as soon as it is forked (a second signal during the start kills it: src/start-stop.ts). */
  onSpawn?: (pid: number) => void;
}

export interface EmbeddedUnleash {
  /** API base for the SDK and the admin API, e.g. http://127.0.0.1:4242/api. */
  apiUrl: string;
  /** The UI operators log in to. */
  uiUrl: string;
  pid: number | undefined;
  stop(): Promise<void>;
  /** Resolves when the process has exited (for whatever reason). */
  exited: Promise<number | null>;
  /** The signal that ended it, once it has exited by one (SIGKILL, ...); null otherwise. */
  exitSignal(): NodeJS.Signals | null;
}

/**
 * The embedded Unleash's admin credentials still at their published defaults (UNLEASH_ADMIN_TOKEN,
 * UNLEASH_ADMIN_PASSWORD). With any of them it listens on 127.0.0.1 only, whatever HOST says: anyone
 * who reached its port with a published credential could turn a flag back on (fail open).
 */
export function publishedAdminDefaults(config: Pick<Config, 'unleashAdminToken' | 'unleashAdminPassword'>): string[] {
  const published = (env: string) => {
    const spec = SETTINGS.find((s) => s.env === env);
    return spec && 'default' in spec ? spec.default : undefined;
  };
  const out: string[] = [];
  if (config.unleashAdminToken === published('UNLEASH_ADMIN_TOKEN')) out.push('UNLEASH_ADMIN_TOKEN');
  if (config.unleashAdminPassword === published('UNLEASH_ADMIN_PASSWORD')) out.push('UNLEASH_ADMIN_PASSWORD');
  return out;
}

export function embeddedOptionsFromConfig(config: Config): EmbeddedUnleashOptions {
  const everywhere = (config.host === '0.0.0.0' || config.host === '::') && publishedAdminDefaults(config).length === 0;
  return {
    port: config.unleashPort,
    host: everywhere ? config.host : '127.0.0.1',
    databaseUrl: config.unleashDatabaseUrl,
    adminPassword: config.unleashAdminPassword,
    adminToken: config.unleashAdminToken,
    backendTokens: [config.unleashApiToken],
    logLevel: unleashLogLevel(config.logLevel),
  };
}

/**
 * Unleash's info level is chatty and it warns, with a stack trace, for every webhook it cannot deliver
 * (always the case while the control plane is not listening yet); failed deliveries stay visible in the
 * Unleash UI (Integrations → Webhook → events). It logs errors only, unless we log at debug.
 */
function unleashLogLevel(level: string): NonNullable<EmbeddedUnleashOptions['logLevel']> {
  if (level === 'debug' || level === 'trace') return 'debug';
  if (level === 'fatal' || level === 'silent') return 'fatal';
  return 'error';
}

/**
 * Unleash creates its tables in the schema `public` of its database (it sets its search_path to it): on
 * Postgres 15 and later a user that does not own that database may not, unless granted.
 */
function privilegeHint(failure: string, databaseUrl: string): string {
  if (!/permission denied for schema/.test(failure)) return '';
  const url = new URL(databaseUrl);
  const db = pg.escapeIdentifier(decodeURIComponent(url.pathname.slice(1)));
  const user = pg.escapeIdentifier(decodeURIComponent(url.username) || 'the UNLEASH_DATABASE_URL user');
  return `. The UNLEASH_DATABASE_URL user ${user} may not create tables in the schema public of that database (from Postgres 15 on, only the database owner may, unless granted): the DBA runs, connected to ${db}: GRANT CREATE ON SCHEMA public TO ${user}; (${MANAGED_POSTGRES_DOC})`;
}

/** Our settings are never passed on: the child gets Unleash's own variables, set explicitly below. */
function childEnv(o: EmbeddedUnleashOptions): NodeJS.ProcessEnv {
  const env = inheritedEnv();
  for (const spec of SETTINGS) delete env[spec.env];
  for (const key of Object.keys(env)) if (/^(DATABASE_|HTTP_|INIT_|UNLEASH_|AUTH_|IMPORT_|LOG_)/.test(key)) delete env[key];
  return {
    ...env,
    TZ: 'UTC',
    NODE_ENV: 'production',
    DATABASE_URL: o.databaseUrl,
    DATABASE_SSL: 'false',
    HTTP_PORT: String(o.port),
    HTTP_HOST: o.host,
    UNLEASH_URL: `http://${o.host === '0.0.0.0' || o.host === '::' ? '127.0.0.1' : o.host}:${o.port}`,
    INIT_ADMIN_API_TOKENS: o.adminToken,
    INIT_BACKEND_API_TOKENS: o.backendTokens.join(','),
    UNLEASH_DEFAULT_ADMIN_USERNAME: 'admin',
    UNLEASH_DEFAULT_ADMIN_PASSWORD: o.adminPassword,
    SEND_TELEMETRY: 'false',
    SCARF_ANALYTICS: 'false',
    CHECK_VERSION: 'false',
    UNLEASH_ALLOW_PRIVATE_URL_IN_INTEGRATION: 'true',
    LOG_LEVEL: o.logLevel ?? 'error',
    KS_UNLEASH_ADDON_CACHE_MS: '1000',
  };
}

async function healthy(baseUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(1_000) });
    return res.ok;
  } catch {
    return false;
  }
}

/**
 * How long a start waits for the embedded Unleash of a control plane killed with SIGKILL to exit: it does
 * on its own as its IPC channel closes (a second or two; longer while it still loads or migrates).
 */
export const ORPHAN_EXIT_WAIT_MS = 15_000;

const shortCommand = (command: string) => (command.length > 120 ? `${command.slice(0, 117)}...` : command);

/**
 * UNLEASH_PORT must be free before the child is forked: taken, the child failed only once its migrations
 * were done (EADDRINUSE), or the start stopped on an Unleash that answered there without saying whose.
 * Held by the Unleash of an earlier start whose control plane is gone, it is waited for; else the start
 * stops with a message that names the process holding it.
 */
async function portFree(o: EmbeddedUnleashOptions, base: string, log?: Pick<Logger, 'info'>): Promise<void> {
  const deadline = Date.now() + ORPHAN_EXIT_WAIT_MS;
  let waiting = false;
  let unnamed = 0;
  while (await portTaken(o.host, o.port)) {
    const holder = await portHolder(o.port);
    const orphan = holder !== undefined && orphanedLauncher(holder, LAUNCHER);
    // No process named: it may have closed the port between the two looks (an orphan exiting); look again.
    if (holder === undefined && unnamed++ < 5) {
      await new Promise((r) => setTimeout(r, 200));
      continue;
    }
    if (orphan && Date.now() < deadline && !o.signal?.aborted) {
      if (!waiting) {
        log?.info(
          { unleash_port: o.port, unleash_pid: holder.pid },
          `UNLEASH_PORT ${o.port} is still held by the embedded Unleash of an earlier start (pid ${holder.pid}) whose control plane is gone: waiting up to ${ORPHAN_EXIT_WAIT_MS / 1000} s for it to exit`,
        );
        waiting = true;
      }
      await new Promise((r) => setTimeout(r, 200));
      continue;
    }
    const unleash = await healthy(base);
    const who = holder
      ? orphan
        ? `pid ${holder.pid}, the embedded Unleash of an earlier start whose control plane is gone, still running after ${ORPHAN_EXIT_WAIT_MS / 1000} s`
        : `pid ${holder.pid} (${shortCommand(holder.command)})`
      : 'another process';
    throw new Error(
      `UNLEASH_PORT ${o.port} is in use by ${who}${unleash ? ', which answers as an Unleash' : ''}: stop it${holder ? ` (kill ${holder.pid})` : ''} or set UNLEASH_PORT to a free port${unleash ? `, or set UNLEASH_URL=${base}/api to use that Unleash` : ''}`,
    );
  }
}

/**
 * Starts unleash-server as a child process and waits until it is ready. The child exits on its own if
 * this process dies (IPC disconnect); `stop()` sends SIGTERM and, after 5 s, SIGKILL.
 */
export async function startEmbeddedUnleash(o: EmbeddedUnleashOptions, log?: Pick<Logger, 'info'>): Promise<EmbeddedUnleash> {
  const host = o.host === '0.0.0.0' || o.host === '::' ? '127.0.0.1' : o.host;
  const base = `http://${host}:${o.port}`;
  await portFree(o, base, log);
  await ensureDatabase(o.databaseUrl, 'UNLEASH_DATABASE_URL');
  if (o.signal?.aborted) throw new Error('Embedded Unleash start given up: the control plane is stopping');
  const child: ChildProcess = fork(LAUNCHER, [], { env: childEnv(o), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  if (child.pid !== undefined) o.onSpawn?.(child.pid);
  // Unleash logs to our stderr while it runs; once we stop it, its shutdown chatter (scheduled jobs
  // aborted by the closing database pool) is dropped.
  // Masked first (child-output.ts): Unleash logs the admin password it creates the admin user with.
  const output = maskedChildOutput([o.adminPassword, o.adminToken, ...o.backendTokens, ...urlPassword(o.databaseUrl)]);
  output.pipe(process.stderr, { end: false });
  child.stdout?.pipe(output, { end: false });
  child.stderr?.pipe(output, { end: false });
  let endedBy: NodeJS.Signals | null = null;
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code, signal) => {
      endedBy = signal;
      resolve(code);
    }),
  );
  let failure: string | undefined;
  let launched = false;
  child.on('message', (m: { type?: string; message?: string }) => {
    if (m?.type === 'failed') failure = m.message;
    if (m?.type === 'ready') launched = true;
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    for (const stream of [child.stdout, child.stderr]) {
      stream?.unpipe(output);
      stream?.resume();
    }
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(killer);
  };
  // At once, not at the next turn of the wait below (up to a second while /health hangs).
  const onAbort = () => void stop();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  void exited.then(() => o.signal?.removeEventListener('abort', onAbort));
  const timeoutMs = o.startTimeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  let done = false;
  void exited.then(() => {
    done = true;
  });
  // 'ready' comes after the launcher has checked the tokens; /health alone could answer a moment earlier.
  while (!launched || !(await healthy(base))) {
    if (done) throw new Error(`Embedded Unleash exited before it was ready${failure ? `: ${failure}` : ''} (database ${new URL(o.databaseUrl).pathname.slice(1)}, port ${o.port})${failure ? privilegeHint(failure, o.databaseUrl) : ''}`);
    if (o.signal?.aborted) {
      await stop();
      o.signal.removeEventListener('abort', onAbort);
      throw new Error('Embedded Unleash start given up: the control plane is stopping');
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`Embedded Unleash did not become healthy within ${Math.round(timeoutMs / 1000)} s on port ${o.port}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  o.signal?.removeEventListener('abort', onAbort);
  // pid is pino's own field (this process): the child's goes under a name of its own.
  log?.info({ url: base, unleash_pid: child.pid }, 'embedded Unleash is up');
  return { apiUrl: `${base}/api`, uiUrl: base, pid: child.pid, stop, exited, exitSignal: () => endedBy };
}
