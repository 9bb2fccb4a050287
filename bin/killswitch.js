#!/usr/bin/env node
// Runs the TypeScript CLI with no build step to remember: a bundle of the sources, built on first use and
// again whenever a source file changes (bin/bundle.js), or, when none can be built, the sources through tsx.
import { setFlagsFromString } from 'node:v8';
import { bundledEntry } from './bundle.js';

// V8's allocation-site pretenuring misjudges the decision path: under load it sends allocation sites of
// the decision path straight to the old generation, and whatever those objects point to is promoted with
// them: ~4 KB per decision, a major GC every ~8 s at 2,000 decisions/s and stalls of 10-20 ms in the
// open-loop tail (docs/performance.md, "Fifth pass"). `npm start` and the Dockerfile pass the flag on
// the command line, where it works fully (~0.1 KB promoted per decision); set here, for other ways of
// starting, it works in part (~0.6 KB). Workers of WORKERS > 1 inherit the command line's flags.
if (!process.execArgv.includes('--no-allocation-site-pretenuring')) setFlagsFromString('--no-allocation-site-pretenuring');

const entry = await bundledEntry();
if (entry !== undefined) {
  // Stack traces name the TypeScript file and line, as under tsx (the maps are read only when one is printed).
  process.setSourceMapsEnabled(true);
  await import(entry);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
