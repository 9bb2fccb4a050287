import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { bearer, TestContext } from '../helpers/context.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { until as waitUntil } from '../helpers/unleash.js';

// Replicas of one installation (one database, one Redis prefix) that read different policy files.
// Short heartbeats so the live window passes within a test; the alert without its rollout delay.
const t = new TestContext();
const HEARTBEAT_MS = 100;
const LIVE_MS = 1500;
let dir: string;
let redis: Redis;
let owner: string;

beforeAll(async () => {
  await t.setup();
  dir = mkdtempSync(join(tmpdir(), 'ks-policy-replicas-'));
  redis = new Redis(TEST_REDIS_URL);
});
afterAll(async () => {
  await t.teardown();
  redis.disconnect();
  rmSync(dir, { recursive: true, force: true });
});

async function replica(file: string): Promise<FastifyInstance> {
  const app = await buildApp(t.config({ policyFile: file }), { migrate: false, logStream: t.logs, policyReplicas: { heartbeatMs: HEARTBEAT_MS, liveMs: LIVE_MS, alertAfterMs: 0 } });
  t.apps.push(app);
  return app;
}

/** test/helpers/unleash.ts's `until`, in this file's argument order. */
const until = (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000) => waitUntil(check, timeoutMs, what, 50);

const warnings = async (app: FastifyInstance): Promise<string[]> => {
  const res = await app.inject({ url: '/readyz' });
  return res.json().warnings;
};
const distinct = async (app: FastifyInstance): Promise<number | undefined> => {
  const res = await app.inject({ url: '/metrics', headers: bearer(owner) });
  const line = res.body.split('\n').find((l) => l.startsWith('killswitch_policy_replicas_distinct '));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
};
const divergedAlerts = async (app: FastifyInstance) => {
  const res = await app.inject({ url: '/v1/alerts?kind=POLICY_DIVERGED', headers: bearer(owner) });
  expect(res.statusCode, res.body).toBe(200);
  return res.json().alerts as Array<{ severity: string; message: string; details: { policies: Array<{ hash: string; replicas: number }> } }>;
};
const liveReplicas = (app: FastifyInstance) => app.ctx.policyReplicas.view()?.replicas.length ?? 0;

