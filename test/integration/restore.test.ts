import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haltJournalBaseName } from '../../src/sessions/halt-journal.js';
import { TestContext } from '../helpers/context.js';
import { TEST_PG_URL } from '../helpers/env.js';
import { flushPrefix } from '../helpers/gate-fixtures.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// A database restored from a backup (docs/operations.md, section 9) next to what was written after it:
// a replica's DATA_DIR whose halt journal names an agent token the backup does not have (issued after it).
// The drill of 2026-12-07 found such a journal kept the state epoch unset for good: every decision denied.
// And a start on a restored database said nothing: kills and halts made after the backup were gone silently.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();

beforeAll(async () => {
  await t.setup();
});
afterAll(async () => {
  await t.teardown();
});

const read = { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' } };

/** Until the app's Redis state is loaded from Postgres and verified (the gate lets calls through). */
const stateLoaded = (app: FastifyInstance, ms = 10_000) =>
  until(async () => (await app.ctx.sessions.ensureState()) !== 'unavailable' && app.ctx.sessions.epoch.stateVerified, ms, 'Redis state loaded from Postgres');

/** A halt journal left in DATA_DIR by a run whose database was then restored from an older backup. */
async function leaveHaltJournal(entries: Array<Record<string, unknown>>): Promise<void> {
  await mkdir(t.dataDir, { recursive: true, mode: 0o700 });
  const path = join(t.dataDir, `${haltJournalBaseName(t.name)}.jsonl`);
  await writeFile(path, entries.map((e) => `${JSON.stringify({ id: uuidv7(), ...e })}\n`).join(''), { mode: 0o600 });
}

describe('a halt journal from after the backup', () => {
  it('naming an agent token the restored database does not have is dropped with an error, not retried for ever: decisions go on, the halts it can record are recorded', async () => {
    // A halt of a token issued after the backup (unknown here), and one of a token the backup has.
    const seed = await t.app({ policyFile: POLICY });
    const gw = await new GatewayDriver(t, seed).init();
    const known = await gw.token('ro');
    const other = await gw.token('ro');
    await t.close(seed);
    const unknownToken = uuidv7();
    const at = new Date().toISOString();
    await leaveHaltJournal([
      { tokenId: unknownToken, sessionId: uuidv7(), trigger: 'WRITE_IN_READ_SESSION', haltToken: true, summary: { message: 'halted after the backup' }, at },
      { tokenId: known.id, trigger: 'CASCADE_WRITE', haltToken: true, summary: { message: 'halted after the backup too' }, at },
    ]);

    const app = await t.app({ policyFile: POLICY });
    await stateLoaded(app);
    const gw2 = await new GatewayDriver(t, app).init();
    expect(await app.ctx.sessions.journaledHalts()).toBe(0);
    // The token the database has is halted; the other token's calls go on.
    const halts = await t.pool().query('SELECT token_id, trigger FROM token_halts WHERE resumed_at IS NULL');
    expect(halts.rows).toEqual([{ token_id: known.id, trigger: 'CASCADE_WRITE' }]);
    const s = await gw2.session(other.raw);
    expect((await gw2.decide(other.raw, { ...read, session_id: s.session_id })).code).toBe('OK');
    expect((await gw2.decide(known.raw, { ...read, session_id: (await gw2.session(known.raw)).session_id })).code).toBe('SESSION_HALTED');
    const dropped = t.logs.lines.map((l) => JSON.parse(l)).find((l) => l.token_id === unknownToken && l.level === 50);
    expect(dropped?.msg).toContain('this database has no such agent token');
    // Nothing is left to retry: the journal files in DATA_DIR are empty.
    const files = (await readdir(t.dataDir)).filter((n) => n.startsWith('halt-journal.') && n.endsWith('.jsonl'));
    for (const f of files) expect(await readFile(join(t.dataDir, f), 'utf8')).toBe('');
    await t.close(app);
  }, 30_000);
});

describe('a Redis state that cannot be loaded from Postgres', () => {
  it('is said by /readyz (a warning) while every decision is denied; gone once the state loads', async () => {
    const app = await t.app({ policyFile: POLICY });
    await stateLoaded(app);
    const readyz = async () => (await app.inject({ url: '/readyz' })).json();
    expect((await readyz()).warnings).toEqual([]);
    // What the halt journal above did before its fix: the step before every reload of Redis fails.
    let failing = true;
    app.ctx.sessions.epoch.beforeReload(async () => {
      if (failing) throw new Error('cannot record a journaled halt');
    });
    await flushPrefix(app.ctx.redis);
    await until(async () => (await readyz()).warnings.some((w: string) => w.startsWith('Redis state not loaded from Postgres')), 10_000, 'the readyz warning');
    expect(await readyz()).toMatchObject({ ready: true, checks: { redis: 'ok' } });
    failing = false;
    await stateLoaded(app);
    await until(async () => (await readyz()).warnings.length === 0, 10_000, 'the warning gone');
    await t.close(app);
  }, 30_000);
});

describe('a kill Redis holds that the restored database does not have', () => {
  it('is removed by the reconciler with an error naming it (kill, target, reason), not silently; a lifted kill goes without one', async () => {
    const app = await t.app({ policyFile: POLICY });
    await stateLoaded(app);
    const gw = await new GatewayDriver(t, app).init();
    const tok = await gw.token('ro');
    const s = await gw.session(tok.raw);
    // The old keyspace kept (operations.md section 9, step 3 skipped): a kill made after the backup.
    const lost = { id: uuidv7(), target: 'everything', reason: 'INC-4 stop all, made after the backup', expires_at: null };
    await app.ctx.redis.redis.multi().set(app.ctx.redis.key('kill', 'all'), JSON.stringify(lost)).sadd(app.ctx.redis.key('kills', 'targets'), 'all').exec();
    expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('KILL_SWITCH');
    // And one made and lifted in this database: its removal is the usual one.
    const made = await app.inject({ method: 'POST', url: '/v1/kills', headers: { authorization: `Bearer ${gw.owner}` }, payload: { target: 'server', server: 'memory', reason: 'kept here' } });
    expect(made.statusCode).toBe(201);
    const lifted = await app.inject({ method: 'DELETE', url: `/v1/kills/${made.json().kill.id}`, headers: { authorization: `Bearer ${gw.owner}` }, payload: { reason: 'done' } });
    expect(lifted.statusCode).toBe(200);
    await app.ctx.kills.tick();
    expect((await gw.decide(tok.raw, { ...read, session_id: s.session_id })).code).toBe('OK');
    const removed = t.logs.lines.map((l) => JSON.parse(l)).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('kills: removed from Redis a kill this database has no record of'));
    expect(removed).toEqual([expect.objectContaining({ level: 50, kill: lost.id, target_key: 'all', target: 'everything', reason: lost.reason })]);
    await t.close(app);
  }, 30_000);
});

