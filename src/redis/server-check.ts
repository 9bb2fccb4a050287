import { randomUUID } from 'node:crypto';
import type { RedisHandle } from './client.js';

// What the control plane needs of the Redis REDIS_URL names, checked once at start (docs/operations.md,
// "Managed Redis"): a Redis that is not in cluster mode, and for REDIS_URL's user every command below, on
// keys and pub/sub channels under REDIS_PREFIX. A managed Redis or an ACL user that lacks one used to be
// found by the decisions: all denied (the state epoch could not be set), `/readyz` ready, and the log
// blaming "Postgres ... or Redis".

/**
 * Every command the control plane sends (from its scripts too: Redis checks a script's commands and keys
 * against the caller's ACL). SELECT only for a REDIS_URL naming a database other than 0.
 */
export const REDIS_COMMANDS = {
  connection: ['ping', 'info', 'select'],
  scripting: ['eval', 'evalsha'],
  transactions: ['multi', 'exec'],
  pubsub: ['publish', 'subscribe', 'unsubscribe'],
  strings: ['get', 'set', 'mget', 'mset', 'incr', 'decr', 'del', 'exists', 'pexpire', 'pexpireat', 'persist', 'pttl', 'time'],
  hashes: ['hget', 'hset', 'hsetnx', 'hdel', 'hincrby', 'hmget', 'hkeys', 'hgetall'],
  lists: ['lpush', 'rpush', 'lpop', 'lindex', 'lset', 'lrange', 'ltrim', 'lrem'],
  sets: ['sadd', 'srem', 'smembers'],
  sortedSets: ['zadd', 'zrange', 'zrem', 'zremrangebyscore', 'zcard'],
} as const;

/** Used when allowed, harmless when refused: `CONFIG GET maxmemory-policy` (the eviction warning). */
export const OPTIONAL_REDIS_COMMANDS = ['config|get'] as const;

/** Every required command, flat. */
export function requiredRedisCommands(): string[] {
  return Object.values(REDIS_COMMANDS).flat();
}

/** A glob pattern (ACL `~` / `&`) matching exactly the strings that start with `prefix`. */
function globPrefix(prefix: string): string {
  return `${prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}*`;
}

/**
 * The least-privilege ACL rule for REDIS_URL's user: the commands above, keys `<prefix>*` and channels
 * `<prefix>ch:*` only. As `ACL SETUSER <user> <rule>` takes it (on ElastiCache, a user's access string).
 */
export function redisAclRule(prefix: string, opts: { password?: string } = {}): string {
  const commands = [...requiredRedisCommands(), ...OPTIONAL_REDIS_COMMANDS].map((c) => `+${c}`).join(' ');
  return `on ${opts.password ? `>${opts.password} ` : ''}resetkeys ~${globPrefix(prefix)} resetchannels &${globPrefix(`${prefix}ch:`)} -@all ${commands}`;
}

// One script runs every data command once on keys of its own under the prefix (removed at its end), with
// pcall: under an ACL user each command or key it may not use fails alone, and the script reports which.
// Redis 7.0 words such a refusal "can't run this command" / "can't access at least one of the keys", 7.2
// "no permissions to run the '<command>' command" / "no permissions to access a key".
const PROBE_LUA = `
local p = ARGV[1]
local s, c, h, l, st, z = p .. 's', p .. 'c', p .. 'h', p .. 'l', p .. 'st', p .. 'z'
local now = redis.call('TIME')
local calls = {
  {'SET', s, '1', 'PX', '60000'}, {'GET', s}, {'MSET', s, '1'}, {'MGET', s}, {'EXISTS', s},
  {'PEXPIRE', s, '60000'}, {'PEXPIREAT', s, tostring(now[1] * 1000 + 60000)}, {'PERSIST', s}, {'PTTL', s},
  {'INCR', c}, {'DECR', c},
  {'HSET', h, 'f', '1'}, {'HSETNX', h, 'g', '1'}, {'HGET', h, 'f'}, {'HMGET', h, 'f'}, {'HINCRBY', h, 'n', '1'},
  {'HKEYS', h}, {'HGETALL', h}, {'HDEL', h, 'f'},
  {'LPUSH', l, 'a'}, {'RPUSH', l, 'b'}, {'LINDEX', l, '0'}, {'LSET', l, '0', 'a'}, {'LRANGE', l, '0', '-1'},
  {'LTRIM', l, '0', '9'}, {'LREM', l, '0', 'b'}, {'LPOP', l},
  {'SADD', st, 'a'}, {'SMEMBERS', st}, {'SREM', st, 'a'},
  {'ZADD', z, '1', 'a'}, {'ZRANGE', z, '0', '-1'}, {'ZCARD', z}, {'ZREM', z, 'a'}, {'ZREMRANGEBYSCORE', z, '0', '1'},
  {'DEL', s, c, h, l, st, z},
}
local refused = {}
for _, call in ipairs(calls) do
  local r = redis.pcall(unpack(call))
  if type(r) == 'table' and r.err then
    local e = string.lower(r.err)
    if string.find(e, "can't run", 1, true) or string.find(e, 'permissions to run', 1, true) then
      refused[#refused + 1] = 'command ' .. string.lower(call[1])
    elseif string.find(e, "can't access", 1, true) or string.find(e, 'permissions to access', 1, true) then
      refused[#refused + 1] = 'key ' .. call[2]
    end
  end
end
return refused
`;

