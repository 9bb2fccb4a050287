// Writes docs/api.md from the OpenAPI document the route schemas generate. Builds the app like `npm start`
// does (so Postgres and Redis must be up; Unleash may be down: flags only delay the start), renders, closes.
// Run: npm run docs:api
import { writeFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { type OpenApiDocument, renderApiDoc } from '../src/docs/api.js';

const quiet = new Writable({ write: (_chunk, _enc, cb) => cb() });
const app = await buildApp(loadConfig(process.env, { unleashStartWaitMs: 0 }), { logStream: quiet });
try {
  await app.ready();
  writeFileSync('docs/api.md', renderApiDoc(app.swagger() as OpenApiDocument));
  console.log('wrote docs/api.md');
} finally {
  await app.close();
}
