import type { PoolClient } from '../db/pool.js';

// The retention run's own SQL: a session-level advisory lock, so replicas that start the hourly job
// together run it once (the deletes themselves are in the stores of alerts, approvals and sessions).

/** Advisory lock space of the records retention (kills use 7007, halt copies 7008). */
const RETENTION_LOCK_SPACE = 7009;

export const retentionStore = {
  /** False when another connection (replica) holds it. Held until unlock or the connection ends. */
  async tryLock(client: PoolClient): Promise<boolean> {
    const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, 1) AS locked', [RETENTION_LOCK_SPACE]);
    return rows[0]?.locked === true;
  },

  async unlock(client: PoolClient): Promise<void> {
    await client.query('SELECT pg_advisory_unlock($1, 1)', [RETENTION_LOCK_SPACE]);
  },
};
