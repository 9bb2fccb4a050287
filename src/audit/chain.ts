import { hash } from 'node:crypto';
import type { Pool } from '../db/pool.js';
import { hashedContent } from './content.js';
import type { AuditRecord } from './record.js';
import { type AnchorRow, auditStore, type ChainRow } from './store.js';

// The hash chain: hash = SHA-256(prev_hash ‖ canonical JSON of the row without prev_hash and hash).
// One chain per writer lifetime (replica_id), ordered by seq; see docs/adr/0002-audit-hash-chain.md.

/** prev_hash of the first row of every chain. */
export const GENESIS = '0'.repeat(64);

export function rowHash(prevHash: string, row: Omit<AuditRecord, 'hash'> | AuditRecord, content = hashedContent(row)): string {
  // One-shot hash of the concatenation (same digest as two updates; ~40% cheaper per row).
  return hash('sha256', prevHash + content, 'hex');
}

export interface ChainBreak {
  replica_id: string;
  seq: number;
  /** The first row that does not verify (null when the break is rows missing at the start). */
  id: string | null;
  reason: string;
}

export interface ChainHead {
  replica_id: string;
  seq: number;
  hash: string;
  ts: string;
}

/** A chain position recorded outside the database (the `audit chain head` log line), to check against. */
export interface Witness {
  replica_id: string;
  seq: number;
  hash: string;
  /** The witnessed row's ts, when the witness says it (the `ts` of an `audit chain head` JSON log line). */
  ts?: string;
}

export interface WitnessResult extends Witness {
  /**
   * ok: the row is there with that hash; mismatch: a row is there with another hash (rewritten);
   * missing: no such row, and no retention anchor explains its absence (rows removed from the chain's end,
   * or the chain is gone); retention: removed by retention, its position anchored with this hash;
   * suspicious: gone under a retention anchor that retention did not make (see VerifyReport.suspicious).
   */
  result: 'ok' | 'mismatch' | 'missing' | 'retention' | 'suspicious';
  detail: string;
}

export interface OpenChain {
  replica_id: string;
  last_seq: number;
  last_ts: string;
}

/** A retention anchor that retention cannot have made: rows were removed under cover of it. */
export interface SuspiciousAnchor {
  replica_id: string;
  seq: number;
  cut_before: string;
  reason: string;
}

/** A chain no witness names (`audit verify --witnesses`): never seen by a log shipped outside the database. */
export interface UnwitnessedChain {
  replica_id: string;
  first_seq: number;
  last_seq: number;
  rows: number;
  /** ts of its last row. */
  last_ts: string | null;
}

export interface VerifyOptions {
  /** AUDIT_RETENTION_DAYS in force: an anchor whose cut is younger cannot have been made by retention. */
  retentionDays: number;
  /** Witnessed positions to check (`--expect`, and the heads of a `--witnesses` file). */
  witnesses?: readonly Witness[];
  /** Every chain must be named by a witness (`--witnesses`): the others are reported UNWITNESSED. */
  requireWitness?: boolean;
  now?: Date;
}

export interface VerifyReport {
  ok: boolean;
  chains: number;
  rows: number;
  /** Rows that do not verify (a missing run of rows counts once). */
  broken_rows: number;
  /** Every break of every chain (up to MAX_BREAKS_LISTED a chain, then one line saying how many more). */
  broken: ChainBreak[];
  /**
   * Chains whose last row is not a CHAIN_END: still being written, or their process stopped without shutting
   * down (a crash, kill -9), or written by a version before 2026-12-06. Rows appended to such a chain's end
   * are found only against a witness of its head; not a failure by itself.
   */
  open: OpenChain[];
  /** The last row of every chain: record these elsewhere to detect a truncated tail later. */
  heads: ChainHead[];
  /** The witnessed positions asked about (`audit verify --expect`, `--witnesses`), each checked. */
  witnesses: WitnessResult[];
  /** Retention anchors retention cannot have made (too young a cut, no `audit.retention` row recording them). */
  suspicious: SuspiciousAnchor[];
  /** With `--witnesses`: the chains no witness names. */
  unwitnessed: UnwitnessedChain[];
}

