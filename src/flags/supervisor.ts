import { EventEmitter } from 'node:events';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { type EmbeddedUnleash, type EmbeddedUnleashOptions, startEmbeddedUnleash } from './embedded.js';

// The embedded Unleash kept running for as long as the control plane runs. Without it the control plane
// still decides (the last fetched flags stay in memory, webhook denies and break-glass kills still apply),
// but its UI is gone and no flag can change: an exit it did not ask for is followed by a new start, with a
// growing delay while starts keep failing (its Postgres away, its port taken), never during a shutdown.

export interface RestartBackoff {
  /** Delay before the first restart after an exit. */
  firstDelayMs: number;
  /** The delay doubles with each failed start or quick exit, up to this. */
  maxDelayMs: number;
  /** A child that ran this long was healthy: the next exit is restarted after firstDelayMs again. */
  healthyAfterMs: number;
}

export const UNLEASH_RESTART_BACKOFF: Readonly<RestartBackoff> = { firstDelayMs: 1_000, maxDelayMs: 30_000, healthyAfterMs: 60_000 };

/**
 * What a replica knows of the embedded Unleash: in the process that runs it, or (WORKERS > 1) sent by the
 * primary to every worker (src/cluster.ts).
 */
export interface EmbeddedUnleashState {
  /** False from an unexpected exit until a restart is up. */
  up: boolean;
  /** Restarts that came up since the control plane started. */
  restarts: number;
  /** While down: when it exited (ms since the epoch). */
  downSince: number | null;
  /** While down: when the next start is tried (null while one is under way). */
  nextAttemptAt: number | null;
}

/**
 * /readyz's warning while the embedded Unleash is down (a fixed phrase). A warning, not a failed check: the
 * replica still decides with the flags it holds, and every replica depends on this one Unleash, so a failed
 * check would take them all out of the load balancer at once and stop every decision, denials and kills
 * included, for what is a loss of the flags UI.
 */
export const EMBEDDED_UNLEASH_DOWN_WARNING = 'embedded Unleash down: being restarted; decisions use the last fetched flags, which cannot change until it is back';

/** Said by the FLAGS_STALE alert while the embedded Unleash is down. */
export const EMBEDDED_DOWN_SENTENCE = 'The embedded Unleash exited and is being restarted: its UI is down and no flag can change until it is back';

type Start = (o: EmbeddedUnleashOptions, log?: Pick<Logger, 'info'>) => Promise<EmbeddedUnleash>;

const seconds = (ms: number) => `${Math.round(ms / 100) / 10} s`;

export class SupervisedUnleash extends EventEmitter<{ state: [EmbeddedUnleashState] }> {
  readonly apiUrl: string;
  readonly uiUrl: string;
  private current: EmbeddedUnleash | undefined;
  private stopping = false;
  private timer: NodeJS.Timeout | undefined;
  private starting: { abort: AbortController; done: Promise<void> } | undefined;
  private delayMs: number;
  private startedAt = Date.now();
  private st: EmbeddedUnleashState = { up: true, restarts: 0, downSince: null, nextAttemptAt: null };

  constructor(
    first: EmbeddedUnleash,
    private readonly options: EmbeddedUnleashOptions,
    private readonly log: Pick<Logger, 'info' | 'warn' | 'error'>,
    private readonly backoff: Readonly<RestartBackoff> = UNLEASH_RESTART_BACKOFF,
    private readonly start: Start = startEmbeddedUnleash,
  ) {
    super();
    this.apiUrl = first.apiUrl;
    this.uiUrl = first.uiUrl;
    this.delayMs = backoff.firstDelayMs;
    this.watch(first);
  }

  /** The running child's pid; undefined while it is down. */
  get pid(): number | undefined {
    return this.current?.pid;
  }

  state(): EmbeddedUnleashState {
    return { ...this.st };
  }

  /**
   * The control plane is stopping: no restart from now on (an exit now is expected: Ctrl-C reaches the
   * child too), and a start under way is given up. The running child is left to stop().
   */
  shuttingDown(): void {
    this.stopping = true;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.setState({ ...this.st, nextAttemptAt: null });
    }
    this.starting?.abort.abort();
  }

  async stop(): Promise<void> {
    this.shuttingDown();
    await this.starting?.done;
    await this.current?.stop();
  }

  private watch(u: EmbeddedUnleash): void {
    this.current = u;
    this.startedAt = Date.now();
    void u.exited.then((code) => {
      if (this.current !== u) return;
      this.current = undefined;
      if (this.stopping) return;
      if (Date.now() - this.startedAt >= this.backoff.healthyAfterMs) this.delayMs = this.backoff.firstDelayMs;
      const signal = u.exitSignal();
      const wait = this.schedule();
      this.setState({ up: false, restarts: this.st.restarts, downSince: Date.now(), nextAttemptAt: Date.now() + wait });
      this.log.error(
        { exit_code: code, exit_signal: signal, unleash_pid: u.pid, restart_in_ms: wait, restarts: this.st.restarts },
        `embedded Unleash exited (${signal ?? `exit code ${code}`}): restarting it in ${seconds(wait)}. Meanwhile decisions use the last fetched flags, its UI is down and no flag can change (use break-glass kills, POST /v1/kills, to stop something now)`,
      );
    });
  }

  /** Schedules the next start after the current delay, doubles the delay for the one after; returns the wait. */
  private schedule(): number {
    const wait = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.backoff.maxDelayMs);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const abort = new AbortController();
      this.starting = { abort, done: this.restart(abort.signal).finally(() => (this.starting = undefined)) };
    }, wait);
    this.timer.unref();
    return wait;
  }

  private async restart(signal: AbortSignal): Promise<void> {
    if (this.stopping) return;
    this.setState({ ...this.st, nextAttemptAt: null });
    let u: EmbeddedUnleash;
    try {
      u = await this.start({ ...this.options, signal }, this.log);
    } catch (err) {
      if (this.stopping) return;
      const wait = this.schedule();
      this.setState({ ...this.st, nextAttemptAt: Date.now() + wait });
      this.log.error({ err: (err as Error).message, restart_in_ms: wait }, `embedded Unleash could not be restarted: trying again in ${seconds(wait)}`);
      return;
    }
    if (this.stopping) {
      await u.stop();
      return;
    }
    const downForS = Math.round((Date.now() - (this.st.downSince ?? Date.now())) / 1000);
    this.watch(u);
    this.setState({ up: true, restarts: this.st.restarts + 1, downSince: null, nextAttemptAt: null });
    this.log.warn({ unleash_pid: u.pid, restarts: this.st.restarts, down_for_s: downForS }, `embedded Unleash restarted after ${downForS} s down (restart ${this.st.restarts} since the control plane started)`);
  }

  private setState(s: EmbeddedUnleashState): void {
    this.st = s;
    this.emit('state', this.state());
  }
}

/**
 * The control plane in this process runs `embedded`: its flags service hears of every change (/readyz
 * warnings, the FLAGS_STALE alert, metrics), a shutdown stops restarting at once (preClose: an exit while
 * requests drain is expected) and stops the child last (onClose).
 */
export function superviseWith(app: FastifyInstance, embedded: SupervisedUnleash): void {
  const { flags } = app.ctx;
  flags.noteEmbeddedUnleash(embedded.state());
  embedded.on('state', (s) => flags.noteEmbeddedUnleash(s));
  app.addHook('preClose', async () => embedded.shuttingDown());
  app.addHook('onClose', async () => embedded.stop());
}
