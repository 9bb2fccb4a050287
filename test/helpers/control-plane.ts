import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import type { TestContext } from './context.js';
import { TEST_REDIS_URL } from './env.js';
import { freePort, type TestUnleash } from './unleash.js';

// A real `killswitch start` in a child process, on this test file's database, Redis prefix and data
// directory and the run's shared Unleash: for tests of what only a whole process shows (signals, exit
// codes, WORKERS). The child runs the flags sync at start against the run's Unleash, which finds every
// flag and the webhook (PUBLIC_URL and UNLEASH_WEBHOOK_SECRET below) as the run left them and changes
// nothing: files using this run in the parallel phase, where no file toggles a shared flag. A file that
// reads what the sync saw off (flags-start-backup) toggles flags and is serial for that.

export const CHILD_POLICY = 'test/fixtures/decisions/policy.yaml';
const SECRET = 'test-secret-test-secret-test-secret-1234';

/** The child's environment (PORT 0 when it only runs a CLI command). */
export function childEnv(t: TestContext, unleash: TestUnleash, port: number, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: t.databaseUrl,
    REDIS_URL: TEST_REDIS_URL,
    REDIS_PREFIX: t.redisPrefix,
    TOKEN_HASH_SECRET: SECRET,
    DATA_DIR: t.dataDir,
    POLICY_FILE: CHILD_POLICY,
    UNLEASH_URL: unleash.apiUrl,
    UNLEASH_API_TOKEN: unleash.apiToken,
    UNLEASH_ADMIN_TOKEN: unleash.adminToken,
    UNLEASH_ENVIRONMENT: unleash.environment,
    UNLEASH_WEBHOOK_SECRET: unleash.webhookSecret,
    // The sync at start registers the webhook at PUBLIC_URL: keep the one the test run registered.
    PUBLIC_URL: `http://127.0.0.1:${unleash.webhookPort}`,
    LOG_LEVEL: 'info',
    ...extra,
  };
}

export interface ChildControlPlane {
  child: ChildProcess;
  base: string;
  /** Its JSON log lines so far (every process of it: a primary and its workers write to the same stdout). */
  logs: () => Array<Record<string, unknown>>;
  /** Everything it wrote so far, as written: stdout, then stderr. */
  output: () => { stdout: string; stderr: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

/** Spawns `killswitch start` with this environment, collecting what it writes (it may never become ready). */
export function spawnStart(env: NodeJS.ProcessEnv, children: ChildProcess[] = []): Pick<ChildControlPlane, 'child' | 'output' | 'exited'> {
  const child = spawn('node', ['bin/killswitch.js', 'start'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => {
    out += c.toString('utf8');
  });
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null, at: Date.now() }));
  return { child, output: () => ({ stdout: out, stderr: err }), exited };
}

/** Spawns `killswitch start` and returns once GET /readyz answers 200 (or throws with its output). */
export async function startChild(t: TestContext, unleash: TestUnleash, extra: Record<string, string> = {}, children: ChildProcess[] = []): Promise<ChildControlPlane> {
  const port = await freePort();
  const { child, output, exited } = spawnStart(childEnv(t, unleash, port, extra), children);
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ready = await fetch(`${base}/readyz`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ready) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`control plane did not become ready (exit ${child.exitCode}):\n${output().stderr}\n${output().stdout.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const logs = () =>
    output()
      .stdout.split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { child, base, logs, output, exited };
}

/** One JSON request; the body as parsed JSON. */
export async function api(base: string, method: string, path: string, headers: Record<string, string>, body?: unknown) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> & { key?: string; token?: string; session_id?: string } };
}

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a `killswitch` CLI command (not `start`) on this file's database: its exit code and output. */
export async function runCli(t: TestContext, unleash: TestUnleash, args: string[]): Promise<{ code: number; stdout: string }> {
  return promisify(execFile)('node', ['bin/killswitch.js', ...args], { env: childEnv(t, unleash, 0, { LOG_LEVEL: 'warn' }) }).then(
    ({ stdout }) => ({ code: 0, stdout }),
    (err: { code: number; stdout?: string }) => ({ code: err.code, stdout: err.stdout ?? '' }),
  );
}

/** For afterEach: kills (SIGKILL) every child a test started that is still running. */
export function killChildren(children: ChildProcess[]): void {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
