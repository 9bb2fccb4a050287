import type { Logger } from 'pino';
import type { AlertService } from './alerts/service.js';
import type { Config } from './config.js';
import type { Pool } from './db/pool.js';
import type { RedisHandle } from './redis/client.js';
import type { Authenticator } from './tokens/authenticator.js';
import type { CredentialService } from './tokens/service.js';

/** A dependency /readyz reports on: resolves to true when ready, or a reason why not. */
export type ReadinessCheck = () => Promise<true | string>;

/**
 * What the plugins of one control-plane instance share. Built once in app.ts; each domain adds its
 * service here when it is wired, and registers what it must do on shutdown in `closers`.
 */
export interface AppContext {
  config: Config;
  log: Logger;
  pool: Pool;
  redis: RedisHandle;
  auth: Authenticator;
  credentials: CredentialService;
  /** Raise (fire and forget: never rejects), list, acknowledge and subscribe to alerts. */
  alerts: AlertService;
  readiness: Map<string, ReadinessCheck>;
  closers: Array<() => Promise<void>>;
}

declare module 'fastify' {
  interface FastifyInstance {
    ctx: AppContext;
  }
}
