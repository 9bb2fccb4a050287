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

describe('an ACL refusal', () => {
  it('is NOPERM whether Redis answers it as NOPERM (a command) or, from inside a script, as Redis 7.0 words it (ERR The user executing the script ...)', () => {
    const reply = (message: string) => Object.assign(new Error(message), { name: 'ReplyError' });
    expect(redisFailure(reply("NOPERM this user has no permissions to run the 'evalsha' command"))).toEqual({ kind: 'error', code: 'NOPERM' });
    expect(redisFailure(reply("ERR The user executing the script can't run this command or subcommand script: 1d2e..., on @user_script:12."))).toEqual({ kind: 'error', code: 'NOPERM' });
    expect(redisFailure(reply("ERR The user executing the script can't access at least one of the keys mentioned in the command arguments"))).toEqual({ kind: 'error', code: 'NOPERM' });
    expect(redisFailure(reply('ERR wrong number of arguments'))).toEqual({ kind: 'error', code: 'ERR' });
    expect(redisFailureWords({ kind: 'error', code: 'NOPERM' })).toBe('answered with an error (NOPERM: the REDIS_URL user lacks a permission the control plane needs)');
  });
});
