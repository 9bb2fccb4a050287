import { invalid } from '../errors.js';
import { isUuid } from '../ids.js';

// The cursor of `GET /v1/audit?after=` (docs/adr/0034-audit-follow-cursor.md): which committed rows a
// follower has been given, as the transactions whose rows it has not. Every row carries the id of the
// transaction that inserted it (ingest_xid, migration 0022). A snapshot of Postgres sees exactly the rows
// of transactions below its xmax that were not in progress; what it cannot see is the rows of the
// transactions in progress (xip) and of those from xmax on. So "not yet given" is `xip ∪ [xmax, ∞)`,
// whatever order transactions commit in and whatever ts their rows carry. `partial`: one committed
// transaction whose rows were given up to an id (a page ended inside it); its other rows come first in
// the next answer.

export interface FollowCursor {
  xmax: bigint;
  /** Sorted, distinct, each below xmax. */
  xip: readonly bigint[];
  partial?: { xid: bigint; id: string } | undefined;
}

/**
 * At most this many in-progress transactions in a cursor: a snapshot lists at most one per connection and
 * prepared transaction (max_connections is 100 by default). With their distances (at most 10 digits each
 * for a transaction open for years) the cursor stays within the schema's 12,000 characters.
 */
export const MAX_CURSOR_XIP = 1000;
const MAX_XID = 2n ** 63n - 1n;

const TEXT = /^(\d{1,19})((?:\.\d{1,19})*)(?:~(\d{1,19})\.([0-9a-f-]{36}))?$/;

/**
 * `<xmax>[.<xmax − x> for each x of xip][~<partial xid>.<partial id>]`: in-progress transactions are
 * close below xmax, so their distances are short, and the cursor fits a URL with hundreds of them.
 */
export function encodeFollowCursor(c: FollowCursor): string {
  let out = c.xmax.toString();
  for (const x of c.xip) out += `.${(c.xmax - x).toString()}`;
  if (c.partial) out += `~${c.partial.xid.toString()}.${c.partial.id}`;
  return out;
}

/** A cursor this API returned; anything else is a 400 naming `after`. */
export function decodeFollowCursor(text: string): FollowCursor {
  const bad = () => invalid('after', 'is not a cursor returned by this API (the `follow` of an answer of GET /v1/audit)');
  const m = TEXT.exec(text);
  if (!m) throw bad();
  const xmax = BigInt(m[1]!);
  const distances = m[2] ? m[2].slice(1).split('.') : [];
  if (xmax > MAX_XID || distances.length > MAX_CURSOR_XIP) throw bad();
  const xip: bigint[] = [];
  for (const d of distances) {
    const x = xmax - BigInt(d);
    // Distinct and ascending (distances descending), every one below xmax and a valid id.
    if (x < 3n || x >= xmax || (xip.length > 0 && x <= xip[xip.length - 1]!)) throw bad();
    xip.push(x);
  }
  if (m[3] === undefined) return { xmax, xip };
  const partial = { xid: BigInt(m[3]), id: m[4]! };
  if (!isUuid(partial.id) || partial.xid >= xmax || xip.includes(partial.xid)) throw bad();
  return { xmax, xip, partial };
}

/** Whether a row of transaction `xid` is one the cursor has not given (apart from `partial`). */
function notGiven(c: FollowCursor, xid: bigint): boolean {
  return xid >= c.xmax || c.xip.includes(xid);
}

/** What a snapshot of Postgres says, read in the same transaction as the rows. */
export interface SnapshotBounds {
  xmax: bigint;
  xip: readonly bigint[];
}

/** Math.max takes no bigint. */
const later = (a: bigint, b: bigint): bigint => (a > b ? a : b);
const ascending = (xs: Iterable<bigint>): bigint[] => [...new Set(xs)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

/**
 * The cursor after an answer read under `now` (a REPEATABLE READ snapshot) that gave rows of `given`
 * order: the partial transaction's first, then by (xid, id). `last` is the last row given when the
 * answer was cut at its limit, undefined when it gave every row `now` sees.
 */
export function advanceFollowCursor(c: FollowCursor, now: SnapshotBounds, last?: { xid: bigint; id: string; partial: boolean }): FollowCursor {
  if (last === undefined) {
    // Everything `now` sees was given: left are the transactions still in progress that were not given
    // yet, and those from now's xmax on.
    return { xmax: later(now.xmax, c.xmax), xip: ascending([...c.xip.filter((x) => x >= now.xmax), ...now.xip.filter((x) => notGiven(c, x))]) };
  }
  // Cut inside the partial transaction: nothing else was given.
  if (last.partial) return { ...c, partial: { xid: last.xid, id: last.id } };
  // Cut inside transaction X: those below it that `now` sees were given whole; X is given up to `last`.
  const x = last.xid;
  return {
    xmax: later(x + 1n, c.xmax),
    xip: ascending([...c.xip.filter((t) => t > x), ...now.xip.filter((t) => t < x && notGiven(c, t))]),
    partial: { xid: x, id: last.id },
  };
}
