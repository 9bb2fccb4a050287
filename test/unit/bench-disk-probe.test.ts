import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { answersDuringStalls, DISK_STALL_MS, startDiskProbe } from '../../scripts/bench/disk-probe.js';

// The benchmark's disk probe (scripts/bench/disk-probe.ts): which slow open-loop answers were in flight
// while the disk's fdatasync stalled, and the probe process itself.
describe('answersDuringStalls', () => {
  const start = 1_000_000;

  it('counts only answers over the threshold, and those whose flight overlaps a stall', () => {
    // [ms after start it was scheduled, latency ms]
    const timeline: Array<[number, number]> = [
      [0, 1], // fast: not counted at all
      [10, 5], // slow, 10..15: before the stall
      [95, 30], // slow, 95..125: overlaps the stall 100..180
      [150, 40], // slow, 150..190: inside and after it
      [185, 6], // slow, 185..191: starts after the stall ended
      [120, 3], // fast, during the stall: not "over"
    ];
    const stalls: Array<[number, number]> = [[start + 100, 80]];
    expect(answersDuringStalls(timeline, start, stalls, 4)).toEqual({ over: 4, overDuringStall: 2 });
  });

  it('matches several stalls in any order, and none when there are none', () => {
    const timeline: Array<[number, number]> = [
      [0, 10],
      [500, 10],
      [1000, 10],
    ];
    expect(answersDuringStalls(timeline, start, [[start + 1005, 20], [start + 2, 15]], 4)).toEqual({ over: 3, overDuringStall: 2 });
    expect(answersDuringStalls(timeline, start, [], 4)).toEqual({ over: 3, overDuringStall: 0 });
  });
});

describe('startDiskProbe', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('calls fdatasync until stopped, reports its timings and stalls, and removes its file', async () => {
    const dir = await mkdtemp(join(os.tmpdir(), 'ks-probe-test-'));
    dirs.push(dir);
    const probe = await startDiskProbe(dir);
    await new Promise((r) => setTimeout(r, 300));
    const result = await probe.stop();
    // One fdatasync before `ready`, the next ~10 ms later; stop is read only after a call in progress
    // returns, so even a disk stall longer than the wait leaves at least two (usually ~25).
    expect(result.fsyncs).toBeGreaterThanOrEqual(2);
    expect(result.p50_ms).toBeGreaterThanOrEqual(0);
    expect(result.p99_ms).toBeGreaterThanOrEqual(result.p50_ms);
    expect(result.max_ms).toBeGreaterThanOrEqual(result.p99_ms);
    for (const [at, ms] of result.stalls) {
      expect(ms).toBeGreaterThanOrEqual(DISK_STALL_MS);
      expect(at).toBeGreaterThan(Date.now() - 60_000);
    }
    expect(await readdir(dir)).toEqual([]);
  });
});
