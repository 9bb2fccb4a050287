import type { FastifyBaseLogger } from 'fastify';
import type { Logger } from 'pino';

// Fastify gives every request a pino child logger carrying its request id. Building one serialises the
// bindings through the redaction rules (src/log.ts): ~5–9 µs and ~3 KB per request, measured on the
// decision path, where most requests never write a line (allowed decisions log at debug). This logger
// builds that child only when a line at an enabled level is written; the lines are the same.

type Method = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
type Args = Parameters<Logger['info']>;

class LazyRequestLogger {
  private real: Logger | undefined;

  constructor(
    private readonly parent: Logger,
    private readonly bindings: Record<string, unknown>,
    private readonly options: object,
  ) {}

  private get logger(): Logger {
    if (!this.real) this.real = this.parent.child(this.bindings, this.options);
    return this.real;
  }

  private write(level: Method, args: Args): void {
    if ((this.real ?? this.parent).isLevelEnabled(level)) (this.logger[level] as (...a: Args) => void)(...args);
  }

  get level(): string {
    return (this.real ?? this.parent).level;
  }
  set level(level: string) {
    this.logger.level = level;
  }
  isLevelEnabled(level: string): boolean {
    return (this.real ?? this.parent).isLevelEnabled(level);
  }
  fatal(...args: Args): void {
    this.write('fatal', args);
  }
  error(...args: Args): void {
    this.write('error', args);
  }
  warn(...args: Args): void {
    this.write('warn', args);
  }
  info(...args: Args): void {
    this.write('info', args);
  }
  debug(...args: Args): void {
    this.write('debug', args);
  }
  trace(...args: Args): void {
    this.write('trace', args);
  }
  silent(): void {}
  child(bindings: Record<string, unknown>, options?: object): Logger {
    return this.logger.child(bindings, options);
  }
}

/** Fastify's `childLoggerFactory`: a per-request logger that costs nothing until it writes. */
export function lazyChildLogger(logger: FastifyBaseLogger, bindings: Record<string, unknown>, options: object): FastifyBaseLogger {
  // A route with its own log level needs the real child (pino applies the level when building it).
  if ((options as { level?: string }).level) return logger.child(bindings, options as { level: string });
  return new LazyRequestLogger(logger as unknown as Logger, bindings, options) as unknown as FastifyBaseLogger;
}
