import type { LoggerOptions } from 'pino';

// Anything that can hold a credential is redacted by configuration, not by care at each call site.
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
