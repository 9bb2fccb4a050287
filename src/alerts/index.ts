import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Pool } from '../db/pool.js';
import { outboundDispatcher } from '../http/outbound.js';
import type { RedisHandle } from '../redis/client.js';
import { AlertService } from './service.js';
import { AlertWebhook } from './webhook.js';

/** Builds and starts `ctx.alerts` (with the outgoing webhook when ALERT_WEBHOOK_URL is set). */
export async function createAlertService(config: Config, pool: Pool, redis: RedisHandle, log: Logger, now: () => number = Date.now): Promise<AlertService> {
  const webhook = config.alertWebhookUrl
    ? new AlertWebhook(
        {
          url: config.alertWebhookUrl,
          format: config.alertWebhookFormat,
          attempts: config.alertWebhookAttempts,
          timeoutMs: config.alertWebhookTimeoutMs,
          backoffMs: config.alertWebhookBackoffMs,
          minSeverity: config.alertWebhookMinSeverity,
          secret: config.alertWebhookSecret,
          publicUrl: config.publicUrl,
          dispatcher: outboundDispatcher(config),
        },
        log,
      )
    : null;
  const service = new AlertService(pool, redis, log, webhook, now);
  await service.start();
  return service;
}
