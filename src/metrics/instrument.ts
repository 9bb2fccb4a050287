import type { Redis } from 'ioredis';
import type pg from 'pg';

// Latency and errors of every Redis command and Postgres query of one app instance, measured where the
// command is sent, so nothing is added to any request but two clock reads and a map lookup. We wrap the
// instances' own methods (not the prototypes): several app instances live in one test process, and
// each must count only its own traffic.

export interface DependencySink {
  redisCommand(command: string, seconds: number, failed: boolean): void;
  /** `error` is null for a query that succeeded. */
  postgresQuery(pool: string, seconds: number, error: unknown): void;
  /** No connection could be had (Postgres down, pool exhausted past its timeout). */
  postgresConnectFailed(pool: string, error: unknown): void;
}

interface RedisCommandLike {
  name: string;
  args: unknown[];
  promise: Promise<unknown>;
}

/**
 * Failures ioredis expects and ignores: NOSCRIPT (it sends the script with EVAL then), and CLIENT SETINFO,
 * which it sends on every connect to name the library and which Redis before 7.2 does not know. Counted,
 * they were two Redis errors at each start and reconnect on Redis 7.0 (the `client` series that moves
 * whenever a replica restarts), though no command of ours failed.
 */
function expectedFailure(command: RedisCommandLike, err: unknown): boolean {
  if (err instanceof Error && err.message.startsWith('NOSCRIPT')) return true;
  return command.name === 'client' && String(command.args[0]).toLowerCase() === 'setinfo';
}

/** Times every command sent on `redis` (the command connection; the subscriber only waits). */
export function instrumentRedis(redis: Redis, sink: DependencySink): void {
  const send = redis.sendCommand.bind(redis) as (command: RedisCommandLike, stream?: unknown) => unknown;
  const wrapped = (command: RedisCommandLike, stream?: unknown) => {
    const started = performance.now();
    const result = send(command, stream);
    command.promise.then(
      () => sink.redisCommand(command.name, (performance.now() - started) / 1000, false),
      (err: unknown) => sink.redisCommand(command.name, (performance.now() - started) / 1000, !expectedFailure(command, err)),
    );
    return result;
  };
  (redis as unknown as { sendCommand: typeof wrapped }).sendCommand = wrapped;
}

type QueryFn = (...args: unknown[]) => unknown;
type ConnectCallback = (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void;

const INSTRUMENTED = Symbol('killswitch.metrics.instrumented');

/**
 * Times every query of `pool` and counts its errors, by wrapping each client as it is checked out
 * (pool.query checks out through pool.connect too). Cursors and streams are not timed.
 */
export function instrumentPool(pool: pg.Pool, name: string, sink: DependencySink): void {
  const wrapClient = (client: pg.PoolClient) => {
    const target = client as unknown as { query: QueryFn; [INSTRUMENTED]?: true };
    if (target[INSTRUMENTED]) return;
    target[INSTRUMENTED] = true;
    const query = target.query.bind(client) as QueryFn;
    target.query = (...args: unknown[]) => {
      const first = args[0] as { submit?: unknown } | undefined;
      if (first && typeof first === 'object' && typeof first.submit === 'function') return query(...args);
      const started = performance.now();
      const done = (err: unknown) => sink.postgresQuery(name, (performance.now() - started) / 1000, err);
      const last = args.at(-1);
      if (typeof last === 'function') {
        args[args.length - 1] = (err: unknown, res: unknown) => {
          done(err ?? null);
          (last as (e: unknown, r: unknown) => void)(err, res);
        };
        return query(...args);
      }
      const result = query(...args) as Promise<unknown> | undefined;
      result?.then?.(
        () => done(null),
        (err: unknown) => done(err),
      );
      return result;
    };
  };
  const connect = pool.connect.bind(pool) as (cb?: ConnectCallback) => Promise<pg.PoolClient> | undefined;
  const connectWrapped = (cb?: ConnectCallback) => {
    if (typeof cb === 'function') {
      return connect((err, client, release) => {
        if (client) wrapClient(client);
        else if (err) sink.postgresConnectFailed(name, err);
        cb(err, client, release);
      });
    }
    return connect()?.then(
      (client) => {
        wrapClient(client);
        return client;
      },
      (err: unknown) => {
        sink.postgresConnectFailed(name, err);
        throw err;
      },
    );
  };
  (pool as unknown as { connect: typeof connectWrapped }).connect = connectWrapped;
}

/** SQLSTATE class of a Postgres error ("23" integrity, "57" operator intervention ...), or "connection". */
export function postgresErrorClass(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code.slice(0, 2);
  return 'connection';
}
