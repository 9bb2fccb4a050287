import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import { type Dispatcher, fetch } from 'undici';
import { type AlertSeverity, severityAtLeast } from './kinds.js';
import type { Alert } from './store.js';

// Outgoing alert webhook. Delivery happens off the caller's path: `deliver()` only queues. A small pool
// of workers sends with a timeout and retries with exponential backoff; every failure is logged and
// none is ever thrown back, because an alert must never slow or fail a decision.

export type WebhookFormat = 'generic' | 'slack';

export interface WebhookSettings {
  url: string;
  format: WebhookFormat;
  /** Total attempts per alert, including the first. */
  attempts: number;
  timeoutMs: number;
  /** Delay before the first retry; doubled for each further retry. */
  backoffMs: number;
  minSeverity: AlertSeverity;
  /** When set, generic bodies are signed (X-Killswitch-Signature). */
  secret: string | undefined;
  /** Base URL of the control plane, for links in the message; empty: no link. */
  publicUrl: string;
  /** Alerts waiting for a free worker (default 1,000); beyond it the least severe, oldest one is dropped. */
  maxQueued?: number;
  /** HTTPS_PROXY / HTTP_PROXY with NO_PROXY (src/http/outbound.ts); undefined: direct. */
  dispatcher?: Dispatcher | undefined;
}

export interface DeliveryResult {
  ok: boolean;
  attempts: number;
  status?: number;
  error?: string;
}

const CONCURRENCY = 4;
const MAX_QUEUED = 1_000;
const MAX_RETRY_AFTER_MS = 30_000;
/** A storm drops alerts by the thousand: one warning per this interval says how many, not one per alert. */
const DROP_WARNING_INTERVAL_MS = 10_000;
const RANK: Record<AlertSeverity, number> = { info: 1, warning: 2, critical: 3 };

function alertJson(alert: Alert): Record<string, unknown> {
  return {
    ...alert,
    created_at: alert.created_at.toISOString(),
    acknowledged_at: alert.acknowledged_at ? alert.acknowledged_at.toISOString() : null,
  };
}

/** The alert in the API (needs an operator key as Bearer: for automation, not for a browser). */
function alertLink(alert: Alert, publicUrl: string): string | undefined {
  return publicUrl ? `${publicUrl.replace(/\/+$/, '')}/v1/alerts/${alert.id}` : undefined;
}

/**
 * What a person on call opens: the admin UI's incident timeline of the alert's session (else token, else
 * server) from a minute before it, so the calls that led to it are in view; the alerts page when the
 * alert names none of them.
 */
export function alertUiLink(alert: Alert, publicUrl: string): string | undefined {
  if (!publicUrl) return undefined;
  const base = `${publicUrl.replace(/\/+$/, '')}/ui/`;
  const target = alert.session_id ? `session:${alert.session_id}` : alert.token_id ? `token:${alert.token_id}` : alert.server ? `server:${alert.server}` : null;
  if (!target) return `${base}#/alerts`;
  const q = new URLSearchParams({ from: new Date(alert.created_at.getTime() - 60_000).toISOString(), target });
  return `${base}#/timeline?${q.toString()}`;
}

export function genericBody(alert: Alert, publicUrl: string): Record<string, unknown> {
  const link = alertLink(alert, publicUrl);
  const uiLink = alertUiLink(alert, publicUrl);
  return { source: 'mcp-killswitch', event: 'alert.raised', alert: alertJson(alert), ...(link ? { link } : {}), ...(uiLink ? { ui_link: uiLink } : {}) };
}

const EMOJI: Record<AlertSeverity, string> = { critical: ':rotating_light:', warning: ':warning:', info: ':information_source:' };

// Slack mrkdwn treats these three as control characters.
const slackEscape = (s: string) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
const clip = (s: string, max: number) => (s.length <= max ? s : `${s.slice(0, max - 1)}…`);

