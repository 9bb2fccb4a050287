import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { type Config, FLAGS_AT_START_ENV } from './config.js';
import { prepareUnleash } from './flags/setup.js';
import type { EmbeddedUnleashState } from './flags/supervisor.js';
import { logCrashes, loggerOptions } from './log.js';
import { CLOSE_GRACE_MS } from './server.js';
import { exitCodeOf, stopSignalHandler } from './signals.js';
import type { StartStop } from './start-stop.js';

// WORKERS > 1 (docs/adr/0007-workers.md): `killswitch start` becomes a primary that runs the embedded
// Unleash and the flags sync once, then forks WORKERS processes that each build the whole app and listen
// on the same port (node:cluster hands connections round-robin). Each worker is a replica as the design
// already has them: its own audit chain (replica_id), its own Unleash client and caches, shared state in
// Redis and Postgres. What the primary adds: one-time startup work, restarts, signals, and GET /metrics
// summed over the workers (each metric says how: counters add up, installation-wide gauges do not).

const METRICS_ASK = 'killswitch:metrics?';
const METRICS_ANSWER = 'killswitch:metrics';
const REGISTRY_ASK = 'killswitch:registry?';
const REGISTRY_ANSWER = 'killswitch:registry';
const READY = 'killswitch:ready';
const PING = 'killswitch:ping';
const PONG = 'killswitch:pong';
/** The primary's embedded Unleash went down or came back (src/flags/supervisor.ts): sent to every ready worker. */
const EMBEDDED_UNLEASH = 'killswitch:embedded-unleash';
/** How often the primary asks each ready worker whether its event loop still turns. */
const HEARTBEAT_EVERY_MS = 1_000;
/** How long the primary waits for one worker's metrics; a worker that does not answer is left out. */
const WORKER_METRICS_TIMEOUT_MS = 3_000;
/** How long a worker waits for the primary's sum. */
const METRICS_TIMEOUT_MS = 6_000;
/** A worker that stays up this long is healthy again: the restart delay starts over. */
const HEALTHY_AFTER_MS = 60_000;
const RESTART_DELAY_MAX_MS = 30_000;
/** How long a worker's death by SIGINT or SIGTERM before it was ready waits for the same signal to reach the primary. */
const GROUP_SIGNAL_GRACE_MS = 1_000;

/** How many worker processes WORKERS asks for (0: one per CPU). */
export function workerCount(config: Config): number {
  return config.workers === 0 ? availableParallelism() : config.workers;
}

interface MetricsAnswer {
  type: typeof METRICS_ANSWER;
  id: number;
  text?: string;
  error?: string;
}

interface RegistryAnswer {
  type: typeof REGISTRY_ANSWER;
  id: number;
  /** prom-client's getMetricsAsJSON() of the worker's registry. */
  metrics?: unknown[];
}

/**
 * Runs the primary of WORKERS > 1 until it is told to stop; returns the exit code. Workers start one
 * after the other (the first one applies migrations and creates the first owner key on an empty
 * database, with nobody racing it); if one fails before it is ready, everything stops with its exit code.
 */
