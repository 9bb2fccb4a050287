import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { RedisHandle } from '../redis/client.js';
import type { PolicyStore } from './store.js';

// Whether the replicas of one installation decide with the same policy. Each replica reads its own
// POLICY_FILE, so a config map that reaches pods one by one, or one pod with a stale mount, leaves
// replicas that answer the same call differently (a server one of them does not know halts the token).
// Each replica publishes the hash of the policy in force, on a timer, to one Redis hash under the
// installation's prefix (a field per replica, its value stamped with Redis's clock so replicas' clocks
// do not matter); a field not refreshed for `liveMs` is a replica that is gone. Every replica reads the
// whole hash on the same tick and keeps what it saw in memory: /readyz and /metrics read that, so
// nothing here costs a decision or a probe a Redis trip.

/** One live replica as published in Redis. */
export interface PolicyReplica {
  replica_id: string;
  host: string;
  pid: number;
  /** sha256 of the policy file in force there. */
  hash: string;
  /** When that replica loaded it (its own clock). */
  loaded_at: Date;
  /** Its last heartbeat (Redis's clock). */
  seen_at: Date;
}

export interface PolicyReplicasView {
  /** Live replicas (heartbeat within the window), this one included, by hash then host. */
  replicas: PolicyReplica[];
  /** Each distinct hash with the number of live replicas running it, most replicas first. */
  policies: Array<{ hash: string; replicas: number }>;
  /** Redis's clock when read. */
  at: Date;
}

export interface PolicyDivergence {
  view: PolicyReplicasView;
  /** How long this replica has seen the live replicas disagree. */
  forMs: number;
}

export interface PolicyReplicasOptions {
  /** How often each replica publishes its hash and reads the others'. Default 10 s. */
  heartbeatMs?: number;
  /** A replica whose heartbeat is older than this is gone and no longer counts. Default 30 s. */
  liveMs?: number;
  /** The POLICY_DIVERGED alert waits this long into a divergence (a rollout reaching pods one by one is expected). Default 3 min. */
  alertAfterMs?: number;
}

export const POLICY_REPLICAS_DEFAULTS = { heartbeatMs: 10_000, liveMs: 30_000, alertAfterMs: 180_000 } as const;

/** The first 8 hex digits of a policy hash, as warnings and alerts show it. */
export const shortHash = (hash: string): string => hash.slice(0, 8);

/** The /readyz warning for a view whose live replicas disagree (undefined when they agree). */
export function divergenceWarning(view: PolicyReplicasView): string | undefined {
  if (view.policies.length < 2) return undefined;
  return `replicas run ${view.policies.length} different policies: ${view.policies.map((p) => `${shortHash(p.hash)} on ${p.replicas}`).join(', ')}`;
}

function parse(field: string, raw: string): PolicyReplica | undefined {
  try {
    const v = JSON.parse(raw) as Record<string, unknown>;
    if (typeof v['hash'] !== 'string' || typeof v['seen_at'] !== 'number' || typeof v['loaded_at'] !== 'number') return undefined;
    return {
      replica_id: field,
      host: typeof v['host'] === 'string' ? v['host'] : '?',
      pid: typeof v['pid'] === 'number' ? v['pid'] : 0,
      hash: v['hash'],
      loaded_at: new Date(v['loaded_at']),
      seen_at: new Date(v['seen_at']),
    };
  } catch {
    return undefined;
  }
}

