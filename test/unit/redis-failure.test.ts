import { describe, expect, it } from 'vitest';
import { redisFailure, redisFailureWords, UNSENT_MESSAGE } from '../../src/redis/failure.js';

describe('what a failed Redis command was, in words an agent may read', () => {
  it('timed out after it was written, never written (overloaded), unreachable, an error answer', () => {
    expect(redisFailure(new Error('Command timed out'))).toEqual({ kind: 'timeout' });
    expect(redisFailureWords({ kind: 'timeout' })).toBe('did not answer within REDIS_TIMEOUT_MS');
    // Shed before it was written: it never ran (no give-back needed), and the words say why.
    expect(redisFailure(new Error(UNSENT_MESSAGE))).toEqual({ kind: 'unsent' });
    expect(redisFailureWords({ kind: 'unsent' })).toBe('was not reached within REDIS_TIMEOUT_MS (this replica had more checks waiting for Redis than it answers in that time: overloaded)');
    expect(redisFailure(new Error("Stream isn't writeable and enableOfflineQueue options is false"))).toEqual({ kind: 'unreachable' });
    expect(redisFailure(Object.assign(new Error('OOM command not allowed when used memory > maxmemory'), { name: 'ReplyError' }))).toEqual({ kind: 'error', code: 'OOM' });
  });
});