/** Slack incoming-webhook body: `text` is the notification fallback, `blocks` the rendered message. */
export function slackBody(alert: Alert, publicUrl: string): { text: string; blocks: unknown[] } {
  // A person reads Slack: the link opens the admin UI (the API link would answer 401 in a browser).
  const link = alertUiLink(alert, publicUrl);
  const fields: string[] = [];
  const field = (label: string, value: string | null) => {
    if (value) fields.push(`*${label}*\n${clip(slackEscape(value), 1900)}`);
  };
  field('Server', alert.server);
  field('Token', alert.token_id);
  field('Session', alert.session_id);
  field('Project', alert.project_id);
  const numbers = Object.entries(alert.numbers)
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
  field('Numbers', numbers || null);
  const blocks: unknown[] = [
    { type: 'header', text: { type: 'plain_text', text: clip(`${alert.kind} (${alert.severity})`, 150) } },
    { type: 'section', text: { type: 'mrkdwn', text: clip(`${EMOJI[alert.severity]} ${slackEscape(alert.message)}`, 3000) } },
  ];
  if (fields.length) blocks.push({ type: 'section', fields: fields.map((text) => ({ type: 'mrkdwn', text })) });
  const context = `alert \`${alert.id}\` · ${alert.created_at.toISOString()}${link ? ` · <${slackEscape(link)}|open in the admin UI>` : ''}`;
  blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: context }] });
  return { text: clip(`${EMOJI[alert.severity]} [${alert.severity.toUpperCase()}] ${alert.kind}: ${slackEscape(alert.message)}`, 3000), blocks };
}

