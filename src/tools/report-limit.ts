import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { AppError } from '../errors.js';
import type { RedisHandle } from '../redis/client.js';
import { redisFailure, redisFailureWords } from '../redis/failure.js';

// Tool reports per agent token per minute. A gateway reports on every tools/list, resources/list and
// prompts/list, so an agent listing in a loop made the control plane store and check a report each
// time (Postgres work, alert checks) with no bound. One counter, so rate-limiter-flexible's own script
// (one EVALSHA, one round trip) fits; the decision gate keeps its own script because it checks many
// counters atomically (docs/adr/0001-redis-gate-lua.md).

const WINDOW_S = 60;

export class ToolReportLimit {
  /** One limiter per limit in force: the policy can change the number while the process runs. */
  private readonly limiters = new Map<number, RateLimiterRedis>();

  constructor(
    private readonly redis: RedisHandle,
    /** The limit now (policy, else TOOL_REPORTS_MAX_PER_MINUTE); null or 0: none. */
    private readonly maxPerMinute: () => number | null,
  ) {}

  /**
   * Counts one report of the token, or throws: 429 TOO_MANY_TOOL_REPORTS over the limit, 503 when Redis
   * cannot count it. Fail closed: an uncounted report would make the limit nothing while Redis is down.
   */
  async consume(tokenId: string): Promise<void> {
    const max = this.maxPerMinute();
    if (!max) return;
    try {
      await this.limiter(max).consume(tokenId);
    } catch (err) {
      if (err instanceof RateLimiterRes) {
        const retryAfterS = Math.max(1, Math.ceil(err.msBeforeNext / 1000));
        throw new AppError(
          'TOO_MANY_TOOL_REPORTS',
          `This token made ${max} tool reports this minute (limit ${max}: every tools/list, resources/list and prompts/list of its gateway reports once); retry after ${retryAfterS} s.`,
          { limit: 'max_tool_reports_per_minute', max, retry_after_s: retryAfterS },
          { retryAfterS },
        );
      }
      // The driver's words name hosts and ports: the caller reads only the kind of failure.
      throw new AppError('SERVICE_UNAVAILABLE', `Redis ${redisFailureWords(redisFailure(err))}, so the tool report could not be counted against the token's limit and was refused (fail closed); try again shortly.`);
    }
  }

  private limiter(max: number): RateLimiterRedis {
    let l = this.limiters.get(max);
    if (!l) {
      // rejectIfRedisNotReady: while the connection is down, refuse at once rather than queue.
      l = new RateLimiterRedis({ storeClient: this.redis.redis, keyPrefix: this.redis.key('tool-reports'), points: max, duration: WINDOW_S, rejectIfRedisNotReady: true });
      this.limiters.set(max, l);
    }
    return l;
  }
}
