// Generates docs/errors.md and docs/configuration.md from src/errors.ts and src/config.ts, so the docs
// cannot drift from the code (test/unit/docs.test.ts fails when they are stale). Run: npm run docs:gen
import { writeFileSync } from 'node:fs';
import { renderConfigurationDoc, renderErrorsDoc } from '../src/docs/render.js';

writeFileSync('docs/errors.md', renderErrorsDoc());
writeFileSync('docs/configuration.md', renderConfigurationDoc());
console.log('wrote docs/errors.md and docs/configuration.md');
