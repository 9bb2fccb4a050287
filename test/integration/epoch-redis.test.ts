import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { flushPrefix } from '../helpers/redis-flush.js';
import { freePort, until as waitUntil } from '../helpers/unleash.js';

// Losing Redis must never lift a halt (DESIGN.md §4, the state epoch). Two ways it did: Redis flushed
// again while a replica was reloading it (the reload set the epoch over a state it no longer held), and
// Redis restarted from its own snapshot (the epoch came back, the halts written after the snapshot did
// not). Each lifted the halt until the next housekeeping, up to a minute. The second uses a Redis of its
// own, started here, so the shared one is never stopped.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();

beforeAll(() => t.setup());
afterAll(() => t.teardown());

/** Until `fn` answers something: test/helpers/unleash.ts's `until`, in this file's argument order. */
const until = <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000) => waitUntil(async () => (await fn()) !== undefined, timeoutMs, what, 50);

const read = (sessionId: string) => ({ session_id: sessionId, server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' } });

/** Halts the token through the product: a write tool in a read-only session (WRITE_IN_READ_SESSION halts the token by default). */
async function haltedToken(gw: GatewayDriver): Promise<{ raw: string; sessionId: string }> {
  const tok = await gw.token('rw');
  const s = await gw.session(tok.raw, { read_only: true });
  expect((await gw.decide(tok.raw, read(s.session_id))).code).toBe('OK');
  const w = await gw.decide(tok.raw, { session_id: s.session_id, server: 'filesystem', tool: 'write_file', arguments: { path: 'a.md', content: 'x' } });
  expect(w.decision).toBe('deny');
  expect((await gw.decide(tok.raw, read(s.session_id))).code).toBe('SESSION_HALTED');
  return { raw: tok.raw, sessionId: s.session_id };
}

async function deletePrefix(app: FastifyInstance): Promise<void> {
  await flushPrefix(app.ctx.redis.redis, app.ctx.redis.prefix);
}

describe('the state epoch never lifts a halt', () => {
  it('the warning when Redis is away names Redis and its address, not only a driver error', { timeout: 30_000 }, async () => {
    await t.app({ policyFile: POLICY, redisUrl: 'redis://127.0.0.1:1' });
    expect(t.logs.text).toMatch(/state epoch check failed: Redis \(REDIS_URL, 127\.0\.0\.1:1\) is not reachable/);
  });

  it('Redis flushed again while a replica reloads it: the epoch is not set over the lost state, and the reload starts over', { timeout: 60_000 }, async () => {
    const app = await t.app({ policyFile: POLICY });
    const gw = await new GatewayDriver(t, app).init();
    const halted = await haltedToken(gw);
    // The second flush lands inside the reload, after the halts were copied (loaders run last).
    let flushes = 0;
    app.ctx.sessions.epoch.registerLoader('second-flush', async () => {
      if (flushes++ === 0) await deletePrefix(app);
    });
    await deletePrefix(app);
    const codes: string[] = [];
    await until(
      'the halt to be enforced again',
      async () => {
        await app.ctx.sessions.ensureState();
        const d = await gw.decide(halted.raw, read(halted.sessionId));
        codes.push(d.code);
        return d.code === 'SESSION_HALTED' ? true : undefined;
      },
      20_000,
    );
    expect(flushes).toBeGreaterThanOrEqual(2);
    // Before the fix the first reload set the epoch without the halt: the halted token was allowed (OK).
    expect(codes.filter((c) => c !== 'DEPENDENCY_UNAVAILABLE' && c !== 'SESSION_HALTED')).toEqual([]);
    expect(t.logs.text).toContain('Redis lost its data again while it was being reloaded');
  });

  it('Redis restarted from a snapshot older than the halt: the halt is re-applied before any call goes ahead', { timeout: 60_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ks-redis-'));
    const port = await freePort();
    let server: ChildProcess | undefined;
    let exited: Promise<unknown> = Promise.resolve();
    const startRedis = async () => {
      // RDB only when asked (SAVE below); loaded at start from `dir`.
      server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
      // Listened for from the start: a SHUTDOWN can end the process before a later listener is attached.
      const child = server;
      exited = new Promise((r) => child.once('exit', r));
      const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on('error', () => {});
      await until('the test Redis to start', async () => {
        try {
          if (probe.status !== 'ready') await probe.connect();
          return (await probe.ping()) === 'PONG' ? true : undefined;
        } catch {
          return undefined;
        }
      });
      return probe;
    };
    try {
      let admin = await startRedis();
      const app = await t.app({ policyFile: POLICY, redisUrl: `redis://127.0.0.1:${port}` });
      const gw = await new GatewayDriver(t, app).init();
      const tok = await gw.token('rw');
      const s = await gw.session(tok.raw, { read_only: true });
      expect((await gw.decide(tok.raw, read(s.session_id))).code).toBe('OK');
      // The snapshot holds the epoch and the session, not yet halted.
      await admin.call('SAVE');
      const w = await gw.decide(tok.raw, { session_id: s.session_id, server: 'filesystem', tool: 'write_file', arguments: { path: 'a.md', content: 'x' } });
      expect(w.decision).toBe('deny');
      expect((await gw.decide(tok.raw, read(s.session_id))).code).toBe('SESSION_HALTED');

      // Redis dies and comes back from that snapshot: the epoch is there, the halt is not.
      await admin.call('SHUTDOWN', 'NOSAVE').catch(() => {});
      admin.disconnect();
      await exited;
      admin = await startRedis();
      expect(await admin.exists(`${app.ctx.redis.prefix}epoch`)).toBe(1);
      // The snapshot predates the halt, so its key is missing, unless the control plane has already
      // noticed the restart and re-applied it (it can within milliseconds of the restart: seen once in CI).
      // It says so once the kills are re-applied too, a moment after the halts (a loaded CI run read the
      // log in between): then the line must come.
      if ((await admin.exists(`${app.ctx.redis.prefix}th:${tok.id}`)) === 1) {
        await until('the restart to be logged', async () => (t.logs.text.includes('Redis restarted with its data') ? true : undefined));
      }

      const codes: string[] = [];
      await until(
        'the halt to be enforced again',
        async () => {
          const d = await gw.decide(tok.raw, read(s.session_id));
          codes.push(d.code);
          return d.code === 'SESSION_HALTED' ? true : undefined;
        },
        20_000,
      );
      // Before the fix: OK until the next housekeeping (up to a minute).
      expect(codes.filter((c) => c !== 'DEPENDENCY_UNAVAILABLE' && c !== 'SESSION_HALTED')).toEqual([]);
      expect(t.logs.text).toContain('Redis restarted with its data');
      // A new session of the halted token is halted too.
      expect((await gw.decide(tok.raw, read((await gw.session(tok.raw)).session_id))).decision).toBe('deny');
      admin.disconnect();
    } finally {
      server?.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
