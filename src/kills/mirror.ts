import { redactText } from '../audit/redact.js';
import { type Pool, type PoolClient, withTransaction } from '../db/pool.js';
import { isUuid } from '../ids.js';
import type { RedisHandle } from '../redis/client.js';
import { describeTarget } from './keys.js';
import { killStore } from './store.js';

// The Redis side of kills: one string key per target (`kill:<target_key>` under the prefix), holding the
// kill the gate names in its denial, with a TTL when every kill of that target expires. Each write happens
// inside a Postgres transaction holding the target's advisory lock, after reading what is in force there,
// so a lift racing a reload or the reconciler can never leave a lifted kill behind in Redis.

/** What the gate hands to src/limits/step.ts, which builds the agent's KILL_SWITCH message from it. */
export interface KillKeyValue {
  id: string;
  /** The target in words (describeTarget): "server filesystem", never the key. */
  target: string;
  reason: string;
  /** When the target's last kill ends (the key's TTL); null: until an operator lifts it. */
  expires_at: string | null;
}

/** Where the mirror says it removed a kill Postgres has no record of. */
type MirrorLog = { error(obj: object, msg: string): void };

export class KillMirror {
  constructor(
    private readonly pool: Pool,
    private readonly redis: RedisHandle,
    private readonly log?: MirrorLog,
  ) {}

  redisKey(targetKey: string): string {
    return this.redis.key('kill', targetKey);
  }

  /**
   * The set of every target with a kill key: the reconciler visits them too, so a key written by a
   * transaction whose COMMIT then failed (no row in Postgres) is removed instead of denying for ever.
   */
  private indexKey(): string {
    return this.redis.key('kills', 'targets');
  }

  /** Inside a transaction that holds the target's lock: makes the Redis key match Postgres. Throws if Redis fails. */
  async apply(c: PoolClient, targetKey: string): Promise<void> {
    const state = await killStore.targetState(c, targetKey);
    const key = this.redisKey(targetKey);
    if (!state) {
      const replies = await this.redis.redis.multi().get(key).del(key).srem(this.indexKey(), targetKey).exec();
      const held = replies?.[0]?.[1];
      if (typeof held === 'string') await this.reportUnknown(c, targetKey, held);
      return;
    }
    const k = state.kill;
    // Masked again for kills recorded before reasons were stored masked: agents read this text.
    // The kill that lasts longest (targetState's order), so its expiry is the key's.
    const value: KillKeyValue = { id: k.id, target: describeTarget(k), reason: redactText(k.reason), expires_at: state.ttlMs === null ? null : (k.expires_at?.toISOString() ?? null) };
    const tx = this.redis.redis.multi().sadd(this.indexKey(), targetKey);
    if (state.ttlMs === null) tx.set(key, JSON.stringify(value));
    else tx.set(key, JSON.stringify(value), 'PX', state.ttlMs);
    const replies = await tx.exec();
    const failed = replies?.find(([err]) => err);
    if (!replies || failed) throw failed?.[0] ?? new Error('the kill was not written to Redis');
  }

  /**
   * A kill Redis enforced that Postgres has no row of: written by a transaction whose COMMIT failed, or
   * made after the backup this database was restored from, with the old Redis keyspace kept
   * (docs/operations.md, section 9). Removed all the same (Postgres is the record), but never silently:
   * an operator who put it in place must be able to find it and create it again.
   */
  private async reportUnknown(c: PoolClient, targetKey: string, held: string): Promise<void> {
    let kill: Partial<KillKeyValue>;
    try {
      kill = JSON.parse(held) as Partial<KillKeyValue>;
    } catch {
      kill = {};
    }
    if (typeof kill.id === 'string' && isUuid(kill.id) && (await killStore.get(c, kill.id))) return; // lifted or expired: known
    this.log?.error(
      { kill: kill.id ?? null, target_key: targetKey, target: kill.target ?? null, reason: kill.reason ?? null },
      'kills: removed from Redis a kill this database has no record of (made after the backup it was restored from, or never committed): if it was meant to be in force, create it again (killswitch kill)',
    );
  }

  /** Re-applies one target from Postgres (own transaction and lock). */
  async sync(targetKey: string): Promise<void> {
    await withTransaction(this.pool, async (c) => {
      await killStore.lockTarget(c, targetKey);
      await this.apply(c, targetKey);
    });
  }

  /** Every kill in force back into Redis (the state-epoch loader and start-up). Returns the targets written. */
  async loadAll(): Promise<number> {
    const keys = await killStore.activeTargetKeys(this.pool);
    for (const k of keys) await this.sync(k);
    return keys.length;
  }

  /** Kills in force, plus targets whose kills ended recently (a key whose lift or expiry write failed is removed). */
  async reconcile(recentS: number): Promise<number> {
    const keys = new Set(await killStore.targetKeysToSync(this.pool, recentS));
    for (const k of await this.redis.redis.smembers(this.indexKey())) keys.add(k);
    for (const k of keys) await this.sync(k);
    return keys.size;
  }
}

/**
 * Registers the kills with the state epoch, so a Redis restart or flush reloads them before decisions are
 * allowed again. Called from app.ts before the sessions start their first reload.
 */
export function registerKillLoader(epoch: { registerLoader(name: string, load: () => Promise<void>): void }, pool: Pool, redis: RedisHandle): KillMirror {
  const mirror = new KillMirror(pool, redis);
  epoch.registerLoader('kills', async () => {
    await mirror.loadAll();
  });
  return mirror;
}
