import { type ChainHead, GENESIS, rowHash, type UnwitnessedChain, type Witness } from './chain.js';
import { CsvRecords } from './export-csv.js';
import { csvHeader, type ExportRow, type OtherReading, type RowReading, readCsvRecord, readJsonLine, type Unreadable } from './export-rows.js';
import type { AuditRecord } from './record.js';

// `killswitch audit verify --file`: an export of the audit trail (GET /v1/audit/export, JSON Lines or CSV,
// filtered or not) verified with no database: each row's hash against its content (chain.ts's rowHash, the
// writer's own), and prev_hash links between the rows of a chain whose seq follow each other in the file.
// A filtered export leaves gaps in its chains: normal, reported, not a failure (unless --complete).

export type ExportFormat = 'jsonl' | 'csv';

export interface FileBreak {
  /** The file line the row starts on. */
  line: number;
  /** Null for a line that is not an audit row. */
  id: string | null;
  replica_id: string | null;
  seq: number | null;
  reason: string;
}

/** Rows of a chain the file does not hold, between two rows it does. */
export interface FileGap {
  replica_id: string;
  from_seq: number;
  to_seq: number;
}

export interface FileWitnessResult extends Witness {
  /** ok: in the file with this hash; mismatch: in the file with another hash; absent: not in the file (not a failure). */
  result: 'ok' | 'mismatch' | 'absent';
  detail: string;
}

export interface ExportVerifyOptions {
  witnesses?: readonly Witness[];
  /** `--witnesses`: every chain in the file must be named by a witness. */
  requireWitness?: boolean;
  /** `--complete`: the export had no filter but from/to, so a gap inside a chain is rows removed from the file. */
  complete?: boolean;
}

export interface ExportVerifyReport {
  ok: boolean;
  format: ExportFormat | null;
  /** How the format was told: by the content, or by the file name's extension. */
  detected_by: 'content' | 'extension' | null;
  /** Audit rows read (broken ones included; lines that are not rows are not counted). */
  rows: number;
  chains: number;
  /** Rows whose hash is the hash of their content (prev_hash ‖ canonical JSON): verified one by one. */
  verified_rows: number;
  /** prev_hash links checked: a row and the row before it in its chain both in the file (or seq 1 and the genesis hash). */
  links: number;
  gaps: number;
  /** The first MAX_LISTED gaps. */
  gap_list: FileGap[];
  broken_rows: number;
  /** The first MAX_LISTED broken rows. */
  broken: FileBreak[];
  /** The file ends inside a row: a download that was cut. */
  truncated: { line: number; detail: string } | null;
  /** The last row of each chain in the file. */
  heads: ChainHead[];
  witnesses: FileWitnessResult[];
  unwitnessed: UnwitnessedChain[];
  /** CSV: rows that verified only with the other reading of an ambiguous cell (an empty cell as an empty text ...). */
  csv_other_readings: number;
  /** The columns whose cells were read the other way in those rows. */
  csv_other_columns: string[];
  /**
   * CSV: broken rows with more ambiguous cells than every combination of readings could be tried for (up to two
   * read the other way were): such a row may be intact and hold values CSV cannot write exactly; JSON Lines can tell.
   */
  csv_not_every_reading: number;
  /** Why nothing was verified (an empty file, not an export), when rows is 0. */
  not_an_export: string | null;
}

const MAX_LISTED = 1_000;
/** Up to this many ambiguous CSV cells in a row, every combination of readings is tried; beyond, one or two changed. */
const EXHAUSTIVE_READINGS = 10;

interface PlacedRow {
  line: number;
  id: string;
  replica_id: string;
  seq: number;
  prev_hash: string;
  hash: string;
  ts: string;
  kind: unknown;
}

/** Whether a row's hash is the hash of its content: as read, or with other readings of its ambiguous CSV cells. */
function hashMatches(reading: RowReading): 'as read' | OtherReading[] | 'no' {
  const { row, others } = reading;
  const matches = (r: ExportRow) => rowHash(r.prev_hash, r as unknown as AuditRecord) === r.hash;
  if (matches(row)) return 'as read';
  const tryReadings = (chosen: OtherReading[]): OtherReading[] | undefined => {
    if (new Set(chosen.map((o) => o.column)).size !== chosen.length) return undefined;
    const copy: ExportRow = { ...row };
    for (const o of chosen) copy[o.column] = o.value;
    return matches(copy) ? chosen : undefined;
  };
  // Fewest cells read the other way first: one empty text (a session's purpose) is the common case.
  const most = others.length <= EXHAUSTIVE_READINGS ? others.length : 2;
  for (let size = 1; size <= most; size++) {
    for (const chosen of combinations(others, size)) {
      const found = tryReadings(chosen);
      if (found) return found;
    }
  }
  return 'no';
}

