import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import { redactDetails, redactText, requireStorableText, storable } from '../audit/redact.js';
import type { AdminAction } from '../audit/rows.js';
import { type Pool, withTransaction } from '../db/pool.js';
import { AppError, invalid, notFound } from '../errors.js';
import { canSeeProject } from '../http/auth.js';
import { keepSubscribed, type RedisHandle } from '../redis/client.js';
import type { OperatorPrincipal } from '../tokens/authenticator.js';
import { operatorActor } from '../tokens/service.js';
import { ALERT_KINDS, type AlertKind, type AlertSeverity, isAlertKind } from './kinds.js';
import { type Alert, type AlertFilter, alertStore, type OpenMatch } from './store.js';
import type { AlertWebhook } from './webhook.js';

/** What a module passes to `ctx.alerts.raise()`. */
export interface RaiseAlert {
  kind: AlertKind;
  /** One line for the operator: what happened and what to do. */
  message: string;
  /** Default: the kind's severity in ALERT_KINDS. */
  severity?: AlertSeverity;
  token_id?: string | null;
  project_id?: string | null;
  session_id?: string | null;
  server?: string | null;
  /** The figures behind the alert, e.g. {used: 161, max: 200, percent: 81}. */
  numbers?: Record<string, number>;
  /** Small references for the UI and the timeline, e.g. {kill_id, trigger, decision_id, tool}. */
  details?: Record<string, unknown>;
}

/** `local`: raised on this replica (metrics count these, so a sum over replicas counts each alert once). */
export type AlertEvent = { type: 'raised'; alert: Alert; local?: boolean } | { type: 'acknowledged'; alert: Alert };
export type AlertListener = (event: AlertEvent) => void;

export interface AlertQuery {
  kind?: string[];
  severity?: AlertSeverity[];
  token?: string;
  session?: string;
  server?: string;
  project?: string;
  acknowledged?: boolean;
  from?: string | Date;
  to?: string | Date;
  before?: string;
  limit?: number;
}

export interface AlertPage {
  alerts: Alert[];
  /** Pass as `before` for the next (older) page; null on the last page. */
  next_before: string | null;
}

/** What POST /v1/alerts/ack matches; at least one field, or `all`. */
export interface AckFilter {
  kind?: string[];
  severity?: AlertSeverity[];
  /** Raised before this instant (exclusive). */
  before?: string | Date;
  project_id?: string;
  all?: boolean;
}

export interface AckMatchingResult {
  acknowledged: Alert[];
  /** Open alerts that still match: beyond the per-request cap, or (for a project-limited key) of no project. */
  remaining: number;
}

/** Most alerts one POST /v1/alerts/ack acknowledges (each is an audit row and a message to every replica). */
export const ACK_MATCHING_MAX = 1_000;

/**
 * Kinds that answer earlier alerts: raising one acknowledges, as the system, the open alerts of `answers`
 * with the same details[by] raised before it, and lists their ids in its details.resolves. The condition
 * they reported is over (a flag back on, a kill lifted or expired), so they should not wait for a human in
 * the inbox (docs/alerts.md, "Alerts that answer others"). KILL_SWITCH: the calls that flag or kill denied
 * (one open alert per flag or kill and project, src/decisions/plugin.ts), so the next off period raises a new one.
 */
const ANSWERS: Partial<Record<AlertKind, { answers: readonly AlertKind[]; by: string; resolution(a: Alert): { actor: string; note: string } }>> = {
  FLAG_ENABLED: { answers: ['FLAG_DISABLED', 'KILL_SWITCH'], by: 'flag', resolution: () => ({ actor: 'system:flag-webhook', note: 'flag turned back on' }) },
  KILL_LIFTED: {
    answers: ['KILL_CREATED', 'KILL_SWITCH'],
    by: 'kill_id',
    resolution: (a) => (a.details['expired'] === true ? { actor: 'system:kill-expiry', note: 'kill expired' } : { actor: 'system:kill-lift', note: 'kill lifted' }),
  },
};

