import type { OperatorPrincipal } from '../tokens/authenticator.js';
import type { AdminAction } from './rows.js';

// The two ADMIN rows of GET /v1/audit/export (ADR 0035): `audit.exported`, written before the first byte
// (the export is refused when it cannot be), and `audit.export_ended`, written when the response closed,
// saying whether the whole file was sent and how many rows.

/** One export as its rows name it. */
export interface AuditExport {
  /** Shared by its two rows (both are written by the same request). */
  id: string;
  operator: OperatorPrincipal;
  format: 'csv' | 'jsonl';
  /** The filters as the operator sent them (query text), without `format`. */
  filters: Record<string, string>;
  ip: string;
}

/** How an export ended: the rows handed to the response and whether its last byte was written. */
export interface ExportEnd {
  /** The control plane wrote the whole response, final chunk included. */
  complete: boolean;
  /** Rows read from Postgres into the response: all of them when complete, else an upper bound of what the client got. */
  rows: number;
  /** Who ended an incomplete export: the client went away, or reading or writing failed (the response was cut). */
  endedBy?: 'client' | 'error' | undefined;
  durationMs: number;
}

const TARGET = 'audit_events';

/**
 * A key limited to exactly one project: the row is written under it, so that project's owner finds who
 * took its rows out (as for actions on operator keys; a key limited to several stays under none).
 */
const projectOf = (op: OperatorPrincipal): string | undefined => (op.projects?.length === 1 ? op.projects[0] : undefined);

/** `audit.exported`: who is taking which rows out, before the first of them is sent. */
export function exportStartedAction(e: AuditExport): AdminAction {
  return {
    actor: e.operator,
    action: 'audit.exported',
    target: TARGET,
    projectId: projectOf(e.operator),
    ip: e.ip,
    details: { export_id: e.id, format: e.format, filters: e.filters, projects: e.operator.projects ? [...e.operator.projects] : null },
  };
}

/**
 * `audit.export_ended`: `rows` only for an export sent whole; an incomplete one says `rows_at_most`, since
 * rows read ahead into buffers may never have reached the client, and never claims a count it did not send.
 */
export function exportEndedAction(e: AuditExport, end: ExportEnd): AdminAction {
  const outcome = end.complete ? { complete: true, rows: end.rows } : { complete: false, rows_at_most: end.rows, ended_by: end.endedBy ?? 'client' };
  return {
    actor: e.operator,
    action: 'audit.export_ended',
    target: TARGET,
    projectId: projectOf(e.operator),
    ip: e.ip,
    details: { export_id: e.id, format: e.format, ...outcome, duration_ms: end.durationMs },
  };
}
