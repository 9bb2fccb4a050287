import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapOwner } from '../../src/app.js';
import { bearer, TestContext } from '../helpers/context.js';

// Replicas (or WORKERS) started together on an empty database: each runs the first start's bootstrap.
// Exactly one of them may make the owner key (and leave its file); the others must see it exists.

const t = new TestContext();

beforeAll(() => t.setup());
afterAll(() => t.teardown());

describe('first owner key, several replicas starting at once', () => {
  it('is created once: one replica gets the key, the others none; one row, one audit row', async () => {
    const replicas = await Promise.all([t.app(), t.app(), t.app()]);
    // Warm every pool, so each count runs on a connection of its own at the same instant.
    await Promise.all(replicas.map((r) => Promise.all([r.ctx.pool.query('SELECT 1'), r.ctx.pool.query('SELECT 1')])));

    const keys = await Promise.all(replicas.flatMap((r) => [bootstrapOwner(r), bootstrapOwner(r)]));

    const made = keys.filter((k): k is string => k !== undefined);
    expect(made).toHaveLength(1);
    const db = t.pool();
    expect((await db.query(`SELECT role, name, created_by FROM operator_keys`)).rows).toEqual([{ role: 'owner', name: 'bootstrap owner', created_by: 'bootstrap' }]);
    expect((await db.query(`SELECT count(*)::int AS n FROM audit_events WHERE action = 'operator_key.created'`)).rows[0].n).toBe(1);
    // The one made works on every replica.
    for (const r of replicas) expect((await r.inject({ method: 'GET', url: '/v1/operator-keys', headers: bearer(made[0]!) })).statusCode).toBe(200);

    // A later start finds it and makes none.
    expect(await bootstrapOwner(replicas[0]!)).toBeUndefined();
    expect((await db.query(`SELECT count(*)::int AS n FROM operator_keys`)).rows[0].n).toBe(1);
  });
});