/** What `resolve()` acknowledges: the open alerts of a condition that is over, and who and why. */
export interface ResolveAlerts {
  kind: AlertKind;
  token_id?: string;
  session_id?: string;
  /** details.<key> equals the value (as text), for each entry. */
  details?: Record<string, string>;
  /** details.<key> differs from the value, for each entry (a halt still in force keeps its alert open). */
  details_not?: Record<string, string>;
  /** Only alerts raised before this id (UUIDv7s are time-ordered: uuidv7() means "before now"). */
  before: string;
  /** `system:<what>`: the acknowledged_by of each alert; its audit row's actor (type system). */
  actor: string;
  note: string;
  /** Added to each acknowledgement's audit row: what ended the condition (an alert id, an operator's resume). */
  audit: Record<string, unknown>;
}

const MAX_MESSAGE = 2_000;
const MAX_DETAILS_BYTES = 8_192;
/** raiseOnce keys this replica remembers having raised, each for its window (the least recently used go first). */
const ONCE_CACHE_MAX = 10_000;

interface WireMessage {
  origin: string;
  type: AlertEvent['type'];
  alert: Record<string, unknown>;
}

function revive(a: Record<string, unknown>): Alert {
  return {
    ...(a as unknown as Alert),
    created_at: new Date(a['created_at'] as string),
    acknowledged_at: a['acknowledged_at'] ? new Date(a['acknowledged_at'] as string) : null,
  };
}

/** Project-limited operators see their projects' alerts and alerts that belong to no project. */
export function canSeeAlert(op: OperatorPrincipal, alert: Pick<Alert, 'project_id'>): boolean {
  return alert.project_id === null || canSeeProject(op, alert.project_id);
}

/**
 * Alerts: stored in Postgres, fanned out to every replica's live listeners through one Redis channel,
 * and sent to the optional outgoing webhook by the replica that raised them.
 *
 * `raise()` never rejects: callers on the decision path fire and forget (`void ctx.alerts.raise(...)`),
 * and a broken Postgres, Redis or webhook is logged, not thrown. When Postgres is down the alert still
 * reaches live listeners and the webhook, but is not stored (and so cannot be acknowledged).
 */
export class AlertService {
  /** Tells this replica's own messages apart: they were already delivered locally. */
  private readonly instanceId = randomUUID();
  private readonly listeners = new Set<AlertListener>();
  private readonly raisedHere = new LRUCache<string, true>({ max: ONCE_CACHE_MAX });
  private readonly channel: string;
  private readonly onMessage = (channel: string, message: string) => {
    if (channel === this.channel) this.receive(message);
  };
  private unsubscribe: (() => Promise<void>) | undefined;
  private recordAdmin: (a: AdminAction) => Promise<void> | void = () => {};
  /** Comment line sent on every open live stream (GET /v1/alerts/stream) so proxies keep it open; tests shorten it. */
  streamHeartbeatMs = 15_000;

  constructor(
    private readonly pool: Pool,
    private readonly redis: RedisHandle,
    private readonly log: Logger,
    private readonly webhook: AlertWebhook | null,
    /** The time alerts are stamped with (ClockOffset.now: Postgres's while this clock is off). */
    private readonly now: () => number = Date.now,
  ) {
    this.channel = redis.channel('alerts');
  }

  async start(): Promise<void> {
    this.redis.sub.on('message', this.onMessage);
    this.unsubscribe = await keepSubscribed(this.redis, this.channel, (err) =>
      this.log.warn({ err: err.message }, 'alerts: cannot subscribe to the Redis channel yet; other replicas’ alerts reach this one once Redis is back'),
    );
  }

  async stop(): Promise<void> {
    this.redis.sub.off('message', this.onMessage);
    await this.unsubscribe?.();
    this.listeners.clear();
    await this.webhook?.stop();
  }

  /** Where acknowledgements the system makes (see ANSWERS) are audited; operators' are audited by the routes. */
  setAdminRecorder(record: (a: AdminAction) => Promise<void> | void): void {
    this.recordAdmin = record;
  }

