import { exitCodeOf, stopSignalHandler } from './signals.js';

// `killswitch start` (one process, or the primary of WORKERS > 1) stopped by SIGINT or SIGTERM while it
// starts: before the drain handlers of a started control plane take over (stopOnSignals in server.ts,
// runPrimary in cluster.ts). Without handlers here a signal ended node by its default action: no line
// said why, and the embedded Unleash child was left to notice the closed IPC channel on its own, so it
// could still hold UNLEASH_PORT (or Unleash's migration lock) when an orchestrator started the next
// replica. docs/adr/0037-stop-during-start.md.

/** How long the stop of a start may take (the embedded Unleash child stopped) before it exits anyway. */
export const STOP_DURING_START_MS = 8_000;

/** Thrown into the start once a signal has stopped it: whoever catches it lets the stop exit. */
export class StartStopped extends Error {
  constructor(phase: string) {
    super(`start stopped by a signal during ${phase}`);
    this.name = 'StartStopped';
  }
}

interface Log {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/**
 * What a start is doing (`enter`), what to stop when a signal ends it (`onStop`: the embedded Unleash),
 * and what a signal must let finish (`uninterrupted`: the first owner key, created in the database and
 * then written to DATA_DIR, would otherwise exist nowhere an operator can read it). The first SIGINT or
 * SIGTERM (its copy from npm within SIGNAL_REPEAT_MS aside) logs the phase, runs the stops and exits
 * 130 or 143, as a death by the signal would have; a second one exits at once, after a SIGKILL to the
 * children registered with `child`. Nothing half-done is left to the next start: the migrations (ours
 * and Unleash's) run in transactions, and the advisory locks end with their connections.
 */
export class StartStop {
  private phase: string;
  private readonly aborter = new AbortController();
  private readonly stops = new Set<() => Promise<void>>();
  private readonly pids = new Set<number>();
  private readonly sections = new Set<Promise<unknown>>();
  /** The SIGINT/SIGTERM handler `install` puts in place. */
  readonly handler: (signal: NodeJS.Signals) => void;
  private installed = false;

  constructor(
    private readonly log: Log,
    phase: string,
    private readonly exit: (code: number) => void = (code) => process.exit(code),
    private readonly graceMs = STOP_DURING_START_MS,
  ) {
    this.phase = phase;
    this.handler = stopSignalHandler(
      log,
      (signal) => void this.stop(signal),
      (signal) => {
        for (const pid of this.pids) killQuietly(pid, 'SIGKILL');
        log.error({ signal, phase: this.phase, killed_pids: [...this.pids] }, `second signal: exiting now, during ${this.phase} (children killed)`);
        this.exit(exitCodeOf(signal));
      },
    );
  }

  /** Puts the SIGINT and SIGTERM handlers in place. */
  install(): this {
    if (!this.installed) {
      process.on('SIGINT', this.handler);
      process.on('SIGTERM', this.handler);
      this.installed = true;
    }
    return this;
  }

  /** Aborted by the first signal: a start waiting on something (the embedded Unleash) gives up. */
  get signal(): AbortSignal {
    return this.aborter.signal;
  }

  get stopping(): boolean {
    return this.aborter.signal.aborted;
  }

  /** The start moves on to `phase`; throws StartStopped when a signal has stopped it. */
  enter(phase: string): void {
    this.throwIfStopped();
    this.phase = phase;
  }

  throwIfStopped(): void {
    if (this.stopping) throw new StartStopped(this.phase);
  }

  /** `stop` runs if a signal stops the start; the returned function unregisters it. */
  onStop(stop: () => Promise<void>): () => void {
    this.stops.add(stop);
    return () => this.stops.delete(stop);
  }

  /** A child process that a second signal kills (SIGKILL) before exiting; the returned function unregisters it. */
  child(pid: number): () => void {
    this.pids.add(pid);
    return () => this.pids.delete(pid);
  }

  /** Runs `work` to its end even when a signal comes meanwhile: the stop waits for it (within its deadline). */
  async uninterrupted<T>(work: () => Promise<T>): Promise<T> {
    this.throwIfStopped();
    const running = work();
    const settled = running.then(
      () => {},
      () => {},
    );
    this.sections.add(settled);
    try {
      return await running;
    } finally {
      this.sections.delete(settled);
    }
  }

  /**
   * The start is done: the drain handlers take over from here (installed right after). Throws
   * StartStopped when a signal came first: the stop under way exits, the port is not opened.
   */
  handOver(): void {
    this.throwIfStopped();
    process.off('SIGINT', this.handler);
    process.off('SIGTERM', this.handler);
    this.installed = false;
    this.stops.clear();
    this.pids.clear();
  }

  private async stop(signal: NodeJS.Signals): Promise<void> {
    const started = Date.now();
    const phase = this.phase;
    this.aborter.abort();
    this.log.info({ signal, phase }, `${signal} during ${phase}: stopping the start before anything is served (a second signal exits at once)`);
    const giveUp = setTimeout(() => {
      for (const pid of this.pids) killQuietly(pid, 'SIGKILL');
      this.log.error({ signal, phase, after_ms: Date.now() - started, killed_pids: [...this.pids] }, `stopped during ${phase}: the stop did not finish within ${this.graceMs / 1000} s; children killed, exiting`);
      this.exit(exitCodeOf(signal));
    }, this.graceMs);
    giveUp.unref();
    // What must not be cut first (the owner key on its way to DATA_DIR), then what must not outlive us.
    await Promise.all(this.sections);
    await Promise.all(
      [...this.stops].map((stop) =>
        stop().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'stop during the start: a step failed')),
      ),
    );
    clearTimeout(giveUp);
    this.log.info(
      { signal, phase, ms: Date.now() - started },
      `stopped during ${phase} (${signal}): nothing was served; the embedded Unleash, if started, has exited; migrations cut short were rolled back, and the next start takes up from there`,
    );
    this.exit(exitCodeOf(signal));
  }
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}
