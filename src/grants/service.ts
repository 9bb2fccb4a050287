import { v7 as uuidv7 } from 'uuid';
import { redactText } from '../audit/redact.js';
import { type Pool, type PoolClient, withTransaction } from '../db/pool.js';
import { invalid, notFound } from '../errors.js';
import { canSeeProject } from '../http/auth.js';
import { isUuid } from '../ids.js';
import { keepSubscribed, type RedisHandle } from '../redis/client.js';
import { sessionStore } from '../sessions/store.js';
import type { OperatorPrincipal } from '../tokens/authenticator.js';
import { operatorActor } from '../tokens/service.js';
import { credentialStore } from '../tokens/store.js';
import { type GrantKind, type GrantRow, grantStore } from './store.js';

/** How often every replica reloads the active grants (also after any change announced on Redis). */
export const GRANT_RELOAD_EVERY_MS = 5_000;
/** A replica that has not loaded the grants for this long trusts none of them (fail closed). */
export const GRANT_STALE_AFTER_MS = 3 * GRANT_RELOAD_EVERY_MS;

/**
 * Writes a grant's `grant.create` row (to Postgres or the audit spool); rejects when neither takes it. The
 * grant is not committed yet, so a grant whose row this refuses never allows a call.
 */
export type RecordGrant = (grant: GrantRow, projectId: string) => Promise<void>;

export interface NewGrant {
  kind?: GrantKind;
  token_id: string;
  session_id?: string;
  environment?: string;
  reason: string;
  expires_in: number;
}

/**
 * Human grants (seed 001: production only with documented, time-bounded human authorization; large
 * results only with permission). Decisions check grants in memory: every replica keeps the active ones
 * and reloads when any replica announces a change on Redis, so the check costs no round trip.
 */
export class GrantService {
  private byToken = new Map<string, GrantRow[]>();
  /** When the set was last loaded from Postgres (0: never). */
  private loadedAt = 0;
  /** Reloads started, and the latest whose outcome is in force. */
  private reloads = 0;
  private appliedReload = 0;
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly channel: string;
  private readonly onMessage = (channel: string) => {
    if (channel === this.channel) void this.reload('announced');
  };

  constructor(
    private readonly pool: Pool,
    private readonly redis: RedisHandle,
    private readonly maxSeconds: number,
    /** The time grants are judged and issued by (ClockOffset.now: Postgres's while this clock is off). */
    private readonly now: () => number = Date.now,
  ) {
    this.channel = redis.channel('grants:changed');
  }

