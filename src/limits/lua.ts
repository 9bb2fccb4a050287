import type { Redis } from 'ioredis';

// Most of our Lua scripts take one JSON argument and return one JSON string: the request and answer shapes are
// then plain TypeScript types on this side and cjson tables on the other, instead of positional ARGV.
// The gate script, on every decision's path, uses positional arguments instead, sent pre-encoded by
// src/redis/raw-script.ts (docs/adr/0006-gate-script-pre-encoded.md).
// ioredis's defineCommand sends EVALSHA and falls back to EVAL once after a Redis restart (NOSCRIPT).

export type JsonScript = (request: object) => Promise<string>;

export function defineJsonScript(redis: Redis, name: string, lua: string): JsonScript {
  const commands = redis as unknown as Record<string, ((arg: string) => Promise<string>) | undefined>;
  if (typeof commands[name] !== 'function') redis.defineCommand(name, { numberOfKeys: 0, lua });
  return (request) => {
    const run = commands[name];
    if (!run) throw new Error(`Lua script ${name} is not defined`);
    return run.call(redis, JSON.stringify(request));
  };
}

/** cjson encodes an empty Lua table as `{}`: read it as an empty list. */
export function asList<T>(value: unknown): T[] {
  return Array.isArray(value) ? (value as T[]) : [];
}

/** Redis time helper shared by the scripts: milliseconds since the epoch, from Redis `TIME`. */
export const LUA_NOW = `
local __t = redis.call('TIME')
local now = tonumber(__t[1]) * 1000 + math.floor(tonumber(__t[2]) / 1000)
`;
