/// <reference types="vite/client" />
import { afterAll, beforeAll, describe, inject } from 'vitest';
import { until } from './helpers/unleash.js';

// The files that turn flags off (*.unleash-lane.ts), one after another in this one test file. Its project
// (unleash-lane, vitest.config.ts) has an Unleash of its own (test/helpers/global-setup.ts), so these
// files run beside the parallel ones, which never see their flags, instead of after them; and being one
// file, they never run beside each other. Each module's hooks (beforeAll, afterEach, ...) belong to its
// describe below, as they belonged to its file. One of them alone: `npx vitest run
// test/unleash-lane.test.ts -t flags-step`.
const files = import.meta.glob('./**/*.unleash-lane.ts');
const unleash = inject('unleash');

/** The flags as a client of the lane's Unleash is served them (what the next file's control plane reads). */
async function servedFlags(): Promise<string> {
  const res = await fetch(`${unleash.apiUrl}/client/features`, { headers: { authorization: unleash.apiToken } });
  if (!res.ok) throw new Error(`GET /api/client/features: ${res.status}`);
  const { features } = (await res.json()) as { features: Array<{ name: string; enabled: boolean; strategies?: Array<Record<string, unknown>> }> };
  // A restored flag's strategies are new ones: compared without their ids.
  const strategies = (f: (typeof features)[number]) => (f.strategies ?? []).map(({ id: _id, ...rest }) => rest);
  return JSON.stringify(features.map((f) => [f.name, f.enabled, strategies(f)]).sort());
}

let initial = '';
beforeAll(async () => {
  initial = await servedFlags();
});

for (const [path, load] of Object.entries(files)) {
  const name = path.replace(/^\.\//, '').replace(/\.unleash-lane\.ts$/, '');
  describe(name, async () => {
    // Registered first, so it runs after the file's own afterAll hooks (they run in reverse order): a
    // file leaves the flags as it found them, and Unleash serves them so, before the next file starts.
    afterAll(async () => {
      // Unleash serves client features from a cache it refreshes every second (updateMaxRevisionId).
      await new Promise((r) => setTimeout(r, 1_500));
      await until(async () => (await servedFlags()) === initial, 10_000, `the flags ${name} turned off to be served on again`, 100);
    });
    await load();
  });
}
