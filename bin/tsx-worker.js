// A worker thread's TypeScript entry (workerData.entry, a file URL) run through tsx, as bin/killswitch.js runs
// the CLI when there is no bundle: src/policy/parse-thread.ts starts its thread with this when it runs from the
// sources (tsx, vitest). Node 20 does not apply hooks given to a worker with `--import` to its entry, and a
// worker does not inherit the hooks tsx registered on the main thread, so they are registered here.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.entry);