/** HMAC-SHA256 over `${timestamp}.${body}`, so a receiver can reject forged and replayed bodies. */
export function signBody(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

// 408 and 429 are the receiver saying "later"; other 4xx mean the body or URL is wrong and will stay wrong.
const retryable = (status: number) => status >= 500 || status === 408 || status === 429;

export class AlertWebhook {
  private readonly queue: Alert[] = [];
  private active = 0;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly closing = new AbortController();
  private readonly dropped: Record<AlertSeverity, number> = { info: 0, warning: 0, critical: 0 };
  private droppedSinceWarning = 0;
  private lastDropWarningAt = -Infinity;

  constructor(
    private readonly settings: WebhookSettings,
    private readonly log: Logger,
  ) {}

  /** Queues the alert for delivery and returns at once. Alerts below the minimum severity are skipped. */
  deliver(alert: Alert): void {
    if (!severityAtLeast(alert.severity, this.settings.minSeverity)) return;
    if (this.closing.signal.aborted) {
      this.log.warn({ alert_id: alert.id, kind: alert.kind }, 'alert webhook not sent: the control plane is shutting down');
      return;
    }
    if (this.queue.length >= (this.settings.maxQueued ?? MAX_QUEUED)) {
      // Full (a storm, or a slow receiver): make room by dropping the least severe alert, oldest first,
      // so repeated warnings cannot crowd out a SESSION_HALTED. An alert less severe than everything
      // queued is itself the one dropped. Order of delivery stays the order of arrival.
      let victim = -1;
      for (let i = 0; i < this.queue.length; i++) {
        if (victim < 0 || RANK[this.queue[i]!.severity] < RANK[this.queue[victim]!.severity]) victim = i;
      }
      if (victim < 0 || RANK[this.queue[victim]!.severity] > RANK[alert.severity]) {
        this.countDropped(alert);
        return;
      }
      this.countDropped(this.queue.splice(victim, 1)[0]!);
    }
    this.queue.push(alert);
    this.pump();
  }

  /** Alerts dropped from a full queue since start, by severity (killswitch_alert_webhook_dropped_total). */
  droppedCounts(): Record<AlertSeverity, number> {
    return { ...this.dropped };
  }

  private countDropped(alert: Alert): void {
    this.dropped[alert.severity]++;
    this.droppedSinceWarning++;
    const now = performance.now();
    if (now - this.lastDropWarningAt < DROP_WARNING_INTERVAL_MS) return;
    this.log.warn(
      { dropped: this.droppedSinceWarning, dropped_total: { ...this.dropped }, queued: this.queue.length, last_dropped: { alert_id: alert.id, kind: alert.kind, severity: alert.severity } },
      'alert webhook queue full: the least severe alerts were not sent to the webhook (still stored and streamed)',
    );
    this.lastDropWarningAt = now;
    this.droppedSinceWarning = 0;
  }

  private pump(): void {
    while (this.active < CONCURRENCY && this.queue.length > 0) {
      const alert = this.queue.shift()!;
      this.active++;
      const p = this.send(alert).finally(() => {
        this.active--;
        this.inflight.delete(p);
        this.pump();
      });
      this.inflight.add(p);
    }
  }

  /** One alert, with retries. Never throws. */
  async send(alert: Alert): Promise<DeliveryResult> {
    const { url, format, attempts, timeoutMs, backoffMs, secret, publicUrl } = this.settings;
    const body = JSON.stringify(format === 'slack' ? slackBody(alert, publicUrl) : genericBody(alert, publicUrl));
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'mcp-killswitch-alerts/0.1',
      // Receivers de-duplicate on this: a timed-out attempt may still have arrived.
      'x-killswitch-alert-id': alert.id,
    };
    let last: DeliveryResult = { ok: false, attempts: 0 };
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (this.closing.signal.aborted) break;
      let retryAfterMs = 0;
      try {
        if (secret && format === 'generic') {
          const ts = String(Math.floor(Date.now() / 1000));
          headers['x-killswitch-timestamp'] = ts;
          headers['x-killswitch-signature'] = signBody(secret, ts, body);
        }
        const res = await fetch(url, {
          method: 'POST',
          headers,
          body,
          // Following a 307/308 would re-POST the signed body wherever the receiver (or whoever answers
          // for it) points, internal addresses included: a redirect is a failed delivery instead.
          redirect: 'manual',
          signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), this.closing.signal]),
          ...(this.settings.dispatcher ? { dispatcher: this.settings.dispatcher } : {}),
        });
        const text = await res.text().catch(() => '');
        if (res.ok) {
          this.log.debug({ alert_id: alert.id, status: res.status, attempt }, 'alert webhook delivered');
          return { ok: true, attempts: attempt, status: res.status };
        }
        const redirected = res.status >= 300 && res.status < 400;
        last = { ok: false, attempts: attempt, status: res.status, error: redirected ? 'the receiver answered with a redirect, which is not followed: set ALERT_WEBHOOK_URL to the final URL' : clip(text, 200) };
        if (!retryable(res.status)) break;
        const ra = Number(res.headers.get('retry-after'));
        if (Number.isFinite(ra) && ra > 0) retryAfterMs = Math.min(ra * 1000, MAX_RETRY_AFTER_MS);
      } catch (err) {
        const e = err as Error;
        // fetch quotes the URL in some errors ("Failed to parse URL from <url>"); it is as secret as a key.
        last = { ok: false, attempts: attempt, error: e.name === 'TimeoutError' ? `timed out after ${timeoutMs} ms` : e.message.replaceAll(url, 'ALERT_WEBHOOK_URL (hidden)') };
      }
      if (attempt < attempts) {
        this.log.warn({ alert_id: alert.id, attempt, status: last.status, error: last.error }, 'alert webhook attempt failed; retrying');
        await this.sleep(Math.max(backoffMs * 2 ** (attempt - 1), retryAfterMs));
      }
    }
    this.log.error({ alert_id: alert.id, kind: alert.kind, attempts: last.attempts, status: last.status, error: last.error }, 'alert webhook delivery failed');
    return last;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.closing.signal;
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Lets deliveries in progress finish for up to `graceMs`, then abandons the rest (logged). */
  async stop(graceMs = 2_000): Promise<void> {
    const dropped = this.queue.splice(0);
    for (const alert of dropped) this.log.warn({ alert_id: alert.id, kind: alert.kind }, 'alert webhook not sent: the control plane is shutting down');
    if (this.inflight.size > 0) {
      await Promise.race([Promise.allSettled([...this.inflight]), new Promise((r) => setTimeout(r, graceMs).unref())]);
    }
    this.closing.abort();
    await Promise.allSettled([...this.inflight]);
    await this.settings.dispatcher?.close().catch(() => {});
  }
}