export async function runPrimary(config: Config, startStop?: StartStop): Promise<number> {
  const log = pino(loggerOptions(config.logLevel)).child({ process: 'primary' });
  logCrashes(log);
  const count = workerCount(config);
  // Until its own handlers below take over, a signal stops the start (the embedded Unleash, the flags sync).
  const { config: effective, embedded, flagsAtStart } = await prepareUnleash(config, log, startStop);
  // The workers read the same environment; only the embedded Unleash's URL is new, and what the sync read
  // from Unleash (flags off there are denied from a worker's first decision, src/flags/service.ts).
  const workerEnv: Record<string, string> = effective.unleashUrl !== config.unleashUrl ? { UNLEASH_URL: effective.unleashUrl } : {};
  if (flagsAtStart) workerEnv[FLAGS_AT_START_ENV] = JSON.stringify(flagsAtStart);

  const own = new Registry();
  const workersUp = new Gauge({
    name: 'killswitch_workers',
    help: 'Worker processes (WORKERS) by state: wanted (configured), ready (serving), reporting (whose metrics are in this scrape; fewer than ready: a worker did not answer in time).',
    labelNames: ['state'],
    registers: [own],
  });
  const restarts = new Counter({ name: 'killswitch_worker_restarts_total', help: 'Workers that exited unexpectedly and were started again by the primary.', registers: [own] });
  const hangs = new Counter({
    name: 'killswitch_worker_hangs_total',
    help: 'Workers killed by the primary because their event loop did not answer its heartbeat for WORKER_HANG_TIMEOUT_MS (each is then restarted).',
    registers: [own],
  });
  workersUp.set({ state: 'wanted' }, count);

  /** Every worker not yet exited, with the time it was forked. */
  const live = new Map<Worker, number>();
  const ready = new Set<Worker>();
  /** When each ready worker last sent anything (a heartbeat answer, a metrics request ...). */
  const lastHeard = new Map<Worker, number>();
  /** Workers killed as hung, whose exit is still to come. */
  const killedAsHung = new Set<Worker>();
  let stopping = false;
  /** Called once when a signal starts the shutdown (see the start loop below). */
  let onStopping: (() => void) | undefined;
  let failures = 0;
  let exitCode = 0;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => {
    resolveDone = r;
  });

  const fork = (): Promise<Worker> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork(workerEnv);
      live.set(worker, Date.now());
      const onExit = (code: number | null, signal: string | null) =>
        reject(Object.assign(new Error(`worker ${worker.process.pid} exited before it was ready (${signal ?? `exit ${code}`})`), { code: code ?? 1, signal }));
      worker.once('exit', onExit);
      // A message to a worker that has just died fails on its channel: its exit is handled below.
      worker.on('error', (err: Error) => log.warn({ worker_pid: worker.process.pid, err: err.message }, 'worker channel error'));
      worker.on('message', (msg: { type?: string; id: number }) => {
        if (ready.has(worker)) lastHeard.set(worker, Date.now());
        if (msg?.type === PONG) return;
        if (msg?.type === READY) {
          worker.off('exit', onExit);
          ready.add(worker);
          lastHeard.set(worker, Date.now());
          // A worker started (or restarted) while the embedded Unleash is down learns it at once.
          if (embedded && worker.isConnected()) worker.send({ type: EMBEDDED_UNLEASH, state: embedded.state() });
          resolve(worker);
        } else if (msg?.type === METRICS_ASK) {
          const answer = (m: Omit<MetricsAnswer, 'type' | 'id'>) => {
            if (worker.isConnected()) worker.send({ type: METRICS_ANSWER, id: msg.id, ...m } satisfies MetricsAnswer);
          };
          gather().then(
            (text) => answer({ text }),
            (err: unknown) => answer({ error: (err as Error).message }),
          );
        } else if (msg?.type === REGISTRY_ANSWER) {
          asked.get(msg.id)?.((msg as RegistryAnswer).metrics);
        }
      });
    });

  // GET /metrics on any worker: every ready worker's registry, combined per metric (src/metrics/metrics.ts
  // says how), plus the primary's own series. Only ready workers are asked: one starting or restarting has
  // no registry yet and must not hold the scrape up.
  let nextAsk = 0;
  const asked = new Map<number, (metrics: unknown[] | undefined) => void>();
  const registryOf = (worker: Worker) =>
    new Promise<unknown[] | undefined>((resolve) => {
      const id = nextAsk++;
      const timer = setTimeout(() => {
        asked.delete(id);
        resolve(undefined);
      }, WORKER_METRICS_TIMEOUT_MS);
      asked.set(id, (metrics) => {
        asked.delete(id);
        clearTimeout(timer);
        resolve(metrics);
      });
      worker.send({ type: REGISTRY_ASK, id });
    });
  const gather = async (): Promise<string> => {
    const askedWorkers = [...ready].filter((w) => w.isConnected());
    const answers = await Promise.all(askedWorkers.map(registryOf));
    const got = answers.filter((m): m is unknown[] => m !== undefined);
    const workers = await AggregatorRegistry.aggregate(got as never).metrics();
    // Both counts are set here, at each scrape (nothing else reads them), and of one moment: `ready` as it
    // was when the workers were asked. A worker that became ready while they answered would otherwise
    // count as ready but not reporting, which reads as "did not answer in time"; the next scrape counts it.
    workersUp.set({ state: 'ready' }, askedWorkers.length);
    workersUp.set({ state: 'reporting' }, got.length);
    return workers + (await own.metrics());
  };

  // A worker whose event loop is stuck (an endless loop, a synchronous call that never returns, a process
  // stopped by SIGSTOP) still holds its share of the port: the connections node:cluster hands it are never
  // answered, so every gateway on them times out. It answers no heartbeat either: kill it, and the exit
  // handler below starts another.
  const heartbeat = setInterval(() => {
    const now = Date.now();
    for (const worker of ready) {
      const silentMs = now - (lastHeard.get(worker) ?? now);
      if (silentMs >= config.workerHangTimeoutMs && !killedAsHung.has(worker)) {
        killedAsHung.add(worker);
        hangs.inc();
        log.error(
          { worker_pid: worker.process.pid, silent_ms: silentMs, timeout_ms: config.workerHangTimeoutMs },
          'worker hung: its event loop has not answered the heartbeat; killing it (SIGKILL) and starting another (requests it held are cut; gateways deny them)',
        );
        worker.process.kill('SIGKILL');
        continue;
      }
      if (worker.isConnected()) worker.send({ type: PING });
    }
  }, HEARTBEAT_EVERY_MS);
  heartbeat.unref();

  const stopAll = (signal: NodeJS.Signals) => {
    for (const worker of live.keys()) worker.process.kill(signal);
  };

  cluster.on('exit', (worker, code, signal) => {
    const started = live.get(worker) ?? Date.now();
    live.delete(worker);
    lastHeard.delete(worker);
    killedAsHung.delete(worker);
    const wasReady = ready.delete(worker);
    if (stopping) {
      // A worker handles SIGINT and SIGTERM from the start of its `start` command: one ended by either
      // before it was ready was still loading its code (nothing begun, nothing to flush), which is how a
      // Ctrl-C that reaches the whole process group ends a worker forked a moment before.
      const endedWhileLoading = !wasReady && (signal === 'SIGINT' || signal === 'SIGTERM');
      if (code !== 0 && !endedWhileLoading) exitCode = 1;
      if (live.size === 0) resolveDone(exitCode);
      return;
    }
    if (!wasReady) return; // a start that failed: handled where it was forked
    const upMs = Date.now() - started;
    if (upMs >= HEALTHY_AFTER_MS) failures = 0;
    log.error({ worker_pid: worker.process.pid, exit_code: code, signal, up_ms: upMs }, 'worker exited unexpectedly: starting another (audit rows of its denials still in memory are lost; allowed calls were answered only after their rows were durable)');
    restart();
  });

  /** Starts a replacement, waiting longer after each failure in a row (1 s, 2 s ... 30 s). */
  function restart(): void {
    const delayMs = Math.min(RESTART_DELAY_MAX_MS, 1_000 * 2 ** failures);
    failures++;
    setTimeout(() => {
      if (stopping) return;
      fork().then(
        () => restarts.inc(),
        (err: Error) => {
          log.error({ err: err.message }, 'worker restart failed; trying again');
          restart();
        },
      );
    }, delayMs);
  }

  const second = (signal: NodeJS.Signals) => {
    log.error({ signal }, 'second signal: telling the workers to exit at once');
    stopAll('SIGTERM');
    resolveDone(exitCodeOf(signal));
  };
  const onSignal = stopSignalHandler(log, (signal) => {
    stopping = true;
    onStopping?.();
    embedded?.shuttingDown();
    clearInterval(heartbeat);
    log.info({ signal, workers: live.size }, 'shutting down: each worker finishes its requests and flushes its audit trail (a second signal exits at once)');
    stopAll('SIGTERM');
    if (live.size === 0) resolveDone(exitCode);
    setTimeout(() => {
      log.error('shutdown: workers did not exit in time; killing them');
      stopAll('SIGKILL');
      resolveDone(1);
    }, config.shutdownTimeoutMs + CLOSE_GRACE_MS + 5_000).unref();
  }, second);
  startStop?.handOver();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // The workers' /readyz, FLAGS_STALE alert and metrics say when the primary's embedded Unleash is down.
  embedded?.on('state', (state) => {
    for (const worker of ready) if (worker.isConnected()) worker.send({ type: EMBEDDED_UNLEASH, state });
  });

  let failedStart: number | undefined;
  try {
    for (let i = 0; i < count && !stopping; i++) await fork();
    if (!stopping) log.info({ workers: count, pids: [...ready].map((w) => w.process.pid) }, `control plane running in ${count} worker processes`);
  } catch (err) {
    // A Ctrl-C reaches the whole process group: a worker still loading its code dies of it at once, and
    // its exit can reach this process before this process's own SIGINT does. Such an exit is a stop, not a
    // failed start: give the signal a moment to arrive before calling it one.
    const signal = (err as { signal?: string | null }).signal;
    if (!stopping && (signal === 'SIGINT' || signal === 'SIGTERM')) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, GROUP_SIGNAL_GRACE_MS);
        onStopping = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    if (!stopping) {
      // The first worker to fail shows why in its own output (a configuration error exits 2).
      failedStart = (err as { code?: number }).code ?? 1;
      log.error({ err: (err as Error).message }, 'a worker failed to start: stopping the others');
      onSignal('SIGTERM');
    }
  }
  const code = await done;
  await embedded?.stop();
  return failedStart ?? code;
}

