import type { TestSpecification } from 'vitest/node';
import { BaseSequencer } from 'vitest/node';
import { defineConfig } from 'vitest/config';

// Three groups of files:
// - `parallel`: files that can share the machine, four at a time;
// - `unleash-lane`: the files that turn flags off (*.unleash-lane.ts), run one after another in one test
//   file (test/unleash-lane.test.ts) against an Unleash of their own, beside the parallel files;
// - `serial`: files that restart or pause a shared service (Postgres, Redis) or measure timings that load
//   distorts (*.serial.test.ts), one at a time after the others.
// One `vitest run` runs them all, with one global setup (the template database and each project's embedded
// Unleash started once). The lane was part of the serial phase until 2026-12-06: 140 s of a 489 s run.
const LANE = 'unleash-lane';
// An external Unleash (TEST_UNLEASH_URL) is the lane's too: its files then run after the parallel ones.
const laneAlone = process.env['TEST_UNLEASH_URL'] === undefined;
const PARALLEL_WORKERS = 6;

/** The lane's one long file first: sorted by size (a fresh clone has no timings) it would start last. */
class LaneFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    return [...sorted.filter((f) => f.project.name === LANE), ...sorted.filter((f) => f.project.name !== LANE)];
  }
}

export default defineConfig({
  test: {
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    sequence: { sequencer: LaneFirst },
    projects: [
      {
        extends: true,
        test: {
          name: LANE,
          sequence: { groupOrder: laneAlone ? 0 : 1 },
          // One file: the count only has to match the other projects of its group (Vitest refuses two).
          maxWorkers: laneAlone ? PARALLEL_WORKERS : 1,
          include: ['test/unleash-lane.test.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'parallel',
          sequence: { groupOrder: 0 },
          // Vitest's default is one worker fewer than the CPUs: on the 2-core CI machine that is one file
          // at a time. These files spend much of their time waiting (Postgres, Redis, Unleash, child
          // processes, timers), so four at a time, the lane's file one of them while it runs (projects of
          // one group share the workers). Measured in full runs on one machine (2026-12-06): three
          // workers with the flag files in the serial phase 489 s, with the lane 396 s, four 336 s. On a
          // machine half as fast (2026-12-07) four took 717 s and five 692 s, with one more timing flake: four kept.
          // On 2026-12-08 (a machine whose two cores were half idle during the run: the files wait more
          // than they compute) four took 530 s (the phase 462 s) and six 446 s (380 s), nothing flaky,
          // Postgres's 100 connections enough: six.
          maxWorkers: PARALLEL_WORKERS,
          // A worker keeps its modules between files instead of importing the app afresh for each one
          // (import time 217 s → 43 s summed over the files, the phase 346 s → 240 s in one run). Safe
          // here because every file builds its own apps, database and Redis prefix (TestContext) and
          // nothing in src/ or test/ keeps per-file state at module level; a file that needs a fresh
          // module graph (vi.mock, fake timers left on) would have to say `isolate: true` itself.
          isolate: false,
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.serial.test.ts', 'test/unleash-lane.test.ts', 'node_modules/**'],
        },
      },
      {
        extends: true,
        test: {
          name: 'serial',
          sequence: { groupOrder: laneAlone ? 1 : 2 },
          include: ['test/**/*.serial.test.ts'],
          fileParallelism: false,
        },
      },
    ],
  },
});
