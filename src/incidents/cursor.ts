import { invalid } from '../errors.js';
import { isUuid } from '../ids.js';
import type { TimelineEvent, TimelineType } from './service.js';

// The timeline's one total order, and the cursor that continues a truncated answer where it stopped.
//
// Every event has a position (at, rank, source, id, sub), compared in that order:
// - at: its time in whole milliseconds (what `at` shows; Postgres keeps microseconds, truncated here and in
//   the SQL alike, so both sides agree);
// - rank: equal times keep cause before effect (a kill, then operator actions, then alerts, then decisions);
// - source: an audit row of a flag change and a FLAG_DISABLED alert share a rank: the row first;
// - id: the audit row, alert or kill id (UUIDs: Postgres orders uuid as JavaScript orders lowercase hex);
// - sub: a kill's created / lifted / expired events share its id and may share a millisecond.
// No two events share a position, so "after this position" continues a timeline with nothing repeated and
// nothing left out, however many events share one millisecond (`from=<last at>` repeats that millisecond,
// and never gets past it when it holds more than `limit` events).

export type TimelineSource = TimelineEvent['source'];
export type TimelineDecisions = 'all' | 'denials' | 'none';

export const RANK: Record<TimelineType, number> = {
  kill: 0,
  kill_lifted: 0,
  kill_expired: 0,
  flag_change: 1,
  revocation: 1,
  rotation: 1,
  resume: 1,
  policy_change: 1,
  admin: 1,
  alert: 2,
  denial: 3,
  decision: 3,
};
// Kill events have the lowest rank and source: the first of their millisecond (src/incidents/service.ts, killsAfter).
export const SOURCE_ORDER: Record<TimelineSource, number> = { kill: 0, audit: 1, alert: 2 };
/** A kill's events, in the order they happen; `sub` of the position. */
export const KILL_EVENTS = ['kill', 'kill_lifted', 'kill_expired'] as const;

export interface Position {
  /** Whole milliseconds. */
  at: Date;
  rank: number;
  source: number;
  id: string;
  sub: number;
}

export function positionOf(e: TimelineEvent): Position {
  const sub = (KILL_EVENTS as readonly string[]).indexOf(e.type);
  return { at: new Date(e.at), rank: RANK[e.type], source: SOURCE_ORDER[e.source], id: e.id, sub: Math.max(0, sub) };
}

export function comparePositions(a: Position, b: Position): number {
  return a.at.getTime() - b.at.getTime() || a.rank - b.rank || a.source - b.source || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) || a.sub - b.sub;
}

export const byPosition = (a: TimelineEvent, b: TimelineEvent): number => comparePositions(positionOf(a), positionOf(b));

/** What a cursor carries: the query it continues (so `?cursor=` alone is enough) and the last position listed. */
export interface TimelineCursor {
  from: Date;
  to: Date;
  target: string | null;
  decisions: TimelineDecisions;
  after: Position;
}

const TARGET = /^(server|token|project|session|environment):.+$/;
const DECISIONS: readonly string[] = ['all', 'denials', 'none'];
const RANKS = new Set(Object.values(RANK));
const SOURCES = new Set(Object.values(SOURCE_ORDER));
/** The cursor's JSON: version, from and to (epoch ms), target, decisions, and the position [at, rank, source, id, sub]. */
type Wire = [1, number, number, string | null, TimelineDecisions, [number, number, number, string, number]];

export function encodeCursor(c: TimelineCursor): string {
  const a = c.after;
  const wire: Wire = [1, c.from.getTime(), c.to.getTime(), c.target, c.decisions, [a.at.getTime(), a.rank, a.source, a.id, a.sub]];
  return Buffer.from(JSON.stringify(wire)).toString('base64url');
}

const isInt = (v: unknown, min: number, max: number): v is number => Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;
// 0 .. year 275760, what a Date holds.
const MAX_MS = 8.64e15;

/** The cursor of a `next`, checked field by field: anything else is a 400 naming `cursor`. */
export function decodeCursor(cursor: string): TimelineCursor {
  let wire: unknown;
  try {
    if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw new Error('not base64url');
    wire = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    wire = undefined;
  }
  const w = wire as Partial<Wire> | undefined;
  const a = Array.isArray(w) ? w[5] : undefined;
  const ok =
    Array.isArray(w) &&
    w.length === 6 &&
    w[0] === 1 &&
    isInt(w[1], 0, MAX_MS) &&
    isInt(w[2], 0, MAX_MS) &&
    w[1] < w[2] &&
    (w[3] === null || (typeof w[3] === 'string' && w[3].length <= 300 && TARGET.test(w[3]))) &&
    typeof w[4] === 'string' &&
    DECISIONS.includes(w[4]) &&
    Array.isArray(a) &&
    a.length === 5 &&
    isInt(a[0], 0, MAX_MS) &&
    RANKS.has(a[1]) &&
    SOURCES.has(a[2]) &&
    typeof a[3] === 'string' &&
    isUuid(a[3]) &&
    isInt(a[4], 0, KILL_EVENTS.length - 1) &&
    // Only a kill's events have a sub, and they all have the kill rank.
    (a[2] === SOURCE_ORDER.kill ? a[1] === RANK.kill : a[4] === 0);
  if (!ok) throw invalid('cursor', 'is not a cursor returned by this API (pass the `next` of the previous answer unchanged)');
  const [, from, to, target, decisions, [at, rank, source, id, sub]] = w as Wire;
  return { from: new Date(from), to: new Date(to), target, decisions, after: { at: new Date(at), rank, source, id: id.toLowerCase(), sub } };
}
