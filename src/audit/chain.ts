import { hash } from 'node:crypto';
import type { Pool } from '../db/pool.js';
import { hashedContent } from './content.js';
import type { AuditRecord } from './record.js';
import { auditStore, type ChainRow } from './store.js';

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
}

export interface WitnessResult extends Witness {
  /**
   * ok: the row is there with that hash; mismatch: a row is there with another hash (rewritten);
   * missing: no such row, and no retention anchor explains its absence (rows removed from the chain's end,
   * or the chain is gone); retention: removed by retention, its position anchored with this hash.
   */
  result: 'ok' | 'mismatch' | 'missing' | 'retention';
  detail: string;
}

export interface VerifyReport {
  ok: boolean;
  chains: number;
  rows: number;
  /** The first broken row of every chain that has one. */
  broken: ChainBreak[];
  /** The last row of every chain: record these elsewhere to detect a truncated tail later. */
  heads: ChainHead[];
  /** The witnessed positions asked about (`audit verify --expect`), each checked. */
  witnesses: WitnessResult[];
}

/** Parses `<replica_id>:<seq>:<hash>` (the fields of an `audit chain head` log line). */
export function parseWitness(text: string): Witness | undefined {
  const m = /^([0-9a-f-]{36}):([1-9]\d{0,15}):([0-9a-f]{64})$/.exec(text.trim().toLowerCase());
  return m ? { replica_id: m[1]!, seq: Number(m[2]), hash: m[3]! } : undefined;
}

const PAGE = 5_000;

/**
 * Walks every chain in primary-key order (seq, then ts) and checks continuity, prev_hash links and each
 * row's hash. A chain whose first rows were removed by retention must start right after its anchor
 * (audit_anchors). Two rows with the same seq are a break (only INSERT is allowed on the table, so a
 * second row at a seq was inserted into the chain), and each chain must have been walked row for row: the
 * rows visited are checked against the chain's count, taken up to the last seq it had when verification
 * began (rows a live writer appends meanwhile come after it and are left for the next run).
 */
export async function verifyChain(pool: Pool, witnesses: readonly Witness[] = []): Promise<VerifyReport> {
  const chains = await auditStore.chainSummaries(pool);
  const anchors = await auditStore.anchors(pool);
  const report: VerifyReport = { ok: true, chains: chains.length, rows: 0, broken: [], heads: [], witnesses: [] };
  // Witnessed positions by "replica_id:seq": the walk below records the hash it finds at each.
  const wanted = new Map<string, string | null>();
  for (const w of witnesses) wanted.set(`${w.replica_id}:${w.seq}`, null);
  const anchoredSeqs = new Map<string, number[]>();
  for (const key of anchors.keys()) {
    const at = key.lastIndexOf(':');
    const replica = key.slice(0, at);
    anchoredSeqs.set(replica, [...(anchoredSeqs.get(replica) ?? []), Number(key.slice(at + 1))]);
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
    while (!broken) {
      const rows = await auditStore.chainPage(pool, chain.replica_id, last ?? null, chain.max_seq, PAGE);
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i]!;
        report.rows++;
        walked++;
        let reason: string | undefined;
        if (last && row.seq === last.seq) reason = twice(row.seq, last.id, row.id);
        else if (row.seq !== prevSeq + 1) reason = `rows with seq ${prevSeq + 1}..${row.seq - 1} are missing before this row`;
        else if (row.prev_hash !== expectedPrev) reason = "prev_hash does not match the previous row's hash";
        else if (rowHash(row.prev_hash, row) !== row.hash) reason = "hash does not match the row's content: the row was modified";
        // A row inserted at a taken seq may sort first (an earlier ts): name the duplicate, not just the bad link.
        const next = rows[i + 1];
        if (reason && next?.seq === row.seq) reason = twice(row.seq, row.id, next.id);
        if (reason) {
          broken = { replica_id: chain.replica_id, seq: row.seq, id: row.id, reason };
          break;
        }
        prevSeq = row.seq;
        expectedPrev = row.hash;
        last = row;
        if (wanted.size > 0) {
          const key = `${row.replica_id}:${row.seq}`;
          if (wanted.has(key)) wanted.set(key, row.hash);
        }
      }
      if (rows.length < PAGE) break;
    }
    if (!broken && walked !== chain.rows) {
      broken = {
        replica_id: chain.replica_id,
        seq: last?.seq ?? chain.min_seq,
        id: null,
        reason: `the chain has ${chain.rows} rows up to seq ${chain.max_seq} but ${walked} were verified: rows were skipped, or added or removed while verifying`,
      };
    }
    if (broken) {
      report.ok = false;
      report.broken.push(broken);
    }
    if (last) report.heads.push({ replica_id: last.replica_id, seq: last.seq, hash: last.hash, ts: last.ts.toISOString() });
  }
  for (const w of witnesses) {
    const key = `${w.replica_id}:${w.seq}`;
    // A position the walk did not reach (it stops at a chain's first break) is read directly.
    const found = wanted.get(key) ?? (await auditStore.hashAt(pool, w.replica_id, w.seq)) ?? null;
    const broke = report.broken.some((b) => b.replica_id === w.replica_id && b.seq <= w.seq);
    const result = checkWitness(w, found, broke, chains, anchors, anchoredSeqs.get(w.replica_id) ?? []);
    report.witnesses.push(result);
    if (result.result === 'mismatch' || result.result === 'missing') report.ok = false;
  }
  return report;
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
