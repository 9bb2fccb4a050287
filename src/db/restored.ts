import { credentialStore } from '../tokens/store.js';
import type { Pool } from './pool.js';

// Whether this database is the one the installation last ran on, or a copy made from it: a pg_restore of
// a backup (docs/operations.md, section 9), CREATE DATABASE ... TEMPLATE, or a pg_upgrade before
// Postgres 15 (which gave databases new OIDs). A copy has its source's rows and a new OID, so each start
// records the OID it ran on (settings) and compares. What was done after the copy was taken is not in it
// (kills and halts made since, revocations since) and nothing else can tell: the start says so (ADR 0038).
// A physical restore (a snapshot, point-in-time recovery) keeps the OID and is not seen here.

const KEY = 'database_oid';

export interface RestoredDatabase {
  /** The OID the installation last ran on, and this database's. */
  previousOid: string;
  oid: string;
  /** The newest audit row the copy holds: about when it was taken (null: no row). */
  newestAuditRow: Date | null;
}

/**
 * Records this database's OID; when another one was recorded, the database is a copy: returns what the
 * start reports. Exactly one of several replicas starting together on the copy gets it (the compare and
 * set); the others, and every later start, get undefined. Run before this start writes audit rows.
 */
export async function claimRestoredDatabase(db: Pool): Promise<RestoredDatabase | undefined> {
  const { rows } = await db.query<{ oid: string }>('SELECT oid::text AS oid FROM pg_database WHERE datname = current_database()');
  const oid = rows[0]!.oid;
  // The first start stores its OID; a later one reads what was stored (settings are never deleted).
  const previousOid = await credentialStore.putSettingOnce(db, KEY, oid);
  if (previousOid === oid) return undefined;
  const claimed = await db.query('UPDATE settings SET value = $2, updated_at = now() WHERE key = $1 AND value = $3', [KEY, oid, previousOid]);
  if (claimed.rowCount !== 1) return undefined;
  const newest = await db.query<{ ts: Date | null }>('SELECT max(ts) AS ts FROM audit_events');
  return { previousOid, oid, newestAuditRow: newest.rows[0]?.ts ?? null };
}

/** The one line the log and the alert say. */
export function restoredDatabaseMessage(r: RestoredDatabase): string {
  const since = r.newestAuditRow ? `its newest audit row is from ${r.newestAuditRow.toISOString()}` : 'it holds no audit row';
  return (
    `This database is a copy of the one this installation last ran on (restored from a backup, or copied; ${since}): ` +
    'what was done after the copy was taken is not in it. Kills and halts made since are not in force, kills lifted and halts resumed since are in force again, and credentials revoked since work again. ' +
    'Find them (alerts sent to ALERT_WEBHOOK_URL, the logs, exports of the audit trail) and apply them again: docs/operations.md, section 9.'
  );
}
