import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedis, waitForRedis } from '../../src/redis/client.js';
import { RawScript } from '../../src/redis/raw-script.js';
import { TEST_REDIS_URL } from '../helpers/env.js';

// The gate's pre-encoded EVALSHA (src/redis/raw-script.ts) against the real Redis: the encoding must carry
// every argument byte for byte, a script Redis has never seen must still run, and calls sent in one turn
// of the event loop (one corked write) must each get their own answer. Each script here has a unique text,
// so no other test file's scripts are touched (nothing is flushed).

const handle = createRedis(TEST_REDIS_URL, `kst:raw:${randomBytes(4).toString('hex')}:`, 2_000);
afterAll(() => handle.close());

const unique = () => `-- ${randomBytes(8).toString('hex')}\n`;
const ECHO = () => `${unique()}return ARGV`;

describe('RawScript', () => {
  it('carries every argument exactly: multi-byte UTF-8, CR/LF, empty strings, numbers, a long value', async () => {
    await waitForRedis(handle);
    const script = new RawScript(handle.redis, ECHO());
    const args = ['plain', 'é ü ß', '日本語', '🙂 emoji', 'line\r\nbreak', '', '$3\r\nfake', 42, -1.5, 'x'.repeat(100_000)];
    const reply = (await script.run(args)) as string[];
    expect(reply).toEqual(args.map(String));
  });

  it('runs a script Redis has not cached (NOSCRIPT → EVAL once), then by its SHA', async () => {
    await waitForRedis(handle);
    const script = new RawScript(handle.redis, `${unique()}return tonumber(ARGV[1]) + 1`);
    const probe = new Redis(TEST_REDIS_URL);
    try {
      expect(await probe.script('EXISTS', script.sha)).toEqual([0]);
      expect(await script.run([1])).toBe(2);
      expect(await probe.script('EXISTS', script.sha)).toEqual([1]);
      expect(await script.run([41])).toBe(42);
    } finally {
      probe.disconnect();
    }
  });

  it('calls sent in one turn of the event loop each get their own answer', async () => {
    await waitForRedis(handle);
    const script = new RawScript(handle.redis, `${unique()}return ARGV[1] .. ':' .. ARGV[2]`);
    await script.run(['warm', 'up']);
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => script.run([`call${i}`, `é${i}`])));
    expect(answers).toEqual(Array.from({ length: 200 }, (_, i) => `call${i}:é${i}`));
  });

  it("rejects with the script's error", async () => {
    await waitForRedis(handle);
    const script = new RawScript(handle.redis, `${unique()}return redis.error_reply('GATE broken on purpose')`);
    await expect(script.run([])).rejects.toThrow('GATE broken on purpose');
  });

  it('a send that throws rejects its call and does not hold the calls after it', async () => {
    await waitForRedis(handle);
    const script = new RawScript(handle.redis, ECHO());
    const redis = handle.redis as unknown as { sendCommand: (...a: unknown[]) => unknown };
    const original = redis.sendCommand;
    redis.sendCommand = () => {
      throw new Error('socket exploded');
    };
    try {
      await expect(script.run(['a'])).rejects.toThrow('socket exploded');
    } finally {
      redis.sendCommand = original;
    }
    expect(await script.run(['b'])).toEqual(['b']);
  });

  it('rejects at once when Redis is unreachable (no offline queue: the caller denies)', async () => {
    const down = createRedis('redis://127.0.0.1:1', 'kst:raw-down:', 500);
    try {
      const script = new RawScript(down.redis, ECHO());
      await expect(script.run(['a'])).rejects.toThrow();
    } finally {
      await down.close();
    }
  });
});