/** Parses `<replica_id>:<seq>:<hash>` (the fields of an `audit chain head` log line). */
export function parseWitness(text: string): Witness | undefined {
  const m = /^([0-9a-f-]{36}):([1-9]\d{0,15}):([0-9a-f]{64})$/.exec(text.trim().toLowerCase());
  return m ? { replica_id: m[1]!, seq: Number(m[2]), hash: m[3]! } : undefined;
}

const WITNESS_IN_TEXT = /([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}):([1-9]\d{0,15}):([0-9a-f]{64})(?![0-9a-f])/i;

/**
 * The witnesses of a file of `audit chain head` log lines (JSON lines as the control plane logs them, also
 * behind a log shipper's prefix) or of bare `replica_id:seq:hash` lines; other lines are skipped. Only the
 * furthest position of each chain is kept: a chain that verifies and still has it has every earlier one.
 */
export function parseWitnessFile(text: string): Witness[] {
  const furthest = new Map<string, Witness[]>();
  for (const line of text.split(/\r?\n/)) {
    let w: Witness | undefined;
    const json = line.indexOf('{');
    if (json >= 0) {
      try {
        const o = JSON.parse(line.slice(json)) as { audit_head?: unknown; ts?: unknown };
        if (typeof o.audit_head === 'string') w = parseWitness(o.audit_head);
        if (w && typeof o.ts === 'string' && !Number.isNaN(Date.parse(o.ts))) w.ts = o.ts;
      } catch {
        // Not a JSON log line: looked at as text below.
      }
    }
    if (!w) {
      const m = WITNESS_IN_TEXT.exec(line);
      if (m) w = { replica_id: m[1]!.toLowerCase(), seq: Number(m[2]), hash: m[3]!.toLowerCase() };
    }
    if (!w) continue;
    const kept = furthest.get(w.replica_id);
    if (!kept || kept[0]!.seq < w.seq) furthest.set(w.replica_id, [w]);
    else if (kept[0]!.seq === w.seq && !kept.some((k) => k.hash === w.hash)) kept.push(w);
  }
  return [...furthest.values()].flat();
}

const PAGE = 5_000;
const MAX_BREAKS_LISTED = 100;
const DAY_MS = 86_400_000;

/**
 * Walks every chain in primary-key order (seq, then ts) and checks continuity, prev_hash links and each
 * row's hash. A chain whose first rows were removed by retention must start right after its anchor
 * (audit_anchors), and every anchor must be one retention can have made (checkAnchors). Two rows with the
 * same seq are a break (only INSERT is allowed on the table, so a second row at a seq was inserted into
 * the chain), and each chain must have been walked row for row: the rows visited are checked against the
 * chain's count, taken up to the last seq it had when verification began (rows a live writer appends
 * meanwhile come after it and are left for the next run).
 */
