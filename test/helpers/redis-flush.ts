import type { Redis } from 'ioredis';

/**
 * Deletes every key under `prefix` at one instant, as a FLUSHALL or a restarted Redis would for this file:
 * the keys are collected first (SCAN walks the whole shared keyspace, every test file's, in many steps) and
 * deleted by one DEL. Deleting step by step let a running app notice the missing epoch and reload between
 * two steps, and a later step then deleted part of what the reload had written (halts-reconcile, CI at
 * 2026-12-08 with six files at a time).
 */
export async function flushPrefix(redis: Redis, prefix: string): Promise<number> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  return keys.length ? redis.del(...keys) : 0;
}