  async start(): Promise<void> {
    this.redis.sub.on('message', this.onMessage);
    // Announcements reach this replica once Redis answers; the periodic reload covers the gap.
    this.unsubscribe = await keepSubscribed(this.redis, this.channel, () => {});
    await this.reload();
    this.timer = setInterval(() => void this.reload(), GRANT_RELOAD_EVERY_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.redis.sub.off('message', this.onMessage);
    await this.unsubscribe?.();
  }

  /**
   * Loads the active grants. When it fails, the set kept is never more than Postgres had: after a change
   * was announced (it may be a revocation) every grant is dropped at once, and a set older than
   * GRANT_STALE_AFTER_MS is not trusted by has().
   */
  async reload(why: 'timer' | 'announced' = 'timer'): Promise<void> {
    // The clock has() judges by, so a set's age and a grant's expiry are measured alike.
    const started = this.now();
    // A reload that began before a later one was applied (or failed after an announcement) is dropped when it
    // ends: its set may hold a grant revoked meanwhile, which would otherwise come back into force.
    const reload = ++this.reloads;
    try {
      const next = new Map<string, GrantRow[]>();
      for (const g of await grantStore.active(this.pool)) next.set(g.token_id, [...(next.get(g.token_id) ?? []), g]);
      if (reload < this.appliedReload) return;
      this.appliedReload = reload;
      this.byToken = next;
      this.loadedAt = started;
    } catch {
      if (why === 'announced' && reload >= this.appliedReload) {
        this.appliedReload = reload;
        this.byToken = new Map();
      }
    }
  }

  /**
   * Whether a grant covered the token (and session) at `at` (a call's allow), even one that has expired or
   * been revoked since: a call is judged by the permission it was allowed under. Asks Postgres.
   */
  coveredAt(kind: GrantKind, tokenId: string, sessionId: string, at: Date): Promise<boolean> {
    return grantStore.coveredAt(this.pool, kind, tokenId, sessionId, at);
  }

  /** True when an unexpired, unrevoked grant of `kind` covers this token (and session, if the grant names one). */
  has(kind: GrantKind, tokenId: string, sessionId: string | undefined, now = this.now()): boolean {
    if (now - this.loadedAt > GRANT_STALE_AFTER_MS) return false;
    return (this.byToken.get(tokenId) ?? []).some(
      (g) => g.kind === kind && g.revoked_at === null && g.expires_at.getTime() > now && (g.session_id === null || g.session_id === sessionId),
    );
  }

  /**
   * Creates a grant, audited before it takes effect: it is inserted in a transaction, `record` writes its
   * row, and only then is it committed and announced. When the row cannot be written the transaction rolls
   * back, so no replica ever saw the grant (a grant in force that the audit trail does not know is what a
   * security review must never find). Should the commit itself fail after the row, the trail names a
   * grant that never existed, which misleads nobody into thinking access was not given.
   */
  async create(op: OperatorPrincipal, body: NewGrant, record: RecordGrant): Promise<{ grant: GrantRow; projectId: string }> {
    const created = await withTransaction(this.pool, async (db) => {
      const made = await this.insert(op, body, db);
      await record(made.grant, made.projectId);
      return made;
    });
    await this.announce();
    return created;
  }

  /**
   * Checks and inserts a grant in `db`, a transaction the caller commits after writing the grant's audit
   * row (an approval does, with its own rows): until then no replica can see it. Call announce() after the
   * commit so every replica loads it at once instead of at its next reload.
   */
  async insert(op: OperatorPrincipal, body: NewGrant, db: PoolClient): Promise<{ grant: GrantRow; projectId: string }> {
    const token = await credentialStore.getAgentToken(db, body.token_id);
    if (!token || !canSeeProject(op, token.project_id)) throw notFound('token');
    if (token.revoked_at) throw invalid('token_id', 'the token is revoked');
    if (body.expires_in > this.maxSeconds) throw invalid('expires_in', `must be at most ${this.maxSeconds} seconds (GRANT_MAX_SECONDS)`);
    const kind = body.kind ?? 'production';
    if (kind !== 'production' && body.environment !== undefined) {
      throw invalid('environment', 'is for production grants only: a large_results grant lets results over the threshold through in any environment of the token; leave it out');
    }
    const sessionId = body.session_id === undefined ? null : await this.sessionOf(db, token.id, body.session_id);
    const grant = await grantStore.insert(db, {
      id: uuidv7(),
      kind,
      token_id: token.id,
      session_id: sessionId,
      environment: kind === 'production' ? (body.environment ?? 'production') : null,
      // Shown in GET /v1/grants and the GRANT_ISSUED alert: a credential pasted into it is masked as in the audit trail.
      reason: redactText(body.reason),
      created_by: operatorActor(op),
      expires_at: new Date(this.now() + body.expires_in * 1000),
    });
    return { grant, projectId: token.project_id };
  }

  /**
   * The session a grant is limited to, as stored (lower case): it must be a session of the grant's token,
   * or the grant could never match a call. One answer for "no such session" and "another token's", so
   * the refusal tells nothing about sessions of projects the operator cannot see. A closed session (it
   * idled out) never runs again, so a grant for it would only read as access given; a halted one may be
   * resumed, and a grant for it is what lets it go on once it is.
   */
  private async sessionOf(db: PoolClient, tokenId: string, sessionId: string): Promise<string> {
    const session = isUuid(sessionId) ? await sessionStore.getSession(db, sessionId.toLowerCase()) : undefined;
    if (!session || session.token_id !== tokenId) {
      throw invalid('session_id', `is not a session of token ${tokenId}, so a grant limited to it could never match a call; take the id from GET /v1/sessions?token=${tokenId}, or omit it to grant every session of the token`);
    }
    if (session.state === 'closed') {
      const since = session.closed_at ? ` since ${session.closed_at.toISOString()}` : '';
      throw invalid(
        'session_id',
        `session ${session.id} is closed${since}: a closed session never runs again, so a grant limited to it could never match a call; grant the session its gateway opens next (GET /v1/sessions?token=${tokenId}&state=active), or omit session_id to grant every session of the token`,
      );
    }
    return session.id;
  }

  /**
   * Revokes at once and announces it; the caller writes the `grant.revoke` row after, so an audit trail
   * that is down never keeps a grant in force. Revoking a revoked grant keeps its first revocation.
   */
  async revoke(op: OperatorPrincipal, id: string): Promise<GrantRow> {
    const existing = await grantStore.get(this.pool, id);
    const token = existing ? await credentialStore.getAgentToken(this.pool, existing.token_id) : undefined;
    if (!existing || !token || !canSeeProject(op, token.project_id)) throw notFound('grant');
    const row = (await grantStore.revoke(this.pool, id, operatorActor(op)))!;
    await this.announce();
    return row;
  }

  /** The project of the grant's token (its audit rows belong to it); undefined if the token is gone. */
  async projectOf(grant: GrantRow): Promise<string | undefined> {
    return (await credentialStore.getAgentToken(this.pool, grant.token_id).catch(() => undefined))?.project_id;
  }

  async list(op: OperatorPrincipal, f: { token?: string; active?: boolean }): Promise<GrantRow[]> {
    return grantStore.list(this.pool, op.projects === null ? f : { ...f, projects: op.projects });
  }

  /** Every replica (this one first) loads the grants now; never throws (the periodic reload covers a failure). */
  async announce(): Promise<void> {
    await this.reload('announced');
    await this.redis.redis.publish(this.channel, '1').catch(() => {});
  }
}