export class PolicyReplicas {
  readonly replicaId = randomUUID();
  readonly heartbeatMs: number;
  readonly liveMs: number;
  readonly alertAfterMs: number;
  private readonly key: string;
  private readonly episodeKey: string;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private last: { view: PolicyReplicasView; localAt: number } | undefined;
  private divergedSince: number | undefined;
  private failing = false;
  private stopped = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly redis: RedisHandle,
    private readonly policy: PolicyStore,
    private readonly log: Logger,
    /** Called on the one replica that opens a divergence episode (after alertAfterMs): raise the alert there. */
    private readonly onDiverged: (d: PolicyDivergence) => void,
    opts: PolicyReplicasOptions = {},
  ) {
    this.heartbeatMs = opts.heartbeatMs ?? POLICY_REPLICAS_DEFAULTS.heartbeatMs;
    this.liveMs = opts.liveMs ?? POLICY_REPLICAS_DEFAULTS.liveMs;
    this.alertAfterMs = opts.alertAfterMs ?? POLICY_REPLICAS_DEFAULTS.alertAfterMs;
    this.key = redis.key('policy', 'replicas');
    this.episodeKey = redis.key('policy', 'diverged');
    // A reload is published at once: the others see the new hash without waiting for the next beat.
    this.unsubscribe = policy.onReload(() => void this.tick());
  }

  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.heartbeatMs);
    this.timer.unref();
  }

  /** Stops the heartbeat and removes this replica's entry: a replica shut down drops out at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe();
    if (this.timer) clearInterval(this.timer);
    await this.running;
    await this.redis.redis.hdel(this.key, this.replicaId).catch(() => {});
  }

  /**
   * What the last heartbeat saw; undefined when none succeeded within the live window (Redis unreachable:
   * what the other replicas run is unknown, and Redis's own readiness check already says so).
   */
  view(): PolicyReplicasView | undefined {
    if (!this.last || Date.now() - this.last.localAt > this.liveMs) return undefined;
    return this.last.view;
  }

  /** Publishes this replica's hash and reads every live replica's now (GET /v1/policy/replicas). Throws when Redis cannot be read. */
  async refresh(): Promise<PolicyReplicasView> {
    const [seconds, micros] = await this.redis.redis.time();
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const policy = this.policy.current();
    const entry = JSON.stringify({ hash: policy.hash, loaded_at: policy.loadedAt.getTime(), host: hostname(), pid: process.pid, seen_at: now });
    // The hash's TTL outlasts every live entry, so an installation with no replica left leaves no key.
    const results = await this.redis.redis
      .multi()
      .hset(this.key, this.replicaId, entry)
      .pexpire(this.key, this.liveMs * 2)
      .hgetall(this.key)
      .exec();
    const all = (results?.[2]?.[1] ?? {}) as Record<string, string>;
    const replicas: PolicyReplica[] = [];
    const gone: string[] = [];
    for (const [field, raw] of Object.entries(all)) {
      const r = parse(field, raw);
      if (r && r.seen_at.getTime() >= now - this.liveMs) replicas.push(r);
      else gone.push(field);
    }
    if (gone.length) await this.redis.redis.hdel(this.key, ...gone).catch(() => {});
    replicas.sort((a, b) => a.hash.localeCompare(b.hash) || a.host.localeCompare(b.host) || a.replica_id.localeCompare(b.replica_id));
    const counts = new Map<string, number>();
    for (const r of replicas) counts.set(r.hash, (counts.get(r.hash) ?? 0) + 1);
    const policies = [...counts].map(([hash, n]) => ({ hash, replicas: n })).sort((a, b) => b.replicas - a.replicas || a.hash.localeCompare(b.hash));
    const view = { replicas, policies, at: new Date(now) };
    this.last = { view, localAt: Date.now() };
    return view;
  }

  /** One heartbeat; never overlaps another, never throws. */
  tick(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) return this.running;
    this.running = this.beat().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async beat(): Promise<void> {
    let view: PolicyReplicasView;
    try {
      view = await this.refresh();
      if (this.failing) this.log.info('policy replicas: heartbeat works again');
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.log.warn({ err: (err as Error).message }, 'policy replicas: cannot publish or read the policy hashes in Redis; divergence between replicas is unknown until it can');
      this.failing = true;
      return;
    }
    if (view.policies.length < 2) {
      if (this.divergedSince !== undefined) this.log.info({ hash: this.policy.current().hash }, 'policy replicas: every live replica runs the same policy again');
      this.divergedSince = undefined;
      return;
    }
    const now = Date.now();
    if (this.divergedSince === undefined) {
      this.divergedSince = now;
      this.log.warn({ policies: view.policies, hash: this.policy.current().hash }, `policy replicas: ${divergenceWarning(view)}`);
    }
    const forMs = now - this.divergedSince;
    if (forMs < this.alertAfterMs) return;
    // One alert per episode in the installation: the first replica to set the key raises it; every
    // replica that still sees the divergence keeps the key alive, so it ends once they all agree again.
    const ttl = Math.max(this.liveMs, this.heartbeatMs * 3);
    try {
      const won = await this.redis.redis.set(this.episodeKey, JSON.stringify({ by: this.replicaId, at: view.at.getTime() }), 'PX', ttl, 'NX');
      if (won === null) await this.redis.redis.pexpire(this.episodeKey, ttl);
      else this.onDiverged({ view, forMs });
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'policy replicas: cannot record the divergence episode in Redis');
    }
  }
}