  /** Stores, broadcasts and (if configured) sends an alert. Never rejects; see the class comment. */
  async raise(input: RaiseAlert): Promise<Alert> {
    const alert = this.build(input);
    try {
      await this.acknowledgeAnswered(alert);
      return await this.deliver(alert);
    } catch (err) {
      // Only a bug can land here (deliver() catches its own I/O errors); still never fail the caller.
      this.log.error({ err, alert_id: alert.id, kind: alert.kind }, 'alerts: raise failed');
      return alert;
    }
  }

  /**
   * For a condition that keeps changing before anyone looked at it (a tool definition changed again while
   * its change waits for review, calls a flag keeps denying, a limit passed in window after window): rewrites
   * the newest open alert of `input.kind` (on `match.server`, of `match.project_id` and `match.token_id`, when given) whose `details[match.detail]` is `match.value` with `update(open)` (message, severity, numbers, details; it
   * keeps its id and time, and is neither streamed nor sent to the webhook again), or raises `input` when
   * none is open. Serialised per match across replicas (a Postgres advisory lock), so two reports do not
   * raise two alerts. Never rejects: when Postgres cannot answer, `input` is raised.
   */
  async raiseOrUpdate(input: RaiseAlert, match: OpenMatch, update: (open: Alert) => RaiseAlert): Promise<Alert> {
    const fresh = this.build(input);
    try {
      const outcome = await withTransaction(this.pool, async (db) => {
        await db.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`alert-open:${fresh.kind}:${match.server ?? ''}:${match.project_id ?? ''}:${match.token_id ?? ''}:${match.detail}:${match.value}`]);
        const open = await alertStore.openMatching(db, { kind: fresh.kind, ...match });
        if (!open) {
          await alertStore.insert(db, fresh);
          return { raised: fresh };
        }
        const next = this.build(update(open));
        return { updated: (await alertStore.rewrite(db, open.id, next)) ?? open };
      });
      if ('updated' in outcome) return outcome.updated;
      this.emit({ type: 'raised', alert: fresh, local: true });
      await this.publish('raised', fresh);
      this.webhook?.deliver(fresh);
      return fresh;
    } catch (err) {
      this.log.warn({ err: (err as Error).message, kind: fresh.kind }, 'alerts: could not look for the open alert to update; raising a new one');
      return this.raise(input);
    }
  }

  /**
   * Raises at most once per `key` per `seconds` across all replicas (Redis SET NX EX), for conditions
   * every replica notices, such as stale flags. Returns null when suppressed. If Redis cannot answer
   * the alert is raised anyway: a duplicate is better than a missed alert. Never rejects.
   */
  async raiseOnce(key: string, seconds: number, input: RaiseAlert): Promise<Alert | null> {
    return (await this.firstInWindow(key, seconds)) ? this.raise(input) : null;
  }

  /** raiseOnce's test alone: true for the first caller of `key` per `seconds` across replicas (or when Redis cannot answer). */
  async firstInWindow(key: string, seconds: number): Promise<boolean> {
    // This replica raised it within the window: no need to ask Redis again (callers on the decision
    // path, e.g. every call a kill switch denies, would otherwise pay a Redis trip each).
    if (this.raisedHere.has(key)) return false;
    const windowS = Math.max(1, Math.ceil(seconds));
    try {
      const won = await this.redis.redis.set(this.redis.key('alerts', 'once', key), '1', 'EX', windowS, 'NX');
      if (won === null) return false;
      this.raisedHere.set(key, true, { ttl: windowS * 1000 });
    } catch (err) {
      this.log.warn({ err: (err as Error).message, key }, 'alerts: Redis could not de-duplicate; raising anyway');
    }
    return true;
  }

  private build(input: RaiseAlert): Alert {
    const kind: string = input.kind;
    if (!isAlertKind(kind)) {
      // The type forbids this; a caller that casts still gets its alert stored rather than lost.
      this.log.error({ kind }, 'alerts: unknown alert kind (add it to src/alerts/kinds.ts)');
    }
    // Messages and details quote what agents chose (resource names, paths, reported errors): masked like
    // the audit trail, and made storable, since Postgres refuses NUL and unpaired surrogates in text and
    // jsonb (such an alert was only logged, never stored) and the alert also leaves for the webhook.
    const numbers: Record<string, number> = {};
    for (const [k, v] of Object.entries(input.numbers ?? {})) if (Number.isFinite(v)) numbers[storable(k)] = v;
    let details = redactDetails(input.details ?? {});
    const detailsJson = JSON.stringify(details);
    if (detailsJson.length > MAX_DETAILS_BYTES) details = { truncated: true, bytes: detailsJson.length };
    const redacted = redactText(input.message);
    // Cut, the message may end on half a surrogate pair: storable() replaces it.
    const message = redacted.length > MAX_MESSAGE ? storable(`${redacted.slice(0, MAX_MESSAGE - 1)}…`) : redacted;
    const text = (v: string | null | undefined): string | null => (v === undefined || v === null ? null : storable(v));
    return {
      id: uuidv7(),
      kind: storable(kind),
      severity: input.severity ?? (isAlertKind(kind) ? ALERT_KINDS[kind].severity : 'warning'),
      token_id: text(input.token_id),
      project_id: text(input.project_id),
      session_id: text(input.session_id),
      // The name of an unknown server is the agent's to choose: masked like the message.
      server: input.server === undefined || input.server === null ? null : redactText(input.server),
      numbers,
      details,
      message,
      created_at: new Date(this.now()),
      acknowledged_at: null,
      acknowledged_by: null,
      ack_note: null,
    };
  }

  /**
   * Acknowledges, as the system, the open alerts of a condition that is over (a halt resumed, and through
   * ANSWERS a flag back on or a kill lifted), bounded like an operator's bulk acknowledgement: each gets the
   * audit row of an acknowledgement (actor type system, `r.audit` in its details) and goes to every
   * replica's live stream. Never rejects: a failure is logged and the alerts stay open for a human.
   * Returns the alerts acknowledged, oldest first.
   */
  async resolve(r: ResolveAlerts): Promise<Alert[]> {
    const filter: AlertFilter = { kinds: [r.kind], before: r.before, visible_projects: null, limit: ACK_MATCHING_MAX };
    if (r.token_id !== undefined) filter.token_id = r.token_id;
    if (r.session_id !== undefined) filter.session_id = r.session_id;
    if (r.details) filter.details = r.details;
    if (r.details_not) filter.details_not = r.details_not;
    let acked: Alert[];
    try {
      acked = await alertStore.acknowledgeMatching(this.pool, filter, r.actor, r.note);
    } catch (err) {
      this.log.warn({ err: (err as Error).message, kind: r.kind, actor: r.actor }, `alerts: could not acknowledge the open ${r.kind} alerts of a condition that is over; they stay open`);
      return [];
    }
    for (const a of acked) {
      // Audited like an operator's acknowledgement, the system as actor ("system:flag-webhook" -> actor_type system).
      void Promise.resolve(
        this.recordAdmin({
          actor: r.actor.replace(/^system:/, ''),
          action: 'alert.acknowledged',
          target: `alert:${a.id}`,
          projectId: a.project_id ?? undefined,
          details: { kind: a.kind, severity: a.severity, message: a.message.slice(0, 500), note: a.ack_note, token_id: a.token_id, session_id: a.session_id, ...r.audit },
        }),
      ).catch(() => {});
      this.emit({ type: 'acknowledged', alert: a });
      await this.publish('acknowledged', a);
    }
    return acked;
  }

  /** See ANSWERS. A failure is logged: the new alert is raised all the same, the old ones stay open. */
  private async acknowledgeAnswered(alert: Alert): Promise<void> {
    const rule = isAlertKind(alert.kind) ? ANSWERS[alert.kind] : undefined;
    const value = rule ? alert.details[rule.by] : undefined;
    if (!rule || typeof value !== 'string') return;
    const { actor, note } = rule.resolution(alert);
    const acked: Alert[] = [];
    const counts: string[] = [];
    for (const kind of rule.answers) {
      // Only alerts raised before this one (UUIDv7 ids are time-ordered): a flag turned off again since stays open.
      const some = await this.resolve({ kind, details: { [rule.by]: value }, before: alert.id, actor, note: `${note} (${alert.kind} ${alert.id})`, audit: { answered_by: alert.id } });
      if (some.length > 0) counts.push(`${some.length} open ${kind} alert${some.length === 1 ? '' : 's'}`);
      acked.push(...some);
    }
    if (acked.length === 0) return;
    alert.details = { ...alert.details, resolves: acked.map((a) => a.id) };
    const told = `${alert.message} Acknowledged ${counts.join(' and ')} of it.`;
    if (told.length <= MAX_MESSAGE) alert.message = told;
  }

  private async deliver(alert: Alert): Promise<Alert> {
    try {
      // Every column is set here, so the in-memory alert is what was stored (and keeps the caller's
      // key order in `numbers`, which jsonb would sort).
      await alertStore.insert(this.pool, alert);
    } catch (err) {
      this.log.error({ err: (err as Error).message, alert_id: alert.id, kind: alert.kind, alert_message: alert.message }, 'alerts: could not store the alert in Postgres; it is only broadcast');
    }
    this.emit({ type: 'raised', alert, local: true });
    await this.publish('raised', alert);
    this.webhook?.deliver(alert);
    return alert;
  }

  private async publish(type: AlertEvent['type'], alert: Alert): Promise<void> {
    const message: WireMessage = { origin: this.instanceId, type, alert: alert as unknown as Record<string, unknown> };
    try {
      await this.redis.redis.publish(this.channel, JSON.stringify(message));
    } catch (err) {
      this.log.warn({ err: (err as Error).message, alert_id: alert.id }, 'alerts: could not publish on Redis; other replicas see the alert through GET /v1/alerts only');
    }
  }

  private receive(raw: string): void {
    let msg: WireMessage;
    try {
      msg = JSON.parse(raw) as WireMessage;
    } catch {
      this.log.warn('alerts: ignored a malformed message on the alerts channel');
      return;
    }
    if (msg.origin === this.instanceId) return;
    if ((msg.type !== 'raised' && msg.type !== 'acknowledged') || typeof msg.alert !== 'object' || msg.alert === null) return;
    this.emit({ type: msg.type, alert: revive(msg.alert) });
  }

  private emit(event: AlertEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.error({ err }, 'alerts: a live listener threw');
      }
    }
  }

  /**
   * Live feed of alerts raised and acknowledged on any replica. Listeners run synchronously on the
   * publishing path, so they must be quick and must not throw. Returns the unsubscribe function.
   */
  subscribe(listener: AlertListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** Alerts the webhook queue dropped to make room for more severe ones, by severity (zeros without a webhook). */
  webhookDropped(): Record<AlertSeverity, number> {
    return this.webhook ? this.webhook.droppedCounts() : { info: 0, warning: 0, critical: 0 };
  }

  /** Newest first. With `op`, a project-limited operator sees only its projects and project-less alerts. */
  async list(query: AlertQuery, op?: OperatorPrincipal): Promise<AlertPage> {
    const limit = query.limit ?? 100;
    const filter: AlertFilter = { limit, visible_projects: op?.projects ? [...op.projects] : null };
    if (query.kind) filter.kinds = query.kind;
    if (query.severity) filter.severities = query.severity;
    if (query.token) filter.token_id = query.token;
    if (query.session) filter.session_id = query.session;
    if (query.server) filter.server = query.server;
    if (query.project) filter.project_id = query.project;
    if (query.acknowledged !== undefined) filter.acknowledged = query.acknowledged;
    if (query.from) filter.from = new Date(query.from);
    if (query.to) filter.to = new Date(query.to);
    if (query.before) filter.before = query.before;
    const alerts = await alertStore.list(this.pool, filter);
    return { alerts, next_before: alerts.length === limit ? alerts[alerts.length - 1]!.id : null };
  }

  /** Alerts newer than `afterId`, oldest first (SSE replay after a reconnect). */
  async listAfter(afterId: string, limit: number, op?: OperatorPrincipal): Promise<Alert[]> {
    return alertStore.list(this.pool, { after: afterId, limit, visible_projects: op?.projects ? [...op.projects] : null });
  }

  async get(id: string, op: OperatorPrincipal): Promise<Alert> {
    const alert = await alertStore.get(this.pool, id);
    if (!alert || !canSeeAlert(op, alert)) throw notFound('alert');
    return alert;
  }

  /**
   * Acknowledges once (404 unknown or invisible, 409 already acknowledged) and tells every replica.
   * An alert of no project concerns every project, and acknowledging it takes it out of every
   * operator's inbox: a key limited to projects may read it but not acknowledge it (403).
   */
  async ack(id: string, op: OperatorPrincipal, note?: string): Promise<Alert> {
    requireStorableText('note', note);
    const existing = await this.get(id, op);
    if (existing.project_id === null && op.projects !== null) {
      throw new AppError(
        'FORBIDDEN',
        `This operator key is limited to projects ${op.projects.join(', ')}; alert ${id} belongs to no project (it concerns every project), so acknowledging it needs a key without a project limit.`,
      );
    }
    // Operator free text, shown to every operator: a credential pasted into it is masked as in the audit row.
    const acked = await alertStore.acknowledge(this.pool, id, operatorActor(op), note === undefined ? null : redactText(note));
    if (!acked) {
      const now = (await alertStore.get(this.pool, id)) ?? existing;
      throw new AppError('CONFLICT', `Alert ${id} was already acknowledged by ${now.acknowledged_by ?? 'someone'}.`, {
        acknowledged_by: now.acknowledged_by,
        acknowledged_at: now.acknowledged_at?.toISOString() ?? null,
      });
    }
    this.emit({ type: 'acknowledged', alert: acked });
    await this.publish('acknowledged', acked);
    return acked;
  }

  /**
   * Acknowledges every open alert that matches (the oldest ACK_MATCHING_MAX of them) with one note.
   * A key limited to projects acknowledges only alerts of its projects: alerts of no project concern
   * every project (see ack()) and are left, counted in `remaining`.
   */
  async ackMatching(filter: AckFilter, op: OperatorPrincipal, note: string): Promise<AckMatchingResult> {
    requireStorableText('note', note);
    const filtered = Boolean(filter.kind?.length || filter.severity?.length || filter.before !== undefined || filter.project_id !== undefined);
    if (!filtered && filter.all !== true) {
      throw invalid('body', 'names no filter: give kind, severity, before or project_id, or "all": true to acknowledge every open alert you may acknowledge');
    }
    if (filter.project_id !== undefined && !canSeeProject(op, filter.project_id)) {
      throw new AppError('FORBIDDEN', `This operator key is limited to projects ${(op.projects ?? []).join(', ')}; it cannot acknowledge alerts of project ${filter.project_id}.`);
    }
    const f: Omit<AlertFilter, 'limit'> = { visible_projects: null };
    if (filter.kind?.length) f.kinds = filter.kind;
    if (filter.severity?.length) f.severities = filter.severity;
    if (filter.before !== undefined) f.to = new Date(filter.before);
    if (filter.project_id !== undefined) f.project_id = filter.project_id;
    const own: Omit<AlertFilter, 'limit'> = op.projects === null ? f : { ...f, own_projects: [...op.projects] };
    // Operator free text, shown to every operator: masked as the single acknowledgement's note is.
    const acknowledged = await alertStore.acknowledgeMatching(this.pool, { ...own, limit: ACK_MATCHING_MAX }, operatorActor(op), redactText(note));
    const remaining = await alertStore.count(this.pool, { ...f, visible_projects: op.projects ? [...op.projects] : null, acknowledged: false });
    for (const a of acknowledged) {
      this.emit({ type: 'acknowledged', alert: a });
      await this.publish('acknowledged', a);
    }
    return { acknowledged, remaining };
  }
}
