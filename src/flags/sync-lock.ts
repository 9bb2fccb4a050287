import { createPool, ensureDatabase, type PoolClient, withQueryTimeout } from '../db/pool.js';

// The start's flags sync runs under a session-level advisory lock in the control plane's database, which
// every replica shares: replicas starting together on a fresh Unleash would otherwise each find no webhook
// integration and create one (every flag event then delivered, audited and alerted once per integration),
// and race on creating the context fields. One replica syncs at a time; the next finds what it made.

/** Advisory lock space of the start's flags sync (kills use 7007, halt copies 7008, records retention 7009, the first owner key 7010). */
const FLAGS_SYNC_LOCK_SPACE = 7011;

/**
 * How long a start waits for another replica's sync before syncing without the lock. A sync is a few
 * seconds; each of its Unleash requests gives up after 10 s, so one that holds the lock longer is stuck.
 */
export const FLAGS_SYNC_LOCK_WAIT_MS = 120_000;

/**
 * Runs `sync` holding the lock. Postgres unreachable, or the lock not granted within `waitMs`: runs it
 * anyway (the sync tolerates a concurrent one, only less tidily), and `onUnlocked` hears why.
 */
export async function underFlagsSyncLock<T>(
  databaseUrl: string,
  sync: () => Promise<T>,
  opts: { waitMs?: number; onLocked?: (waitedMs: number) => void; onUnlocked?: (error: string) => void } = {},
): Promise<T> {
  const pool = createPool(databaseUrl, { max: 1, applicationName: 'killswitch-flags-sync' });
  const started = Date.now();
  // A connection of its own, held through the sync: the lock belongs to its session.
  let client: PoolClient | undefined;
  try {
    try {
      // The first start of an installation with UNLEASH_WEBHOOK_SECRET set has not created it yet (buildApp does, later).
      await ensureDatabase(databaseUrl);
      client = await pool.connect();
      await client.query(withQueryTimeout({ text: 'SELECT pg_advisory_lock($1, 1)', values: [FLAGS_SYNC_LOCK_SPACE] }, opts.waitMs ?? FLAGS_SYNC_LOCK_WAIT_MS));
      opts.onLocked?.(Date.now() - started);
    } catch (err) {
      // A timed-out wait leaves the connection in an unknown state: discarded, which also ends that wait.
      client?.release(true);
      client = undefined;
      opts.onUnlocked?.((err as Error).message || String(err));
    }
    return await sync();
  } finally {
    if (client) {
      await client.query('SELECT pg_advisory_unlock($1, 1)', [FLAGS_SYNC_LOCK_SPACE]).catch(() => {});
      client.release();
    }
    await pool.end().catch(() => {});
  }
}
