import { defineConfig } from 'vitest/config';

// Two groups: files that can share the machine run in parallel; files that restart or flush a shared
// service (Postgres, Redis) or toggle shared Unleash flags are named *.serial.test.ts and run one at a
// time afterwards (`npm test` runs the two projects in sequence).
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
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.serial.test.ts', 'node_modules/**'],
        },
      },
      {
        extends: true,
        test: {
          name: 'serial',
          include: ['test/**/*.serial.test.ts'],
          fileParallelism: false,
        },
      },
    ],
  },
});
