import type { LoggerOptions } from 'pino';

// pino writes these on every line itself. A field of a log object with one of these names is written a
// second time in the same JSON line, and parsers keep one of the two (often the last): `level: 'trace'`
// would file a warning as trace. Name such fields after what they are: unleash_pid, new_level.
// test/unit/log-fields.test.ts checks every log call in src/ against this list and REDACT_PATHS.
export const PINO_KEYS = ['level', 'time', 'pid', 'hostname', 'msg'] as const;

// Anything that can hold a credential is redacted by configuration, not by care at each call site. So
// these names are for secrets only: an id logged as `token` would be hidden too (log it as token_id).
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["x-agent-token"]',
  'req.headers.cookie',
  'headers.authorization',
  'headers["x-agent-token"]',
  'token',
  'raw_token',
  'secret',
  'password',
  '*.token',
  '*.raw_token',
  '*.secret',
  '*.password',
  'config.databaseUrl',
  'config.redisUrl',
  'config.tokenHashSecret',
];

export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
}

/**
 * Writes one `fatal` line (with `err` and `origin`) when the process dies of an exception nobody caught or
 * a promise rejection nobody handled. Node then prints the stack to stderr and exits 1 as before: an
 * `uncaughtExceptionMonitor` only watches. Without it the reason of a crash was only that multi-line,
 * plain-text stack, which a JSON log pipeline splits into lines it cannot parse, without pid or hostname.
 * Returns a function that removes the monitor.
 */
export function logCrashes(log: { fatal: (obj: object, msg: string) => void }): () => void {
  const monitor = (err: unknown, origin: string) => {
    log.fatal({ err, origin }, origin === 'unhandledRejection' ? 'crashed: a promise rejection nobody handled' : 'crashed: an exception nobody caught');
  };
  process.on('uncaughtExceptionMonitor', monitor);
  return () => process.off('uncaughtExceptionMonitor', monitor);
}
