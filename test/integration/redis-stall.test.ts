import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis, waitForRedis } from '../../src/redis/client.js';
import { redisFailure } from '../../src/redis/failure.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { stall } from '../helpers/stall.js';

// REDIS_TIMEOUT_MS after a stall of the control plane's own event loop: ioredis's timeout timer is due
// when the loop comes back, and Node runs due timers before it reads the sockets, so a command whose
// reply had arrived during the stall failed as timed out (a decision denied DEPENDENCY_UNAVAILABLE, the
// gate's count given back by a second script). Now the reply that is there is used. (A reply that comes
// only after the stall, within one more REDIS_TIMEOUT_MS, is tested in gate-redis.serial.test.ts: it
// pauses the shared Redis.)

const handle = createRedis(TEST_REDIS_URL, `kst:stall-${process.pid}:`, 100);
beforeAll(() => waitForRedis(handle));
afterAll(() => handle.close());

/**
 * Holds the loop right after ioredis wrote what it queued (auto-pipelining, like the gate script's batch,
 * writes at setImmediate; this one is queued behind it), before any read of the socket.
 */
const stallOnceWritten = (ms: number) => new Promise<void>((resolve) => setImmediate(() => resolve(stall(ms))));

describe('a Redis reply that arrived while the event loop was held', () => {
  it('is used, not failed as timed out (the stall is 10 times REDIS_TIMEOUT_MS)', async () => {
    expect(await handle.redis.ping()).toBe('PONG');
    const ping = handle.redis.ping();
    const script = handle.redis.eval('return ARGV[1]', 0, 'answered');
    await stallOnceWritten(1_000);
    expect(await ping).toBe('PONG');
    expect(await script).toBe('answered');
  });

  it('a command Redis does not answer still times out (as the timeout kind of failure)', async () => {
    // A command that is never answered in time: Redis blocks on an empty list for longer than the timeout.
    const err = await handle.redis.blpop(`kst:stall-${process.pid}:never`, 1).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(redisFailure(err)).toEqual({ kind: 'timeout' });
  });
});
