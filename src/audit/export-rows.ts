import { type CsvRecord, unescapeFormula } from './export-csv.js';
import { AUDIT_COLUMN_NAMES, AUDIT_COLUMNS } from './record.js';

// One line of an audit export (GET /v1/audit/export) turned back into the row the writer hashed, for
// `killswitch audit verify --file`. JSON Lines are the row as JSON.stringify wrote it: lossless. CSV cells
// are text: this undoes what csvCells and csv-stringify did, per column type, and says which cells could
// have held something else (the other reading is tried when the first does not match the hash).

/** A row of an export, with the columns hashedContent reads (ts as its ISO text, which hashes as the Date did). */
export type ExportRow = Record<string, unknown> & { id: string; replica_id: string; seq: number; prev_hash: string; hash: string; ts: unknown; kind: unknown };

/** A CSV cell the writer can have produced from two values: the column and its other value. */
export interface OtherReading {
  column: string;
  value: unknown;
}

export interface RowReading {
  row: ExportRow;
  /** CSV only: the other values of ambiguous cells. */
  others: OtherReading[];
  /** The line is not as the export writes it although it holds a row (a key twice, a reformatted value). */
  notAsWritten?: string;
}

export interface Unreadable {
  unreadable: string;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** The identity columns a row must have to be placed in a chain; the reason when it has not. */
function identityProblem(o: Record<string, unknown>): string | undefined {
  if (typeof o['id'] !== 'string' || o['id'] === '') return 'it has no id';
  if (typeof o['replica_id'] !== 'string' || o['replica_id'] === '') return 'it has no replica_id';
  if (typeof o['seq'] !== 'number' || !Number.isSafeInteger(o['seq']) || o['seq'] < 1) return 'its seq is not a positive integer';
  if (typeof o['prev_hash'] !== 'string' || !HEX64.test(o['prev_hash'])) return 'its prev_hash is not a SHA-256 hash (64 hex digits)';
  if (typeof o['hash'] !== 'string' || !HEX64.test(o['hash'])) return 'its hash is not a SHA-256 hash (64 hex digits)';
  return undefined;
}

/** A line of a JSON Lines export (without its newline). */
export function readJsonLine(line: string): RowReading | Unreadable {
  const text = line.endsWith('\r') ? line.slice(0, -1) : line;
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    return { unreadable: 'it is not JSON' };
  }
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return { unreadable: 'it is not a JSON object' };
  const problem = identityProblem(o as Record<string, unknown>);
  if (problem) return { unreadable: `it is not an audit row: ${problem}` };
  const reading: RowReading = { row: o as ExportRow, others: [] };
  // The export writes JSON.stringify(row): the same text again, unless the line was edited in a way the
  // hash does not see (a key given twice shows one value to a reader and hashes the other; spaces, order).
  if (JSON.stringify(o) !== text) reading.notAsWritten = 'the line is not as the export writes it (a key given twice, or reformatted): what it shows may not be what was hashed';
  return reading;
}

const TYPES = new Map<string, string>(AUDIT_COLUMNS.map(([c, t]) => [c, t]));

/** The column of each cell from the header record; the reason when it is not an export's header. */
export function csvHeader(record: CsvRecord): string[] | Unreadable {
  const names = record.cells.map((c, i) => (i === 0 ? c.replace(/^\uFEFF/, '') : c));
  const missing = AUDIT_COLUMN_NAMES.filter((c) => !names.includes(c));
  if (missing.length === AUDIT_COLUMN_NAMES.length) return { unreadable: 'its first line is not the header of an audit export (id,ts,replica_id,seq,...)' };
  if (missing.length > 0) return { unreadable: `its header lacks the columns ${missing.join(', ')}: not an audit export of this version (every column is hashed)` };
  return names;
}

const isNumberText = (v: string) => v !== '' && String(Number(v)) === v;

/**
 * A CSV record of an export: each cell back to the type the writer hashed (csvCells wrote '' for null,
 * ISO text for times, JSON text for objects and arrays and String(v) for everything else, then a `'` before
 * a formula-looking start).
 */
export function readCsvRecord(record: CsvRecord, header: readonly string[]): RowReading | Unreadable {
  if (record.malformed) return { unreadable: `it is not CSV as the export writes it: ${record.malformed}` };
  if (record.cells.length !== header.length) return { unreadable: `it has ${record.cells.length} cells where the header has ${header.length}` };
  const row: Record<string, unknown> = {};
  const others: OtherReading[] = [];
  let notAsWritten: string | undefined;
  for (let i = 0; i < header.length; i++) {
    const column = header[i]!;
    const type = TYPES.get(column);
    if (type === undefined) continue;
    const cell = record.cells[i]!;
    if (cell === '') {
      // NULL and an empty text are both written as an empty cell.
      row[column] = null;
      if (type === 'text' || type === 'jsonb') others.push({ column, value: '' });
      continue;
    }
    const { value, alternative } = unescapeFormula(cell);
    if (type === 'bigint' || type === 'double precision') {
      if (!isNumberText(value)) notAsWritten ??= `its ${column} cell (${JSON.stringify(cell.slice(0, 40))}) is not a number as the export writes one`;
      row[column] = Number(value);
    } else if (type === 'jsonb') {
      row[column] = jsonCell(column, value, others, (why) => {
        notAsWritten ??= why;
      });
      if (alternative !== undefined) others.push({ column, value: alternative });
    } else {
      row[column] = value;
      if (alternative !== undefined) others.push({ column, value: alternative });
    }
  }
  if (typeof row['seq'] === 'number' && Number.isNaN(row['seq'])) row['seq'] = undefined;
  const problem = identityProblem(row);
  if (problem) return { unreadable: `it is not an audit row: ${problem}` };
  const reading: RowReading = { row: row as ExportRow, others };
  if (notAsWritten) reading.notAsWritten = notAsWritten;
  return reading;
}

/**
 * A JSON column's cell: an object or array is its JSON text; a JSON string, number or boolean was written
 * as String(v), so `5` or `true` may have been the text "5" or "true", and `{...}` a text that looks like
 * JSON: the other reading is the text.
 */
function jsonCell(column: string, text: string, others: OtherReading[], notAsWritten: (why: string) => void): unknown {
  if (text.startsWith('{') || text.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return text;
    }
    others.push({ column, value: text });
    if (JSON.stringify(parsed) !== text) notAsWritten(`its ${column} cell is not JSON as the export writes it (a key given twice, or reformatted): what it shows may not be what was hashed`);
    return parsed;
  }
  if (text === 'true' || text === 'false') {
    others.push({ column, value: text });
    return text === 'true';
  }
  if (isNumberText(text)) {
    others.push({ column, value: text });
    return Number(text);
  }
  return text;
}