function* combinations<T>(items: readonly T[], size: number, from = 0): Generator<T[]> {
  if (size === 0) {
    yield [];
    return;
  }
  for (let i = from; i <= items.length - size; i++) for (const rest of combinations(items, size - 1, i + 1)) yield [items[i]!, ...rest];
}

const MODIFIED = 'content does not match its hash: the row was modified';

/** Verifies an export read in chunks of text; `name` is the file's name (for its extension) or `-`. */
export async function verifyExport(chunks: AsyncIterable<string>, name: string, opts: ExportVerifyOptions = {}): Promise<ExportVerifyReport> {
  const report: ExportVerifyReport = {
    ok: true,
    format: null,
    detected_by: null,
    rows: 0,
    chains: 0,
    verified_rows: 0,
    links: 0,
    gaps: 0,
    gap_list: [],
    broken_rows: 0,
    broken: [],
    truncated: null,
    heads: [],
    witnesses: [],
    unwitnessed: [],
    csv_other_readings: 0,
    csv_other_columns: [],
    csv_not_every_reading: 0,
    not_an_export: null,
  };
  const placed: PlacedRow[] = [];
  // Reasons per row (by line), in the order found; lines that are not rows are kept apart.
  const reasons = new Map<number, string[]>();
  const unreadable: FileBreak[] = [];
  const breakRow = (line: number, reason: string) => {
    const r = reasons.get(line);
    if (r) r.push(reason);
    else reasons.set(line, [reason]);
  };
  let lastKey = '';
  let lastKeyLine = 0;

  /** One record of the file; `cut`: the file ended inside it (no newline after it). */
  const take = (reading: RowReading | Unreadable, line: number, cut: boolean) => {
    if ('unreadable' in reading) {
      if (cut) report.truncated = { line, detail: `the file ends inside line ${line}, which is not a whole row (${reading.unreadable}): the download was cut; export again` };
      else unreadable.push({ line, id: null, replica_id: null, seq: null, reason: `line ${line} is not an audit row: ${reading.unreadable}` });
      return;
    }
    const matched = hashMatches(reading);
    if (matched === 'no' && cut) {
      report.truncated = { line, detail: `the file ends inside the row on line ${line} (no newline after it, and it does not match its hash): the download was cut; export again` };
      return;
    }
    const { row } = reading;
    report.rows++;
    placed.push({ line, id: row.id, replica_id: row.replica_id, seq: row.seq, prev_hash: row.prev_hash, hash: row.hash, ts: String(row.ts), kind: row.kind });
    if (reading.notAsWritten) breakRow(line, reading.notAsWritten);
    if (matched === 'no') {
      breakRow(line, MODIFIED);
      if (reading.others.length > EXHAUSTIVE_READINGS) report.csv_not_every_reading++;
    } else {
      report.verified_rows++;
      if (matched !== 'as read') {
        report.csv_other_readings++;
        for (const o of matched) if (!report.csv_other_columns.includes(o.column)) report.csv_other_columns.push(o.column);
      }
    }
    // The export writes rows oldest first, by ts then id: one placed after a later row was moved.
    const key = `${String(row.ts)} ${row.id.toLowerCase()}`;
    if (key < lastKey) breakRow(line, `it comes after a later row in the file (line ${lastKeyLine}): the export writes rows oldest first (ts, then id), so rows were moved`);
    else {
      lastKey = key;
      lastKeyLine = line;
    }
  };

  let format: ExportFormat | undefined;
  let pending = '';
  let lineNo = 0;
  const csv = new CsvRecords();
  let header: string[] | undefined;
  const takeCsv = (record: Parameters<typeof readCsvRecord>[0], cut: boolean) => {
    if (!header) {
      const h = csvHeader(record);
      if ('unreadable' in h) report.not_an_export ??= h.unreadable;
      else header = h;
      return;
    }
    take(readCsvRecord(record, header), record.line, cut);
  };
  const takeLines = (text: string) => {
    let start = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      lineNo++;
      const line = text.slice(start, nl);
      start = nl + 1;
      if (line.trim() !== '') take(readJsonLine(line), lineNo, false);
    }
    return text.slice(start);
  };

  for await (const chunk of chunks) {
    if (report.not_an_export) break;
    if (format === undefined) {
      pending += chunk;
      const first = pending.replace(/^\uFEFF/, '').trimStart();
      if (first === '') continue;
      const detected = detectFormat(first, name);
      if (!detected) {
        report.not_an_export = 'it is neither JSON Lines (a row object a line) nor CSV with the export\'s header (id,ts,replica_id,seq,...)';
        break;
      }
      format = detected.format;
      report.format = format;
      report.detected_by = detected.by;
      const text = pending.replace(/^\uFEFF/, '');
      pending = '';
      if (format === 'csv') for (const r of csv.push(text)) takeCsv(r, false);
      else pending = takeLines(text);
      continue;
    }
    if (format === 'csv') for (const r of csv.push(chunk)) takeCsv(r, false);
    else pending = takeLines(pending + chunk);
  }
  if (format === 'csv' && !report.not_an_export) {
    const rest = csv.end();
    if (rest) {
      if (!header) takeCsv(rest.record, true);
      else if (rest.insideQuotes) report.truncated = { line: rest.record.line, detail: `the file ends inside a quoted cell of the row on line ${rest.record.line}: the download was cut; export again` };
      else take(readCsvRecord(rest.record, header), rest.record.line, true);
    }
    if (header && report.rows === 0 && !report.truncated && unreadable.length === 0) report.not_an_export = 'it has the header of an audit export but no rows (an export that matched nothing?)';
  } else if (format === 'jsonl' && pending.trim() !== '') {
    take(readJsonLine(pending), lineNo + 1, true);
  }
  if (format === undefined && !report.not_an_export) report.not_an_export = 'the file is empty';
  if (report.rows === 0 && !report.not_an_export) {
    report.not_an_export = report.truncated ? 'the file ends inside its first row' : 'no line of it is an audit row';
  }

  walkChains(placed, report, breakRow, opts.complete === true);
  const broken: FileBreak[] = [...unreadable];
  for (const p of placed) {
    const r = reasons.get(p.line);
    if (r) broken.push({ line: p.line, id: p.id, replica_id: p.replica_id, seq: p.seq, reason: r.join('; ') });
  }
  broken.sort((a, b) => a.line - b.line);
  report.broken_rows = broken.length;
  report.broken = broken.slice(0, MAX_LISTED);
  if (broken.length > 0) report.ok = false;
  if (report.truncated || report.rows === 0) report.ok = false;
  checkWitnesses(placed, report, opts);
  return report;
}

