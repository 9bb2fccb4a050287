import { AppError } from '../errors.js';
import { defineJsonScript, type JsonScript } from '../limits/lua.js';
import type { RedisHandle } from '../redis/client.js';
import { redisFailure, redisFailureWords } from '../redis/failure.js';

// Tool reports per agent token per minute. A gateway reports on every tools/list, resources/list and
// prompts/list, so an agent listing in a loop made the control plane store and check a report each
// time (Postgres work, alert checks) with no bound. One counter in one script: one round trip, Redis
// time. Not rate-limiter-flexible: its command (an ioredis defineCommand called with an array) broke
// under the command connection's auto-pipelining when batched with other commands ("results[i] is not
// iterable", an uncaught exception, and the report refused as if Redis were down).

const WINDOW_MS = 60_000;

/** A fixed window from the token's first report: count it, and say how long the window has left. */
const COUNT_LUA = `
local req = cjson.decode(ARGV[1])
local n = redis.call('INCR', req.key)
local ttl = redis.call('PTTL', req.key)
if ttl < 0 then
  redis.call('PEXPIRE', req.key, req.window_ms)
  ttl = req.window_ms
end
return cjson.encode({ n = n, ttl = ttl })
`;

export class ToolReportLimit {
  private readonly count: JsonScript;

  constructor(
    private readonly redis: RedisHandle,
    /** The limit now (policy, else TOOL_REPORTS_MAX_PER_MINUTE); null or 0: none. */
    private readonly maxPerMinute: () => number | null,
  ) {
    this.count = defineJsonScript(redis.redis, 'ksToolReportCount', COUNT_LUA);
  }

  /**
   * Counts one report of the token, or throws: 429 TOO_MANY_TOOL_REPORTS over the limit, 503 when Redis
   * cannot count it. Fail closed: an uncounted report would make the limit nothing while Redis is down.
   */
  async consume(tokenId: string): Promise<void> {
    const max = this.maxPerMinute();
    if (!max) return;
    let answer: { n: number; ttl: number };
    try {
      answer = JSON.parse(await this.count({ key: this.redis.key('tool-reports', tokenId), window_ms: WINDOW_MS })) as { n: number; ttl: number };
    } catch (err) {
      // The driver's words name hosts and ports: the caller reads only the kind of failure.
      throw new AppError('SERVICE_UNAVAILABLE', `Redis ${redisFailureWords(redisFailure(err))}, so the tool report could not be counted against the token's limit and was refused (fail closed); try again shortly.`);
    }
    if (answer.n <= max) return;
    const retryAfterS = Math.max(1, Math.ceil(answer.ttl / 1000));
    throw new AppError(
      'TOO_MANY_TOOL_REPORTS',
      `This token made ${max} tool reports this minute (limit ${max}: its gateway reports once for each tools/list, resources/list and prompts/list); retry after ${retryAfterS} s.`,
      { limit: 'max_tool_reports_per_minute', max, retry_after_s: retryAfterS },
      { retryAfterS },
    );
  }
}
