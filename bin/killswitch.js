#!/usr/bin/env node
// Runs the TypeScript CLI directly through tsx so a fresh clone needs no build step.
import { setFlagsFromString } from 'node:v8';
import { register } from 'tsx/esm/api';

// V8's allocation-site pretenuring misjudges the decision path: under load it sends allocation sites of
// the decision path straight to the old generation, and whatever those objects point to is promoted with
// them: ~4 KB per decision, a major GC every ~8 s at 2,000 decisions/s and stalls of 10-20 ms in the
// open-loop tail (docs/performance.md, "Fifth pass"). `npm start` and the Dockerfile pass the flag on
// the command line, where it works fully (~0.1 KB promoted per decision); set here, for other ways of
// starting, it works in part (~0.6 KB). Workers of WORKERS > 1 inherit the command line's flags.
if (!process.execArgv.includes('--no-allocation-site-pretenuring')) setFlagsFromString('--no-allocation-site-pretenuring');

register();
await import('../src/cli/main.ts');
