import { createHash } from 'node:crypto';
import { Command, type Redis } from 'ioredis';

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
 * Sends the commands of one connection in batches, as ioredis's auto-pipelining does: a batch leaves at
 * setImmediate (so every request read in this turn of the event loop joins it) in one socket write, and
 * while a batch waits for its replies the next one fills up. Under load that keeps Redis's wake-ups (and
 * ours) to one per round trip instead of one per decision; alone, a command waits only for setImmediate.
 */
class Batcher {
  private pending: Command[] = [];
  private scheduled = false;
  private inFlight = 0;

  constructor(private readonly redis: Redis) {}

  add(command: Command): void {
    this.pending.push(command);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight > 0 || this.pending.length === 0) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    const stream = this.redis.status === 'ready' ? this.redis.stream : undefined;
    const corked = stream?.writable === true;
    if (corked) stream!.cork();
    this.inFlight = batch.length;
    const settled = () => {
      if (--this.inFlight === 0) this.schedule();
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
