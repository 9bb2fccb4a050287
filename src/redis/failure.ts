/**
 * What a failed Redis command was, in words an agent and the audit trail may read: no answer in time, no
 * connection, or an error answer named by Redis's error code, the first word of its reply (`OOM`,
 * `WRONGTYPE`, `READONLY`, `MISCONF`, `BUSY`, ...). Never the rest of the reply: it can quote a script's
 * sha, a key or a limit; that goes to the log with the decision id.
 */
/** The rejection of a command that waited longer than REDIS_TIMEOUT_MS behind earlier ones and was never written (src/redis/raw-script.ts). */
export const UNSENT_MESSAGE = 'Command not sent: it waited longer than REDIS_TIMEOUT_MS behind earlier commands to this Redis';

export type RedisFailure = { kind: 'timeout' } | { kind: 'unsent' } | { kind: 'unreachable' } | { kind: 'error'; code: string };

export function redisFailure(err: unknown): RedisFailure {
  const e = err as { name?: unknown; message?: unknown } | null | undefined;
  const message = typeof e?.message === 'string' ? e.message : '';
  // ioredis: every answer Redis gives as an error is a ReplyError (from the redis-errors package).
  if (e?.name === 'ReplyError') {
    // An ACL refusal inside a script: Redis 7.0 and 7.1 answer it as a plain ERR ("ERR The user executing the
    // script can't run this command or subcommand" / "... can't access at least one of the keys ..."), 7.2 as
    // NOPERM. Named NOPERM either way, so a denial says permission, not an unknown error.
    if (/^ERR The user executing the script can't/.test(message)) return { kind: 'error', code: 'NOPERM' };
    return { kind: 'error', code: /^([A-Z][A-Z0-9_]{1,31})\b/.exec(message)?.[1] ?? 'ERR' };
  }
  // REDIS_TIMEOUT_MS (ioredis's commandTimeout): the command was sent and may still run.
  if (/timed out/i.test(message)) return { kind: 'timeout' };
  // Waited longer than REDIS_TIMEOUT_MS behind earlier commands and was never written (raw-script.ts): it never ran.
  if (message === UNSENT_MESSAGE) return { kind: 'unsent' };
  return { kind: 'unreachable' };
}

/** "did not answer within REDIS_TIMEOUT_MS", "was not reached within REDIS_TIMEOUT_MS (…overloaded)", "is unreachable", "answered with an error (OOM)". */
export function redisFailureWords(f: RedisFailure): string {
  if (f.kind === 'timeout') return 'did not answer within REDIS_TIMEOUT_MS';
  if (f.kind === 'unsent') return 'was not reached within REDIS_TIMEOUT_MS (this replica had more checks waiting for Redis than it answers in that time: overloaded)';
  if (f.kind === 'unreachable') return 'is unreachable';
  // NOPERM: REDIS_URL's user (an ACL user) lacks a command, key or channel; docs/operations.md says which it needs.
  if (f.code === 'NOPERM') return 'answered with an error (NOPERM: the REDIS_URL user lacks a permission the control plane needs)';
  return `answered with an error (${f.code})`;
}