/** In a worker: tells the primary it is ready and has GET /metrics render the sum over all workers. */
export function becomeWorker(app: FastifyInstance): void {
  const { metrics } = app.ctx;
  let next = 0;
  const waiting = new Map<number, { resolve: (text: string) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  process.on('message', (msg: MetricsAnswer | { type: typeof REGISTRY_ASK; id: number } | { type: typeof PING } | { type: typeof EMBEDDED_UNLEASH; state: EmbeddedUnleashState }) => {
    if (msg?.type === EMBEDDED_UNLEASH) {
      app.ctx.flags.noteEmbeddedUnleash(msg.state);
      return;
    }
    if (msg?.type === PING) {
      // The primary's heartbeat: answering at all shows the event loop turns.
      if (process.connected) process.send!({ type: PONG });
      return;
    }
    if (msg?.type === REGISTRY_ASK) {
      // The primary gathers every worker's registry for a scrape.
      const reply = (m: Omit<RegistryAnswer, 'type' | 'id'>) => process.connected && process.send!({ type: REGISTRY_ANSWER, id: msg.id, ...m } satisfies RegistryAnswer);
      metrics.registry.getMetricsAsJSON().then(
        (json) => reply({ metrics: json }),
        () => reply({}),
      );
      return;
    }
    if (msg?.type !== METRICS_ANSWER) return;
    const w = waiting.get(msg.id);
    if (!w) return;
    waiting.delete(msg.id);
    clearTimeout(w.timer);
    if (msg.text !== undefined) w.resolve(msg.text);
    else w.reject(new Error(`metrics of the other workers: ${msg.error ?? 'no answer'}`));
  });
  metrics.renderWith(
    () =>
      new Promise<string>((resolve, reject) => {
        if (!process.connected) {
          reject(new Error('metrics of the other workers: the primary is gone'));
          return;
        }
        const id = next++;
        const timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Error('metrics of the other workers: the primary did not answer'));
        }, METRICS_TIMEOUT_MS);
        waiting.set(id, { resolve, reject, timer });
        process.send!({ type: METRICS_ASK, id });
      }),
  );
  process.send!({ type: READY });
}

export const isWorker = (): boolean => cluster.isWorker;
