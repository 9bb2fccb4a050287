import { defineConfig } from 'vitest/config';

// Two groups: files that can share the machine run in parallel; files that restart or flush a shared
// service (Postgres, Redis) or toggle shared Unleash flags are named *.serial.test.ts and run one at a
// time afterwards. One `vitest run` runs both, in that order (sequence.groupOrder), with one global setup
// (the template database and the embedded Unleash started once: ~40 s less than two runs in sequence).
export default defineConfig({
  test: {
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'parallel',
          sequence: { groupOrder: 0 },
          // Vitest's default is one worker fewer than the CPUs: on the 2-core CI machine that is one file
          // at a time. These files spend most of their time waiting (Postgres, Redis, Unleash, child
          // processes, timers), so three at a time keeps the suite well inside its 10 minutes.
          maxWorkers: 3,
          // A worker keeps its modules between files instead of importing the app afresh for each one
          // (import time 217 s → 43 s summed over the files, the phase 346 s → 240 s in one run). Safe
          // here because every file builds its own apps, database and Redis prefix (TestContext) and
          // nothing in src/ or test/ keeps per-file state at module level; a file that needs a fresh
          // module graph (vi.mock, fake timers left on) would have to say `isolate: true` itself.
          isolate: false,
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.serial.test.ts', 'node_modules/**'],
        },
      },
      {
        extends: true,
        test: {
          name: 'serial',
          sequence: { groupOrder: 1 },
          include: ['test/**/*.serial.test.ts'],
          fileParallelism: false,
        },
      },
    ],
  },
});
