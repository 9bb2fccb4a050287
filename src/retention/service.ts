import type { Logger } from 'pino';
import { alertStore } from '../alerts/store.js';
import { approvalStore } from '../approvals/store.js';
import type { AdminAction } from '../audit/rows.js';
import type { Pool, PoolClient } from '../db/pool.js';
import { sessionStore } from '../sessions/store.js';
import { retentionStore } from './store.js';

// Retention of the operational records: alerts, settled approval requests, resumed halts and closed
// sessions. They are working state and operator lists, not the record of what happened (the audit trail
// is), so they are removed after RECORDS_RETENTION_DAYS instead of growing without bound. What each table
// keeps is decided by its store (alertStore.deleteRaisedBefore, approvalStore.deleteSettledBefore,
// sessionStore.deleteResumedHaltsBefore, sessionStore.deleteClosedBefore); nothing in force is ever
// removed, so a run never lifts a halt or a kill, frees a request or changes a decision.

/** Rows per DELETE: each batch is its own short transaction, so a first run on a big table holds no long lock. */
export const RETENTION_BATCH = 10_000;
const DAY_MS = 86_400_000;

export interface RecordsRetentionResult {
  cutoff: string;
  retention_days: number;
  alerts_removed: number;
  approvals_removed: number;
  halts_removed: number;
  sessions_removed: number;
}

export interface RecordsRetentionDeps {
  pool: Pool;
  log: Pick<Logger, 'info' | 'warn'>;
  /** ctx.audit.recordAdmin: the run is on the audit trail when it removed something. */
  recordAdmin: (action: AdminAction) => Promise<void>;
  /** RECORDS_RETENTION_DAYS; 0 keeps everything. */
  retentionDays: number;
  batchSize?: number;
  /** Checked between batches: true ends the run after the current one (shutdown). */
  stopping?: () => boolean;
}

type Remove = (db: PoolClient, cutoff: Date, limit: number) => Promise<number>;

// Halts before sessions: a session a halt row names is kept, so its resumed halts must go first.
const TABLES: ReadonlyArray<readonly ['alerts_removed' | 'approvals_removed' | 'halts_removed' | 'sessions_removed', Remove]> = [
  ['alerts_removed', (db, cutoff, limit) => alertStore.deleteRaisedBefore(db, cutoff, limit)],
  ['approvals_removed', (db, cutoff, limit) => approvalStore.deleteSettledBefore(db, cutoff, limit)],
  ['halts_removed', (db, cutoff, limit) => sessionStore.deleteResumedHaltsBefore(db, cutoff, limit)],
  ['sessions_removed', (db, cutoff, limit) => sessionStore.deleteClosedBefore(db, cutoff, limit)],
];

/**
 * One retention run: removes what is older than the cutoff in batches, logs and audits what it removed
 * (also when it failed part-way), and rethrows a failure for the caller to log (the next hour retries).
 * Undefined when retention is off (0 days) or another replica is running it.
 */
export async function applyRecordsRetention(deps: RecordsRetentionDeps, now: Date = new Date(), actor = 'retention'): Promise<RecordsRetentionResult | undefined> {
  if (deps.retentionDays <= 0) return undefined;
  const batch = deps.batchSize ?? RETENTION_BATCH;
  const cutoff = new Date(now.getTime() - deps.retentionDays * DAY_MS);
  const result: RecordsRetentionResult = { cutoff: cutoff.toISOString(), retention_days: deps.retentionDays, alerts_removed: 0, approvals_removed: 0, halts_removed: 0, sessions_removed: 0 };
  const client = await deps.pool.connect();
  let locked = false;
  let failure: Error | undefined;
  try {
    locked = await retentionStore.tryLock(client);
    if (locked) {
      for (const [counter, remove] of TABLES) {
        for (;;) {
          if (deps.stopping?.()) break;
          const n = await remove(client, cutoff, batch);
          result[counter] += n;
          if (n < batch) break;
        }
      }
      await retentionStore.unlock(client);
    }
  } catch (err) {
    failure = err as Error;
  } finally {
    // A connection that failed is discarded, which also releases the lock if unlock did not run.
    client.release(failure);
  }
  if (!locked && !failure) return undefined;
  const removed = result.alerts_removed + result.approvals_removed + result.halts_removed + result.sessions_removed;
  if (removed > 0) {
    deps.log.info({ ...result }, 'records retention removed old alerts, approvals, halts and sessions');
    const details = failure ? { ...result, error: failure.message } : { ...result };
    await deps.recordAdmin({ actor, action: 'records.retention', target: 'alerts,approvals,halts,sessions', details }).catch(() => {});
  }
  if (failure) throw failure;
  return result;
}