function detectFormat(start: string, name: string): { format: ExportFormat; by: 'content' | 'extension' } | undefined {
  if (start.startsWith('{')) return { format: 'jsonl', by: 'content' };
  if (/^"?id"?,/.test(start)) return { format: 'csv', by: 'content' };
  if (/\.(jsonl|ndjson)$/i.test(name)) return { format: 'jsonl', by: 'extension' };
  if (/\.csv$/i.test(name)) return { format: 'csv', by: 'extension' };
  return undefined;
}

/** Links, gaps, seq twice, rows after CHAIN_END and time going back, chain by chain in seq order. */
function walkChains(placed: PlacedRow[], report: ExportVerifyReport, breakRow: (line: number, reason: string) => void, complete: boolean): void {
  const chains = new Map<string, PlacedRow[]>();
  for (const p of placed) {
    const c = chains.get(p.replica_id);
    if (c) c.push(p);
    else chains.set(p.replica_id, [p]);
  }
  report.chains = chains.size;
  for (const [replicaId, rows] of chains) {
    rows.sort((a, b) => a.seq - b.seq || a.line - b.line);
    let prev: PlacedRow | undefined;
    // The hashes of the rows at the previous seq (two when a seq is in the file twice).
    let prevHashes: string[] = [];
    let ended: PlacedRow | undefined;
    for (const row of rows) {
      if (prev && row.seq === prev.seq) {
        breakRow(row.line, `seq ${row.seq} appears twice in the file (lines ${prev.line} and ${row.line}): a row was inserted into the chain`);
        prevHashes.push(row.hash);
        continue;
      }
      if (prev && row.seq === prev.seq + 1) {
        report.links++;
        if (!prevHashes.includes(row.prev_hash)) breakRow(row.line, `prev_hash does not match the row before (seq ${prev.seq}, line ${prev.line}): that row was modified and re-hashed, or this one does not belong after it`);
      } else if (!prev && row.seq === 1) {
        report.links++;
        if (row.prev_hash !== GENESIS) breakRow(row.line, 'prev_hash does not match the row before: it is the first row of its chain (seq 1) but its prev_hash is not the genesis hash (64 zeros)');
      } else if (prev) {
        report.gaps++;
        if (report.gap_list.length < MAX_LISTED) report.gap_list.push({ replica_id: replicaId, from_seq: prev.seq + 1, to_seq: row.seq - 1 });
        if (complete) breakRow(row.line, `rows with seq ${prev.seq + 1}..${row.seq - 1} are missing before this row (--complete: the export had no filter but from/to, so its chains have no gaps): rows were removed from the file`);
      }
      if (ended) breakRow(row.line, `it comes after its chain's CHAIN_END (seq ${ended.seq}, line ${ended.line}): its writer had closed the chain, so the row was added to it later`);
      else if (prev && row.ts < prev.ts) breakRow(row.line, `its ts (${row.ts}) is earlier than the row before it in its chain (seq ${prev.seq}, ${prev.ts}): a chain's writer never goes back in time, so the row was added later`);
      if (row.kind === 'CHAIN_END') ended ??= row;
      prev = row;
      prevHashes = [row.hash];
    }
    if (prev) report.heads.push({ replica_id: replicaId, seq: prev.seq, hash: prev.hash, ts: prev.ts });
  }
}

