// Writes docs/api.md from the OpenAPI document the route schemas generate. Builds the app like `npm start`
// does (so Postgres and Redis must be up; Unleash may be down: flags only delay the start), renders, closes.
// The app runs on a scratch database (migrated afresh, dropped at the end), a Redis prefix and a DATA_DIR of
// its own, so neither an installation's data nor a stale local database (one migrated by an older
// version of a migration) can stop it or be touched by it.
// Run: npm run docs:api
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { buildApp } from '../src/app.js';
import { loadConfig, withDatabaseName } from '../src/config.js';
import { type OpenApiDocument, renderApiDoc } from '../src/docs/api.js';
import { scratchDatabase } from './scratch-db.js';

const base = loadConfig(process.env);
const tag = `killswitch_docs_${process.pid}`;
const db = scratchDatabase(withDatabaseName(base.databaseUrl, 'postgres'), tag);
const dataDir = mkdtempSync(join(tmpdir(), 'killswitch-docs-'));
const redisPrefix = `${tag}:`;
const quiet = new Writable({ write: (_chunk, _enc, cb) => cb() });

await db.create();
try {
  const app = await buildApp(loadConfig(process.env, { unleashStartWaitMs: 0, databaseUrl: db.url, redisPrefix, dataDir }), { logStream: quiet });
  try {
    await app.ready();
    writeFileSync('docs/api.md', renderApiDoc(app.swagger() as OpenApiDocument));
    console.log('wrote docs/api.md');
  } finally {
    await app.close();
  }
} finally {
  await db.drop();
  rmSync(dataDir, { recursive: true, force: true });
  const redis = new Redis(base.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    for (let cursor = '0'; ; ) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${redisPrefix}*`, 'COUNT', 1000);
      if (keys.length) await redis.del(...keys);
      cursor = next;
      if (cursor === '0') break;
    }
  } finally {
    redis.disconnect();
  }
}