/** What the start refuses a Redis for: in cluster mode, a read-only replica, or REDIS_URL's user lacking what is needed. */
export class RedisServerError extends Error {
  constructor(
    message: string,
    readonly problems: string[],
  ) {
    super(message);
    this.name = 'RedisServerError';
  }
}

const SUBSCRIBE_WAIT_MS = 3_000;

const refusedCommand = (err: unknown): string | undefined => {
  const message = (err as Error)?.message ?? '';
  if (!/^NOPERM/.test(message)) return undefined;
  return /'([a-z|]+)' command/i.exec(message)?.[1]?.toLowerCase() ?? message;
};

/**
 * Checks the Redis the command connection is ready on: not in cluster mode, not a read-only replica, and every command, key and
 * channel the control plane uses is allowed to REDIS_URL's user (one INFO, one script, one PUBLISH, one
 * SUBSCRIBE and UNSUBSCRIBE of a channel of its own). Throws RedisServerError listing every problem, with
 * the ACL rule that has none; errors that are not refusals (Redis gone meanwhile) are thrown as they are.
 */
export async function checkRedisServer(handle: RedisHandle): Promise<void> {
  const problems: string[] = [];
  let cluster = false;
  let replica = false;
  try {
    cluster = /^cluster_enabled:1\b/m.test(await handle.redis.info('cluster'));
    replica = /^role:slave\b/m.test(await handle.redis.info('replication'));
  } catch (err) {
    const command = refusedCommand(err);
    if (!command) throw err;
    problems.push(`command ${command}`);
  }
  if (cluster) {
    throw new RedisServerError(
      'REDIS_URL names a Redis in cluster mode (INFO cluster: cluster_enabled:1), which the control plane does not support: its scripts use keys of many hash slots in one call, so Redis would refuse them (CROSSSLOT) and every decision would be denied. Use a Redis without cluster mode: a primary with replicas behind one endpoint that follows failovers (ElastiCache with cluster mode disabled: its primary endpoint; Azure Cache for Redis without clustering; Memorystore for Redis, not Memorystore for Redis Cluster). docs/operations.md, "Managed Redis"',
      ['cluster mode'],
    );
  }
  if (replica) {
    throw new RedisServerError(
      "REDIS_URL names a read-only replica (INFO replication: role:slave): the control plane writes on every decision, so Redis would refuse them (READONLY) and every decision would be denied. Use the primary's endpoint (on a managed Redis the primary endpoint, which follows failovers; never a reader endpoint). docs/operations.md, \"Managed Redis\"",
      ['read-only replica'],
    );
  }
  const probe = handle.key(`perm-probe:${randomUUID()}:`);
  try {
    const refused = (await handle.redis.eval(PROBE_LUA, 0, probe)) as string[];
    problems.push(...refused.map((r) => (r.startsWith('key ') ? `keys ${handle.prefix}*` : r)));
  } catch (err) {
    const command = refusedCommand(err);
    if (!command) throw err;
    problems.push(`command ${command}`);
  }
  try {
    // Unknown sha: NOSCRIPT when EVALSHA is allowed.
    await handle.redis.evalsha('0000000000000000000000000000000000000000', 0);
  } catch (err) {
    const command = refusedCommand(err);
    if (command) problems.push(`command ${command}`);
    else if (!/^NOSCRIPT/.test((err as Error).message)) throw err;
  }
  try {
    await handle.redis.multi().ping().exec();
  } catch (err) {
    const command = refusedCommand(err) ?? refusedCommand((err as { previousErrors?: unknown[] }).previousErrors?.[0]);
    if (!command) throw err;
    problems.push(`command ${command}`);
  }
  const channel = handle.channel(`perm-probe:${randomUUID()}`);
  for (const [name, run] of [
    ['publish', () => handle.redis.publish(channel, '')],
    ['subscribe', () => handle.sub.subscribe(channel).then(() => handle.sub.unsubscribe(channel))],
  ] as const) {
    let timer: NodeJS.Timeout | undefined;
    try {
      // The subscriber connection queues while it is not connected: not waited for longer than this.
      await Promise.race([run(), new Promise<void>((r) => (timer = setTimeout(r, SUBSCRIBE_WAIT_MS)))]);
    } catch (err) {
      const message = (err as Error).message ?? '';
      if (!/^NOPERM/.test(message)) throw err;
      problems.push(/channel/i.test(message) ? `channels ${handle.channel('*')}` : `command ${refusedCommand(err) ?? name}`);
    } finally {
      clearTimeout(timer);
    }
  }
  if (problems.length > 0) {
    const unique = [...new Set(problems)];
    throw new RedisServerError(
      `REDIS_URL's user may not use what the control plane needs in Redis: ${unique.join(', ')}. Decisions would be denied (NOPERM). Give the user this ACL rule (ACL SETUSER <user> ${redisAclRule(handle.prefix)}; on a managed Redis, its access string), or keep REDIS_PREFIX within the keys and channels it may use. docs/operations.md, "Managed Redis"`,
      unique,
    );
  }
}
