// The machine's disk, watched beside each open-loop run. An allowed decision waits for its audit INTENT
// to be durable: a Postgres commit, whose WAL flush is an fdatasync. On the VMs these benchmarks run on,
// fdatasync itself sometimes stalls for 20-450 ms with nothing else running (a write + fdatasync loop on
// an idle machine: p50 0.06 ms, five stalls of 34-453 ms in one minute), and every commit waiting at that
// moment waits with it. At 2,000 req/s a 100 ms stall alone puts ~200 answers over 4 ms, a sixth of what
// a p99 allows in a 60 s run. docs/performance.md, "Seventh pass".
//
// The probe writes 8 KB and calls fdatasync every ~10 ms in a process of its own, in a directory on the
// disk to watch (by default the OS temporary directory), and keeps every fdatasync that took
// DISK_STALL_MS or more with its wall-clock start, so the open loop's slow answers can be matched with
// the disk's stalls (`answersDuringStalls`). ~100 small fsyncs a second add little to what Postgres does.
//
//   node --import tsx scripts/bench/disk-probe.ts <dir>   (used by startDiskProbe; `stop` on stdin ends it)

import { closeSync, fdatasyncSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { answerAndExit, readyThenWait, startReadyChild } from './child.js';
import { percentile } from './percentile.js';

/** An fdatasync that took this long or longer is a stall. */
export const DISK_STALL_MS = 10;

export interface DiskProbeResult {
  /** fdatasync calls made. */
  fsyncs: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  /** Each fdatasync of DISK_STALL_MS or more: [its start in ms since the epoch, its duration in ms]. */
  stalls: Array<[number, number]>;
}

export interface DiskProbe {
  /** Ends the probe and resolves with what it saw. */
  stop(): Promise<DiskProbeResult>;
}

/** Starts the probe in a process of its own, writing to a file in `dir`. */
export async function startDiskProbe(dir: string): Promise<DiskProbe> {
  const child = await startReadyChild('disk probe', ['--import', 'tsx', fileURLToPath(import.meta.url), dir]);
  return { stop: () => child.ask<DiskProbeResult>('stop') };
}

/**
 * Of the answers slower than `overMs`, how many were in flight while the disk stalled. `timeline` holds
 * each answer's place in the schedule (ms after `start`, ms since the epoch) and its latency; an answer
 * counts when [scheduled, scheduled + latency] overlaps a stall. The schedule time stands for the write
 * (the generator's lag, ~2 ms at p99, is left out), so the match is loose by that much.
 */
export function answersDuringStalls(timeline: ReadonlyArray<readonly [number, number]>, start: number, stalls: ReadonlyArray<readonly [number, number]>, overMs: number): { over: number; overDuringStall: number } {
  const sorted = [...stalls].sort((a, b) => a[0] - b[0]);
  let over = 0;
  let overDuringStall = 0;
  for (const [at, latency] of timeline) {
    if (latency <= overMs) continue;
    over++;
    const from = start + at;
    const to = from + latency;
    if (sorted.some(([s, d]) => s <= to && s + d >= from)) overDuringStall++;
  }
  return { over, overDuringStall };
}

// As a child of startDiskProbe: write + fdatasync every ~10 ms until `stop`, then print the result.
if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2]) {
  const file = join(process.argv[2], `ks-disk-probe-${process.pid}.bin`);
  const fd = openSync(file, 'w', 0o600);
  const block = Buffer.alloc(8192, 120);
  const durations = new Float64Array(1 << 20);
  const stalls: Array<[number, number]> = [];
  let n = 0;
  let timer: NodeJS.Timeout | undefined;
  const once = () => {
    writeSync(fd, block, 0, block.length, (n % 128) * block.length);
    const startedAt = performance.timeOrigin + performance.now();
    const t0 = performance.now();
    fdatasyncSync(fd);
    const ms = performance.now() - t0;
    if (n < durations.length) durations[n] = ms;
    n++;
    if (ms >= DISK_STALL_MS) stalls.push([Math.round(startedAt), +ms.toFixed(1)]);
    timer = setTimeout(once, 10);
  };
  once();
  await readyThenWait();
  clearTimeout(timer);
  closeSync(fd);
  unlinkSync(file);
  const sorted = durations.slice(0, Math.min(n, durations.length)).sort();
  const result: DiskProbeResult = { fsyncs: n, p50_ms: +percentile(sorted, 50).toFixed(3), p99_ms: +percentile(sorted, 99).toFixed(3), max_ms: +(sorted.at(-1) ?? Number.NaN).toFixed(3), stalls };
  answerAndExit(result);
}
