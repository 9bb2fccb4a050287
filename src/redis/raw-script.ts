import { createHash } from 'node:crypto';
import { Command, type Redis } from 'ioredis';
import { UNSENT_MESSAGE } from './failure.js';

// One Lua script on the decision path, sent as a single pre-encoded RESP string. ioredis's own path for
// a script call (defineCommand) copies the argument list three times, builds the request by string
// concatenation one argument at a time and wraps the promise twice; with ~50 arguments per decision that
// was the largest allocator of the control plane (docs/performance.md). Here the request is encoded once
// with `join` and handed to ioredis as a Command whose `toWritable` returns it, batched like ioredis's
// auto-pipelining (Batcher below). Replies, timeouts, reconnects and errors stay ioredis's.

const CRLF = '\r\n';

function bulk(value: string): string {
  return `$${Buffer.byteLength(value)}${CRLF}${value}${CRLF}`;
}

/** RESP bulk strings of these arguments, concatenated: a piece of a request for `runEncoded`. */
export function encodeArgs(args: ReadonlyArray<string | number>): string {
  const parts: string[] = new Array(args.length);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    parts[i] = bulk(typeof a === 'string' ? a : String(a));
  }
  return parts.join('');
}

export class RawScript {
  readonly sha: string;
  private readonly evalshaHead: string;
  private readonly evalHead: string;
  private readonly batcher: Batcher;

  constructor(redis: Redis, lua: string) {
    this.batcher = batcherOf(redis);
    this.sha = createHash('sha1').update(lua).digest('hex');
    // EVALSHA <sha> 0 / EVAL <script> 0: no KEYS, everything travels in ARGV.
    this.evalshaHead = `${bulk('evalsha')}${bulk(this.sha)}${bulk('0')}`;
    this.evalHead = `${bulk('eval')}${bulk(lua)}${bulk('0')}`;
  }

  /** Runs the script with these ARGV. Rejects like any ioredis command (timeout, connection down). */
  run(args: ReadonlyArray<string | number>): Promise<unknown> {
    return this.runEncoded(args.length, encodeArgs(args));
  }

  /** Runs the script with `count` ARGV already encoded by `encodeArgs` (pieces may be cached and joined). */
  runEncoded(count: number, encodedArgs: string): Promise<unknown> {
    const head = `*${count + 3}${CRLF}`;
    return this.send('evalsha', head + this.evalshaHead + encodedArgs).catch((err: unknown) => {
      // After a Redis restart or SCRIPT FLUSH the script is gone: send it whole once (EVAL loads it).
      if (err instanceof Error && err.message.startsWith('NOSCRIPT')) return this.send('eval', head + this.evalHead + encodedArgs);
      throw err;
    });
  }

  private send(name: string, encoded: string): Promise<unknown> {
    const command = new Command(name, [], { replyEncoding: 'utf8' });
    command.toWritable = () => encoded;
    this.batcher.add(command);
    return command.promise;
  }
}

/**
 * Most commands one write carries. Redis runs a batch's scripts one after another (a gate check ~40-60 µs
 * there under load), and every command's REDIS_TIMEOUT_MS runs from its write: under overload the batch
 * that filled while the previous one was in flight grew to 10,463 checks in one write (~0.5 s of Redis's
 * time), its tail timed out, each of those cost a second script to give back what it had counted, and the
 * next batch grew again (2026-12-07, docs/performance.md "Overload"). 1,000 take Redis ~50 ms.
 */
export const MAX_BATCH_COMMANDS = 1_000;

/**
 * Sends the commands of one connection in batches, as ioredis's auto-pipelining does: a batch leaves at
 * setImmediate (so every request read in this turn of the event loop joins it) in one socket write, and
 * while a batch waits for its replies the next one fills up. Under load that keeps Redis's wake-ups (and
 * ours) to one per round trip instead of one per decision; alone, a command waits only for setImmediate.
 * A batch holds at most MAX_BATCH_COMMANDS (the rest leave with the next), and a command that waited
 * behind a batch in flight for longer than the connection's REDIS_TIMEOUT_MS is failed unsent: it never
 * ran, so nothing it would have counted needs giving back, and the replica sheds what Redis cannot check in
 * time (fail closed). Only waiting behind Redis counts: a command added while nothing was in flight is sent,
 * however long this process took to get to it.
 */
class Batcher {
  /** Waiting commands from `head` on, with when each was added (a queue by index: no shift). */
  private pending: Array<{ command: Command; at: number }> = [];
  private head = 0;
  private scheduled = false;
  private inFlight = 0;
  /** When the last batch in flight was settled: what waited until then waited behind Redis. */
  private releasedAt = 0;

  constructor(private readonly redis: Redis) {}

  add(command: Command): void {
    this.pending.push({ command, at: performance.now() });
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight > 0 || this.head >= this.pending.length) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** The next batch: up to MAX_BATCH_COMMANDS of the waiting commands; those waiting too long are failed unsent. */
  private take(): Command[] {
    const timeoutMs = this.redis.options.commandTimeout;
    const batch: Command[] = [];
    while (this.head < this.pending.length && batch.length < MAX_BATCH_COMMANDS) {
      const { command, at } = this.pending[this.head]!;
      this.pending[this.head++] = undefined as never;
      if (timeoutMs !== undefined && this.releasedAt - at > timeoutMs) command.reject(new Error(UNSENT_MESSAGE));
      else batch.push(command);
    }
    if (this.head >= this.pending.length) {
      this.pending = [];
      this.head = 0;
    } else if (this.head > 4_096 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
    return batch;
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.take();
    if (batch.length === 0) {
      this.schedule();
      return;
    }
    const stream = this.redis.status === 'ready' ? this.redis.stream : undefined;
    const corked = stream?.writable === true;
    if (corked) stream!.cork();
    this.inFlight = batch.length;
    const settled = () => {
      if (--this.inFlight > 0) return;
      this.releasedAt = performance.now();
      this.schedule();
    };
    try {
      for (const command of batch) {
        command.promise.then(settled, settled);
        try {
          // Rejects the command itself when the connection is not writable (no offline queue): the caller denies.
          this.redis.sendCommand(command);
        } catch (err) {
          // Never leave a command unsettled: the batch in flight would hold every later decision.
          command.reject(err as Error);
        }
      }
    } finally {
      if (corked) stream!.uncork();
    }
  }
}

const batchers = new WeakMap<Redis, Batcher>();

function batcherOf(redis: Redis): Batcher {
  let b = batchers.get(redis);
  if (!b) {
    b = new Batcher(redis);
    batchers.set(redis, b);
  }
  return b;
}