/** CREATE DATABASE copy TEMPLATE source: what pg_restore into a new database gives, a copy with another OID. */
async function copyDatabase(source: string, copy: string): Promise<void> {
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  await admin.connect();
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.query(`CREATE DATABASE ${copy} TEMPLATE ${source}`);
        return;
      } catch (err) {
        // The closed app's connections may take a moment to leave the source.
        if (attempt > 40 || !/being accessed by other users/.test((err as Error).message)) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    await admin.end();
  }
}

describe('a start on a restored database', () => {
  const original = new TestContext();
  const restored = new TestContext();
  afterAll(async () => {
    await original.teardown();
    await restored.teardown();
  });

  const restoredLines = (c: TestContext) => c.logs.lines.map((l) => JSON.parse(l)).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('This database is a copy'));
  const restoredAlerts = async (c: TestContext) => (await c.pool().query("SELECT message, details FROM alerts WHERE kind = 'DATABASE_RESTORED'")).rows;

  it('is said once, at error and as a critical DATABASE_RESTORED alert naming the copy\'s newest audit row; the original\'s start says nothing', async () => {
    await original.setup();
    // Its first start records the OID and says nothing.
    await t.close(await original.app({ policyFile: POLICY }));
    expect(restoredLines(original)).toEqual([]);
    const newest = (await original.pool().query<{ ts: Date }>('SELECT max(ts) AS ts FROM audit_events')).rows[0]!.ts;
    await original.pool().end();

    await copyDatabase(original.name, restored.name);
    const app = await restored.app({ policyFile: POLICY });
    const lines = restoredLines(restored);
    expect(lines).toHaveLength(1);
    expect(lines[0].level).toBe(50);
    expect(lines[0].msg).toContain(`its newest audit row is from ${newest.toISOString()}`);
    expect(lines[0].msg).toContain('Kills and halts made since are not in force');
    await until(async () => (await restoredAlerts(restored)).length === 1, 5_000, 'the DATABASE_RESTORED alert');
    expect((await restoredAlerts(restored))[0].details).toMatchObject({ newest_audit_row: newest.toISOString() });
    // Once per copy: the next start on it (another replica, a restart) says nothing.
    await t.close(app);
    await t.close(await restored.app({ policyFile: POLICY }));
    expect(restoredLines(restored)).toHaveLength(1);
    expect(await restoredAlerts(restored)).toHaveLength(1);
  }, 60_000);
});
