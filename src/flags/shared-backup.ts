import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LUA_NOW } from '../limits/lua.js';
import type { RedisHandle } from '../redis/client.js';

// The last flags fetched from Unleash by any replica, kept in the installation's Redis with the time
// Unleash last confirmed them, so a replica that starts while it cannot reach Unleash does not start
// from an older backup file of its own when another replica already knew better (a flag turned off since).
//
// Times are Redis's own clock (TIME inside the scripts), never a replica's: a replica with a clock ahead
// cannot make its copy look fresher than it is, and ages read back are measured on the clock that wrote
// them. A write never replaces a copy confirmed later (two replicas polling at once, a slow write).
// Only replicas that fetched from Unleash write; a replica that started from a backup shares nothing.

/** Hash fields: `hash` (of the data), `body` (JSON of {url, environment, data}), `at` (ms, Redis time). */
const PUT = `${LUA_NOW}
local at = now - tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[1], 'at', 'hash')
local curAt = tonumber(cur[1])
if curAt and curAt >= at then return 0 end
if cur[2] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'at', at)
elseif ARGV[3] == '' then
  return -1
else
  redis.call('HSET', KEYS[1], 'at', at, 'hash', ARGV[1], 'body', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`;

/** Returns {body, age in ms on Redis's clock} or nil. */
const GET = `${LUA_NOW}
local cur = redis.call('HMGET', KEYS[1], 'at', 'body')
if not cur[1] or not cur[2] then return nil end
return {cur[2], tostring(now - tonumber(cur[1]))}
`;

export function dataHash(dataJson: string): string {
  return createHash('sha256').update(dataJson).digest('base64url');
}

export class SharedFlagBackup {
  readonly key: string;
  private readonly keepMs: number;
  private readonly redis: Redis;

  /**
   * `maxAgeS`: UNLEASH_BACKUP_MAX_AGE_S. A copy no replica confirmed for that long could not be used to
   * start anyway, so the key expires then (at least a minute after its last write): nothing in Redis is
   * kept forever that is not a halt, a session or the epoch.
   */
  constructor(handle: RedisHandle, environment: string, maxAgeS: number) {
    this.key = handle.key('flags', 'last-fetched', environment);
    this.keepMs = Math.max(60, maxAgeS) * 1000;
    // Plain EVAL, not defineCommand: a command defined on a connection after its auto-pipelines exist is
    // missing from them, and ioredis then throws "results[i] is not iterable" outside any promise (an
    // uncaught exception). These scripts run once at start and every few seconds: sending them whole costs nothing.
    this.redis = handle.redis;
  }

  /**
   * Records that Unleash confirmed the data of `hash` `confirmedAgoMs` ago. `body` may be left out when only
   * confirming: `false` then means Redis holds other data confirmed earlier, and the caller sends it again
   * with its body. True also when nothing changed because Redis holds a later confirmation.
   */
  async put(hash: string, confirmedAgoMs: number, body: string | undefined): Promise<boolean> {
    const r = (await this.redis.eval(PUT, 1, this.key, hash, String(Math.max(0, Math.round(confirmedAgoMs))), body ?? '', String(this.keepMs))) as number;
    return r !== -1;
  }

  /** The copy in Redis and its age, or undefined when there is none. */
  async get(): Promise<{ body: string; ageMs: number } | undefined> {
    const r = (await this.redis.eval(GET, 1, this.key)) as [string, string] | null;
    if (!r) return undefined;
    return { body: r[0], ageMs: Number(r[1]) };
  }
}
