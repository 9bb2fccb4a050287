import type { Logger } from 'pino';
import type { AlertService } from './alerts/service.js';
import type { ApprovalService } from './approvals/service.js';
import type { AuditService } from './audit/service.js';
import type { ClockOffset } from './clock/offset.js';
import type { Config } from './config.js';
import type { Pool } from './db/pool.js';
import type { DependencyFailureLog } from './decisions/dependency-failures.js';
import type { FlagService } from './flags/service.js';
import type { WebhookSecretHolder } from './flags/webhook-secret.js';
import type { RedisGate } from './limits/gate.js';
import type { PolicyReplicas } from './policy/replicas.js';
import type { PolicyStore } from './policy/store.js';
import type { RedisHandle } from './redis/client.js';
import type { SessionService } from './sessions/service.js';
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
  /** This replica's clock against Postgres's; `clock.now` is the time expiry is judged and audit rows are stamped by. */
  clock: ClockOffset;
  auth: Authenticator;
  credentials: CredentialService;
  /** Audit trail: recordIntent (durable), enqueue (denials, results), recordAdmin; read side and retention. */
  audit: AuditService;
  /** The policy file in force (hot-reloaded); call `policy.current()` per decision. */
  policy: PolicyStore;
  /** The policy hash each live replica publishes in Redis (heartbeat): whether replicas disagree, as last seen. */
  policyReplicas: PolicyReplicas;
  /** Raise (fire and forget: never rejects), list, acknowledge and subscribe to alerts. */
  alerts: AlertService;
  /** Unleash flags: `isEnabled` in memory per decision, webhook overrides, status for GET /v1/flags. */
  flags: FlagService;
  /** The secret POST /v1/flags/events accepts: UNLEASH_WEBHOOK_SECRET or the one stored in the database. */
  webhookSecret: WebhookSecretHolder;
  /** Sessions and halts: open, halt, resume, get/list; owns the Redis state epoch (reload after a Redis loss). */
  sessions: SessionService;
  /** The one Redis round trip of a decision (createGateStep wraps it); decisionMeta/recordOutcome for results. */
  gate: RedisGate;
  /** Human approval of single tool calls, and the queue listing changed tool definitions (added by decisionsPlugin). */
  approvals: ApprovalService;
  readiness: Map<string, ReadinessCheck>;
  closers: Array<() => Promise<void>>;
  /** Driver errors met by decisions (the decisions plugin's): GET /readyz warns of recent ones. */
  dependencyFailures?: DependencyFailureLog;
}

declare module 'fastify' {
  interface FastifyInstance {
    ctx: AppContext;
  }
}