export async function verifyChain(pool: Pool, opts: VerifyOptions): Promise<VerifyReport> {
  const witnesses = opts.witnesses ?? [];
  const chains = await auditStore.chainSummaries(pool);
  const anchorRows = await auditStore.anchors(pool);
  const anchors = new Map(anchorRows.map((a) => [`${a.replica_id}:${a.seq}`, a.hash]));
  const report: VerifyReport = { ok: true, chains: chains.length, rows: 0, broken_rows: 0, broken: [], heads: [], open: [], witnesses: [], suspicious: [], unwitnessed: [] };
  // Witnessed positions by "replica_id:seq": the walk below records the hash it finds at each.
  const wanted = new Map<string, string | null>();
  for (const w of witnesses) wanted.set(`${w.replica_id}:${w.seq}`, null);
  const anchoredSeqs = new Map<string, number[]>();
  for (const a of anchorRows) {
    const seqs = anchoredSeqs.get(a.replica_id);
    if (seqs) seqs.push(a.seq);
    else anchoredSeqs.set(a.replica_id, [a.seq]);
  }
  for (const chain of chains) {
    let expectedPrev: string | undefined;
    if (chain.min_seq === 1) expectedPrev = GENESIS;
    else expectedPrev = anchors.get(`${chain.replica_id}:${chain.min_seq - 1}`);
    let prevSeq = chain.min_seq - 1;
    let broken: ChainBreak | undefined;
    let last: ChainRow | undefined;
    let walked = 0;
    if (expectedPrev === undefined) {
      broken = { replica_id: chain.replica_id, seq: chain.min_seq, id: null, reason: `chain starts at seq ${chain.min_seq} but no retention anchor covers seq 1..${chain.min_seq - 1}: rows were removed outside retention` };
    }
    // Retention anchors only the last row it removed, always before what remains of the chain.
    const inside = (anchoredSeqs.get(chain.replica_id) ?? []).filter((seq) => seq >= chain.min_seq);
    if (!broken && inside.length > 0) {
      broken = { replica_id: chain.replica_id, seq: Math.min(...inside), id: null, reason: `a retention anchor at seq ${Math.min(...inside)} lies inside the rows the chain still has (from seq ${chain.min_seq}): anchors were added outside retention` };
    }
    // Walked to the end even after a break, so the report says how far the damage goes: after each
    // break the walk takes the row as it stands (its seq and stored hash) and checks the rest against it.
    const breaks: ChainBreak[] = broken ? [broken] : [];
    const add = (b: ChainBreak) => {
      // A second row at a taken seq is named by both its rows: one break.
      const prior = breaks[breaks.length - 1];
      if (prior && prior.seq === b.seq && prior.reason === b.reason) return;
      breaks.push(b);
    };
    let ended: ChainRow | undefined;
    // After two rows at one seq, the next row may link to either: which one is genuine, its link says.
    let otherPrev: string | undefined;
    let prevTs = Number.NEGATIVE_INFINITY;
    while (!broken) {
      const rows = await auditStore.chainPage(pool, chain.replica_id, last ?? null, chain.max_seq, PAGE);
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i]!;
        report.rows++;
        walked++;
        let reason: string | undefined;
        if (last && row.seq === last.seq) reason = twice(row.seq, last.id, row.id);
        else if (row.seq !== prevSeq + 1) reason = `rows with seq ${prevSeq + 1}..${row.seq - 1} are missing before this row`;
        else if (ended) reason = `it comes after the chain's CHAIN_END (seq ${ended.seq}, ${ended.ts.toISOString()}): its writer had closed the chain, so the row was added to it later`;
        else if (row.ts.getTime() < prevTs) reason = `its ts (${row.ts.toISOString()}) is earlier than the previous row's (${new Date(prevTs).toISOString()}); a chain's writer never goes back in time, so the row was added to the chain later`;
        else if (row.prev_hash !== expectedPrev && row.prev_hash !== otherPrev) reason = "prev_hash does not match the previous row's hash";
        else if (rowHash(row.prev_hash, row) !== row.hash) reason = "hash does not match the row's content: the row was modified";
        // A row inserted at a taken seq may sort first (an earlier ts): name the duplicate, not just the bad link.
        const next = rows[i + 1];
        if (reason && next?.seq === row.seq) reason = twice(row.seq, row.id, next.id);
        if (reason) add({ replica_id: chain.replica_id, seq: row.seq, id: row.id, reason });
        if (row.kind === 'CHAIN_END') ended ??= row;
        const again = last !== undefined && row.seq === last.seq;
        otherPrev = again ? last!.hash : undefined;
        prevTs = again ? Math.min(prevTs, row.ts.getTime()) : row.ts.getTime();
        prevSeq = row.seq;
        expectedPrev = row.hash;
        last = row;
        if (wanted.size > 0 && !reason) {
          const key = `${row.replica_id}:${row.seq}`;
          if (wanted.has(key)) wanted.set(key, row.hash);
        }
      }
      if (rows.length < PAGE) break;
    }
    if (!broken && walked !== chain.rows) {
      add({
        replica_id: chain.replica_id,
        seq: last?.seq ?? chain.min_seq,
        id: null,
        reason: `the chain has ${chain.rows} rows up to seq ${chain.max_seq} but ${walked} were verified: rows were skipped, or added or removed while verifying`,
      });
    }
    if (breaks.length > 0) {
      report.ok = false;
      report.broken.push(...breaks.slice(0, MAX_BREAKS_LISTED));
      if (breaks.length > MAX_BREAKS_LISTED) {
        report.broken.push({ replica_id: chain.replica_id, seq: breaks[MAX_BREAKS_LISTED]!.seq, id: null, reason: `and ${breaks.length - MAX_BREAKS_LISTED} more breaks in this chain from here on` });
      }
      report.broken_rows += breaks.length;
    }
    if (last && !ended) report.open.push({ replica_id: chain.replica_id, last_seq: last.seq, last_ts: last.ts.toISOString() });
    if (last) report.heads.push({ replica_id: last.replica_id, seq: last.seq, hash: last.hash, ts: last.ts.toISOString() });
  }
  const now = (opts.now ?? new Date()).getTime();
  const retentionCut = now - opts.retentionDays * DAY_MS;
  const { runs, oldest } = await auditStore.retentionRecords(pool);
  // An audit.retention row in a broken chain vouches for nothing.
  const brokenChains = new Set(report.broken.map((b) => b.replica_id));
  report.suspicious = checkAnchors(anchorRows, runs.filter((r) => !brokenChains.has(r.replica_id)), oldest, opts.retentionDays, retentionCut);
  if (report.suspicious.length > 0) report.ok = false;
  const suspicious = new Set(report.suspicious.map((a) => `${a.replica_id}:${a.seq}`));
  for (const w of witnesses) {
    const key = `${w.replica_id}:${w.seq}`;
    // A position the walk did not reach (it stops at a chain's first break) is read directly.
    const found = wanted.get(key) ?? (await auditStore.hashAt(pool, w.replica_id, w.seq)) ?? null;
    const broke = report.broken.some((b) => b.replica_id === w.replica_id && b.seq <= w.seq);
    let result = checkWitness(w, found, broke, chains, anchors, anchoredSeqs.get(w.replica_id) ?? []);
    if (result.result === 'retention') result = retentionOfWitness(result, chains, anchorRows, suspicious, retentionCut);
    report.witnesses.push(result);
    if (result.result !== 'ok' && result.result !== 'retention') report.ok = false;
  }
  if (opts.requireWitness) {
    const named = new Set(witnesses.map((w) => w.replica_id));
    for (const chain of chains) {
      if (named.has(chain.replica_id)) continue;
      const head = report.heads.find((h) => h.replica_id === chain.replica_id);
      report.unwitnessed.push({ replica_id: chain.replica_id, first_seq: chain.min_seq, last_seq: chain.max_seq, rows: chain.rows, last_ts: head?.ts ?? null });
    }
    if (report.unwitnessed.length > 0) report.ok = false;
  }
  return report;
}