describe('replicas that decide with different policy files', () => {
  let a: FastifyInstance;
  let b: FastifyInstance;
  let fileA: string;
  let fileB: string;
  const hash8 = (app: FastifyInstance) => app.ctx.policy.current().hash.slice(0, 8);

  it('the same file on two replicas: no warning, the metric says 1, no alert, both listed with one hash', async () => {
    fileA = join(dir, 'a.yaml');
    fileB = join(dir, 'b.yaml');
    copyFileSync('test/fixtures/policy/test.yaml', fileA);
    copyFileSync('test/fixtures/policy/test.yaml', fileB);
    a = await replica(fileA);
    b = await replica(fileB);
    owner = await t.operatorKey(a, 'owner');
    await until('both replicas see each other', () => liveReplicas(a) === 2 && liveReplicas(b) === 2);
    await new Promise((r) => setTimeout(r, HEARTBEAT_MS * 3));
    for (const app of [a, b]) {
      expect(await warnings(app)).toEqual([]);
      // As of the last heartbeat: polled, since a heartbeat can be late on a loaded test machine.
      await until('the metric says 1', async () => (await distinct(app)) === 1);
    }
    expect(await divergedAlerts(a)).toEqual([]);
    // As of the last heartbeat, polled like the metric: both replicas run in this one process, so a stall of
    // it longer than LIVE_MS (a loaded CI machine) has the first heartbeat after it see the other as gone.
    let body: { policies?: Array<{ replicas: number }>; replicas: Array<{ replica_id: string }> } = { replicas: [] };
    await until('both replicas listed', async () => {
      const res = await a.inject({ url: '/v1/policy/replicas', headers: bearer(owner) });
      expect(res.statusCode, res.body).toBe(200);
      body = res.json();
      return body.policies?.[0]?.replicas === 2;
    });
    expect(body).toMatchObject({ this_replica: a.ctx.policyReplicas.replicaId, hash: a.ctx.policy.current().hash, distinct: 1, policies: [{ hash: a.ctx.policy.current().hash, replicas: 2 }] });
    expect(body.replicas.map((r: { replica_id: string }) => r.replica_id).sort()).toEqual([a.ctx.policyReplicas.replicaId, b.ctx.policyReplicas.replicaId].sort());
    expect((await a.inject({ url: '/v1/policy/replicas' })).statusCode).toBe(401);
  });

  it('one replica reloads another file: both warn on /readyz (still ready), the metric says 2, one POLICY_DIVERGED alert; agreeing again clears them', async () => {
    writeFileSync(fileB, `${readFileSync(fileB, 'utf8')}\n# changed on this replica only\n`);
    await b.ctx.policy.reload();
    expect(b.ctx.policy.current().hash).not.toBe(a.ctx.policy.current().hash);
    const expected = `replicas run 2 different policies: ${[hash8(a), hash8(b)].sort().map((h) => `${h} on 1`).join(', ')}`;
    for (const app of [a, b]) {
      await until('the divergence is seen', async () => (await warnings(app)).includes(expected));
      const res = await app.inject({ url: '/readyz' });
      expect(res.json().ready, res.body).toBe(true);
      await until('the metric says 2', async () => (await distinct(app)) === 2);
    }
    // Several heartbeats of both replicas see it: still one alert for the episode.
    await until('the alert', async () => (await divergedAlerts(a)).length > 0);
    await new Promise((r) => setTimeout(r, HEARTBEAT_MS * 5));
    const alerts = await divergedAlerts(b);
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({ severity: 'warning' });
    expect(alerts[0]!.details.policies.map((p) => p.hash).sort()).toEqual([a.ctx.policy.current().hash, b.ctx.policy.current().hash].sort());
    const listed = (await a.inject({ url: '/v1/policy/replicas', headers: bearer(owner) })).json();
    expect(listed.distinct).toBe(2);

    copyFileSync(fileA, fileB);
    await b.ctx.policy.reload();
    for (const app of [a, b]) {
      await until('agreement', async () => (await warnings(app)).length === 0);
      await until('the metric says 1', async () => (await distinct(app)) === 1);
    }
  });

  it('a replica that stops heartbeating drops out after the live window; one closed drops out at once', async () => {
    // What a killed process leaves: its entry, never refreshed again (stamped with Redis's clock).
    const [s, us] = await redis.time();
    const now = Number(s) * 1000 + Math.floor(Number(us) / 1000);
    const stale = 'f'.repeat(64);
    // Beside it, one last seen just past the live window (by Redis's clock): the same heartbeat that
    // counts the first one drops this one, so the window is measured from seen_at, not from our writes.
    // One HSET for both: a heartbeat between two writes saw the first alone (seen once in CI).
    await redis.hset(`${t.redisPrefix}policy:replicas`, {
      crashed: JSON.stringify({ hash: stale, loaded_at: now - 60_000, host: 'gone', pid: 1, seen_at: now }),
      'long-gone': JSON.stringify({ hash: 'e'.repeat(64), loaded_at: now - 60_000, host: 'gone', pid: 2, seen_at: now - LIVE_MS - 1 }),
    });
    await until('the crashed replica is seen', async () => (await warnings(a)).some((w) => w.includes('ffffffff on 1')));
    expect((await warnings(a)).some((w) => w.includes('eeeeeeee'))).toBe(false);
    expect(await redis.hexists(`${t.redisPrefix}policy:replicas`, 'long-gone')).toBe(0);
    await until('the crashed replica drops out', async () => (await warnings(a)).length === 0, LIVE_MS * 4);
    expect(await redis.hexists(`${t.redisPrefix}policy:replicas`, 'crashed')).toBe(0);
    await until('the metric says 1', async () => (await distinct(a)) === 1);

    const idB = b.ctx.policyReplicas.replicaId;
    await t.close(b);
    t.apps.splice(t.apps.indexOf(b), 1);
    const res = await a.inject({ url: '/v1/policy/replicas', headers: bearer(owner) });
    expect(res.json().replicas.map((r: { replica_id: string }) => r.replica_id)).toEqual([a.ctx.policyReplicas.replicaId]);
    expect(res.json().replicas).not.toContainEqual(expect.objectContaining({ replica_id: idB }));
    // The key has a TTL (Redis key hygiene): it goes when the last replica does.
    expect(await redis.pttl(`${t.redisPrefix}policy:replicas`)).toBeGreaterThan(0);
  });
});
