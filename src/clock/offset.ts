import { performance } from 'node:perf_hooks';
import type { Pool } from 'pg';
import type { Logger } from 'pino';
import { withQueryTimeout } from '../db/query-timeout.js';

// This replica's clock against Postgres's. Postgres judges every time it stores against its own clock
// (kills' and approvals' expiry, `expires_at > now()`), while a replica judges token, key and grant
// expiry in memory and stamps audit rows with its own: a replica whose time sync broke (a VM restored from
// a snapshot, a laptop that slept, NTP blocked) accepted a token or a production grant after it had
// expired for as long as its clock was behind, and wrote audit rows that sort among the wrong minutes.
// So each replica measures its clock against Postgres's on a timer (one `SELECT clock_timestamp()`, off
// the decision path) and, while it is off by more than CLOCK_TOLERANCE_MS, judges and stamps with
// Postgres's time instead: the time of the last measurement carried forward on the monotonic clock, which
// a step of the wall clock does not move. Within the tolerance the wall clock is used as it is. It is
// said loudly (docs/operations.md, "Clocks"): /readyz warns, the log warns, a CLOCK_SKEW alert, and
// killswitch_clock_offset_seconds for a Prometheus rule.

/** How often the clock is measured against Postgres's. */
export const CLOCK_CHECK_MS = 30_000;
/** Off by more than this (either way): warned about, and Postgres's time is used instead. */
export const CLOCK_TOLERANCE_MS = 1_000;
/** A measurement whose round trip took longer says too little (its error is up to half of it): not used. */
export const CLOCK_SAMPLE_MAX_RTT_MS = 500;
/** While the clock stays off, the warning is logged again this often. */
export const CLOCK_WARN_EVERY_MS = 600_000;

const QUERY = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS ms";

export interface ClockSample {
  /** Postgres's clock minus this replica's, at the middle of the round trip (ms; positive: this clock is behind). */
  offsetMs: number;
  rttMs: number;
  /** Postgres's time at the middle of the round trip (ms since the epoch). */
  postgresMs: number;
  /** performance.now() at the middle of the round trip. */
  mono: number;
  /** Date.now() at the middle of the round trip. */
  wall: number;
}

/** "600.0 s behind" / "2.5 s ahead" (of Postgres's clock). */
export function describeOffset(offsetMs: number): string {
  return `${(Math.abs(offsetMs) / 1000).toFixed(1)} s ${offsetMs > 0 ? 'behind' : 'ahead of'}`;
}

/** The /readyz warning while the clock is off (a fixed shape: the numbers, never a host). */
export function clockOffWarning(s: ClockSample): string {
  return `clock off: this replica's clock is ${describeOffset(s.offsetMs)} Postgres's (measured at ${new Date(s.postgresMs).toISOString()}): token, key and grant expiry are judged, and audit rows stamped, with Postgres's time until it is within ${CLOCK_TOLERANCE_MS / 1000} s again; fix this machine's time sync (NTP, chrony)`;
}

export class ClockOffset {
  private sample: ClockSample | undefined;
  private off = false;
  private warnedAt = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private soonAt = Number.NEGATIVE_INFINITY;
  private onChange: ((off: boolean, sample: ClockSample) => void) | undefined;

  constructor(
    private readonly pool: Pick<Pool, 'query'>,
    private readonly log: Pick<Logger, 'warn' | 'info'>,
  ) {}

  /**
   * The time to judge expiry and stamp records with (ms since the epoch): the wall clock, unless the last
   * measurement found it off by more than CLOCK_TOLERANCE_MS or it stepped by more than that since
   * (NTP putting it right, an operator's `date -s`); then Postgres's time, carried forward on the monotonic
   * clock from the last measurement. Two clock reads: cheap enough for every decision.
   */
  readonly now = (): number => {
    const wall = Date.now();
    const s = this.sample;
    if (s === undefined) return wall;
    const mono = performance.now();
    const stepped = Math.abs(wall - mono - (s.wall - s.mono)) > CLOCK_TOLERANCE_MS;
    if (!this.off && !stepped) return wall;
    if (stepped) this.measureSoon();
    return s.postgresMs + (mono - s.mono);
  };

  /** The last usable measurement (undefined before the first, or while none has been usable). */
  last(): ClockSample | undefined {
    return this.sample;
  }

  /** Whether the last measurement found this clock off by more than CLOCK_TOLERANCE_MS. */
  get isOff(): boolean {
    return this.off;
  }

  /**
   * Told when the clock goes off (a measurement past the tolerance after none was) and when it is back;
   * at once when it is off already (the start measures before anyone listens).
   */
  setOnChange(listener: (off: boolean, sample: ClockSample) => void): void {
    this.onChange = listener;
    if (this.off && this.sample) listener(true, this.sample);
  }

  /** Measures now (awaited: the start has a measurement before it judges anything), then on the timer. */
  async start(): Promise<void> {
    await this.measure();
    this.timer = setInterval(() => void this.measure(), CLOCK_CHECK_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One measurement (one at a time); a Postgres that does not answer keeps the last one. */
  measure(): Promise<void> {
    this.running ??= this.measureOnce().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** After a step of the wall clock: measured again at once, at most once a second (not once per decision). */
  private measureSoon(): void {
    const mono = performance.now();
    if (this.running !== undefined || this.timer === undefined || mono - this.soonAt < 1_000) return;
    this.soonAt = mono;
    void this.measure();
  }

  private async measureOnce(): Promise<void> {
    let sample: ClockSample;
    try {
      const m0 = performance.now();
      const { rows } = await this.pool.query<{ ms: number }>(withQueryTimeout({ text: QUERY }, CLOCK_SAMPLE_MAX_RTT_MS * 4));
      const m1 = performance.now();
      const wall1 = Date.now();
      const mono = (m0 + m1) / 2;
      const wall = wall1 - (m1 - mono);
      const postgresMs = Number(rows[0]?.ms);
      if (!Number.isFinite(postgresMs)) return;
      sample = { offsetMs: postgresMs - wall, rttMs: m1 - m0, postgresMs, mono, wall };
    } catch {
      // Postgres unreadable: the last measurement stands (a clock does not drift far in an outage), and
      // whatever else needs Postgres says so.
      return;
    }
    if (sample.rttMs > CLOCK_SAMPLE_MAX_RTT_MS) return;
    this.sample = sample;
    const off = Math.abs(sample.offsetMs) > CLOCK_TOLERANCE_MS;
    const changed = off !== this.off;
    this.off = off;
    if (off && (changed || sample.mono - this.warnedAt >= CLOCK_WARN_EVERY_MS)) {
      this.warnedAt = sample.mono;
      this.log.warn(
        { offset_ms: Math.round(sample.offsetMs), rtt_ms: Math.round(sample.rttMs * 10) / 10, local: new Date(sample.wall).toISOString(), postgres: new Date(sample.postgresMs).toISOString() },
        `this replica's clock is ${describeOffset(sample.offsetMs)} Postgres's: token, key and grant expiry are judged, and audit rows stamped, with Postgres's time until it is within ${CLOCK_TOLERANCE_MS / 1000} s again; fix this machine's time sync (NTP, chrony)`,
      );
    } else if (!off && changed) {
      this.log.info({ offset_ms: Math.round(sample.offsetMs) }, "this replica's clock agrees with Postgres's again: its own time is used");
    }
    if (changed) this.onChange?.(off, sample);
  }
}