/**
 * Anchors retention cannot have made. Retention (audit_apply_retention) anchors each chain at the last row
 * it removes, at a cut at least AUDIT_RETENTION_DAYS before the run (the start of the month holding
 * now - AUDIT_RETENTION_DAYS: whole months only), and the run then writes an `audit.retention` row whose
 * details name that cut and how many chains it anchored. An anchor is suspicious when:
 * - its cut is younger than the retention in force (nothing newer is ever removed), or the row it anchors
 *   is not older than its cut;
 * - more anchors carry a run's cut than that run anchored;
 * - no `audit.retention` row has its cut although one would still be in the trail: a run that used the
 *   retention in force wrote it at its cut + AUDIT_RETENTION_DAYS or later, and while the trail still holds rows
 *   from that moment on, no later run has removed it. Older anchors' rows may have aged out: not checked.
 * Runs with a shorter `--days` than AUDIT_RETENTION_DAYS make anchors this reports: verify with
 * AUDIT_RETENTION_DAYS set to the shortest retention used (docs/audit.md).
 */
function checkAnchors(
  anchorRows: readonly AnchorRow[],
  runs: readonly { cutoff: string | null; chains_anchored: number }[],
  oldest: Date | null,
  retentionDays: number,
  retentionCut: number,
): SuspiciousAnchor[] {
  const anchoredByRun = new Map<number, number>();
  for (const r of runs) {
    const cut = r.cutoff === null ? Number.NaN : Date.parse(r.cutoff);
    if (!Number.isNaN(cut)) anchoredByRun.set(cut, (anchoredByRun.get(cut) ?? 0) + Number(r.chains_anchored));
  }
  const perCut = new Map<number, number>();
  for (const a of anchorRows) perCut.set(a.cut_before.getTime(), (perCut.get(a.cut_before.getTime()) ?? 0) + 1);
  const out: SuspiciousAnchor[] = [];
  for (const a of anchorRows) {
    const cut = a.cut_before.getTime();
    const cutText = a.cut_before.toISOString();
    const recorded = anchoredByRun.get(cut);
    let reason: string | undefined;
    if (cut > retentionCut) {
      reason = `its cut (${cutText}) is younger than the retention in force (AUDIT_RETENTION_DAYS=${retentionDays}: nothing after ${new Date(retentionCut).toISOString()} is removed): retention did not make it`;
    } else if (a.ts.getTime() >= cut) {
      reason = `the row it anchors (ts ${a.ts.toISOString()}) is not older than its cut (${cutText}): retention removes only rows before its cut`;
    } else if (recorded !== undefined && perCut.get(cut)! > recorded) {
      reason = `${perCut.get(cut)} anchors have the cut ${cutText} but the audit.retention run with that cut anchored ${recorded} chains: anchors were added outside retention`;
    } else if (recorded === undefined && oldest !== null && cut + retentionDays * DAY_MS >= oldest.getTime()) {
      reason = `no audit.retention row records a run with its cut (${cutText}), although that run's row would still be in the trail (it has rows from ${oldest.toISOString()} on): retention did not make it`;
    }
    if (reason) out.push({ replica_id: a.replica_id, seq: a.seq, cut_before: cutText, reason });
  }
  return out;
}