/**
 * A witnessed position in the file must have the witnessed hash; one the file does not hold (filtered out,
 * or exported before it was written) is reported ABSENT, not a failure: a file cannot show what it lacks.
 * With `--witnesses`, a chain in the file that no witness names is UNWITNESSED, as in the database.
 */
function checkWitnesses(placed: PlacedRow[], report: ExportVerifyReport, opts: ExportVerifyOptions): void {
  const witnesses = opts.witnesses ?? [];
  if (witnesses.length === 0) return;
  const at = new Map<string, PlacedRow[]>();
  const range = new Map<string, { min: number; max: number; rows: number; last: PlacedRow }>();
  for (const p of placed) {
    const key = `${p.replica_id}:${p.seq}`;
    at.set(key, [...(at.get(key) ?? []), p]);
    const r = range.get(p.replica_id);
    if (!r) range.set(p.replica_id, { min: p.seq, max: p.seq, rows: 1, last: p });
    else {
      r.rows++;
      if (p.seq < r.min) r.min = p.seq;
      if (p.seq >= r.max) {
        r.max = p.seq;
        r.last = p;
      }
    }
  }
  const brokenLines = new Set(report.broken.map((b) => b.line));
  for (const w of witnesses) {
    const found = at.get(`${w.replica_id}:${w.seq}`) ?? [];
    const chain = range.get(w.replica_id);
    let result: FileWitnessResult;
    if (found.some((p) => p.hash === w.hash)) {
      const bad = found.some((p) => brokenLines.has(p.line));
      result = { ...w, result: 'ok', detail: `the row is in the file (line ${found[0]!.line}) with this hash${bad ? ', but it does not verify: see above' : ''}` };
    } else if (found.length > 0) {
      result = { ...w, result: 'mismatch', detail: `the row at this position (line ${found[0]!.line}) has hash ${found[0]!.hash}: the chain was rewritten from here or before` };
    } else if (!chain) {
      result = { ...w, result: 'absent', detail: 'no row of this chain is in the file (filtered out, or outside its time window): not checked' };
    } else if (w.seq > chain.max) {
      result = { ...w, result: 'absent', detail: `the file's rows of this chain end at seq ${chain.max}, before this position (exported before it was written, filtered, or rows cut from the file's end): not checked` };
    } else {
      result = { ...w, result: 'absent', detail: 'not in the file (filtered out): not checked' };
    }
    report.witnesses.push(result);
    if (result.result === 'mismatch' || (result.result === 'ok' && found.some((p) => brokenLines.has(p.line)))) report.ok = false;
  }
  if (opts.requireWitness) {
    const named = new Set(witnesses.map((w) => w.replica_id));
    for (const [replicaId, r] of range) {
      if (named.has(replicaId)) continue;
      report.unwitnessed.push({ replica_id: replicaId, first_seq: r.min, last_seq: r.max, rows: r.rows, last_ts: r.last.ts });
    }
    if (report.unwitnessed.length > 0) report.ok = false;
  }
}