/** A position checkWitness put down to retention: not when the anchor that removed it is suspicious, or its row is too young. */
function retentionOfWitness(
  r: WitnessResult,
  chains: readonly { replica_id: string; min_seq: number }[],
  anchorRows: readonly AnchorRow[],
  suspicious: ReadonlySet<string>,
  retentionCut: number,
): WitnessResult {
  const chain = chains.find((c) => c.replica_id === r.replica_id);
  // The anchor that covers it: the chain's current one, or the first at or after it of a chain removed whole.
  const cover = anchorRows
    .filter((a) => a.replica_id === r.replica_id && (chain ? a.seq === chain.min_seq - 1 : a.seq >= r.seq))
    .sort((a, b) => a.seq - b.seq)[0];
  if (cover && suspicious.has(`${cover.replica_id}:${cover.seq}`)) {
    return { ...r, result: 'suspicious', detail: `gone under the retention anchor at seq ${cover.seq}, which retention did not make (see above): rows were removed outside retention` };
  }
  const ts = r.ts === undefined ? Number.NaN : Date.parse(r.ts);
  if (!Number.isNaN(ts) && (ts > retentionCut || (cover !== undefined && ts >= cover.cut_before.getTime()))) {
    return { ...r, result: 'suspicious', detail: `its row was written at ${r.ts}, after the cut retention can have made: rows were removed outside retention` };
  }
  return r;
}

function checkWitness(
  w: Witness,
  found: string | null,
  brokenBefore: boolean,
  chains: readonly { replica_id: string; min_seq: number; max_seq: number }[],
  anchors: ReadonlyMap<string, string>,
  anchoredSeqs: readonly number[],
): WitnessResult {
  const afterBreak = brokenBefore ? ' (the chain is broken at or before it: see above)' : '';
  if (found !== null) {
    return found === w.hash
      ? { ...w, result: 'ok', detail: `the row is there with this hash${afterBreak}` }
      : { ...w, result: 'mismatch', detail: `the row at this position has hash ${found}: the chain was rewritten from here or before` };
  }
  const anchored = anchors.get(`${w.replica_id}:${w.seq}`);
  const chain = chains.find((c) => c.replica_id === w.replica_id);
  // Retention removes a chain's oldest rows: a position is explained by it only before what remains of the
  // chain or, for a chain it removed whole, at or before its last anchor.
  const retained = chain ? w.seq < chain.min_seq : anchoredSeqs.some((seq) => seq >= w.seq);
  if (retained) {
    if (anchored !== undefined && anchored !== w.hash) return { ...w, result: 'mismatch', detail: `retention anchored this position with hash ${anchored}` };
    return { ...w, result: 'retention', detail: chain ? 'removed by retention (the chain starts after it); not checkable row by row' : 'removed by retention with the rest of its chain; not checkable row by row' };
  }
  if (!chain) return { ...w, result: 'missing', detail: 'no row of this chain is left, and no retention anchor explains it: the chain was removed' };
  if (w.seq > chain.max_seq) return { ...w, result: 'missing', detail: `the chain now ends at seq ${chain.max_seq}, before this witnessed position: rows were removed from its end` };
  return { ...w, result: 'missing', detail: `no row at this position${afterBreak}` };
}

function twice(seq: number, firstId: string, secondId: string): string {
  return `seq ${seq} appears twice (rows ${firstId} and ${secondId}): a row was inserted into the chain`;
}
