// Reading back the CSV that GET /v1/audit/export writes (service.ts: csvCells through csv-stringify with
// a header and escape_formulas), for `killswitch audit verify --file`. Only that dialect: comma, `"`
// quotes doubled inside quoted cells, `\n` after every record (a `\r\n` a spreadsheet saved is taken too).

/**
 * The first characters before which csv-stringify's escape_formulas writes a `'` (csv-stringify 6,
 * lib/api/index.js): a cell starting with one could run as a spreadsheet formula. Every export cell is a
 * string (csvCells), so `-` is prefixed too, numbers included.
 */
export const FORMULA_STARTS: ReadonlySet<string> = new Set(['=', '+', '-', '@', '\t', '\r', '\uFF1D', '\uFF0B', '\uFF0D', '\uFF20']);

/**
 * A cell as the writer had it before escape_formulas. A `'` followed by one of FORMULA_STARTS is the
 * prefix, removed; but a value that itself starts with `'` and then such a character was written as it is
 * (escape_formulas adds nothing before a `'`), so that cell has a second reading: `alternative`, the cell
 * unchanged. Any other cell is the value itself.
 */
export function unescapeFormula(cell: string): { value: string; alternative?: string } {
  if (cell.length >= 2 && cell[0] === "'" && FORMULA_STARTS.has(cell[1]!)) return { value: cell.slice(1), alternative: cell };
  return { value: cell };
}

export interface CsvRecord {
  cells: string[];
  /** The file line the record starts on (1-based; a quoted cell can span lines). */
  line: number;
  /** Why the record is not as csv-stringify writes one (a stray quote, text after a closing quote). */
  malformed?: string;
}

/**
 * Splits CSV text fed in chunks into records. `end()` returns the last record when the text does not end
 * with a newline (every record the export writes does): a cut download, with whether the cut fell inside a
 * quoted cell.
 */
export class CsvRecords {
  private cells: string[] = [];
  private field = '';
  /** Inside a quoted cell; `quoteSeen`: its last character was a `"` (the closing one, or the first of `""`). */
  private quoted = false;
  private quoteSeen = false;
  /** The current cell was quoted and is closed: only `,` or the end of the record may follow. */
  private closed = false;
  private fieldStarted = false;
  private crAfterClose = false;
  private malformed: string | undefined;
  private line = 1;
  private recordLine = 1;

  push(chunk: string): CsvRecord[] {
    const out: CsvRecord[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (this.quoted) {
        if (this.quoteSeen) {
          this.quoteSeen = false;
          if (c === '"') {
            this.field += '"';
            continue;
          }
          this.quoted = false;
          this.closed = true;
          // Falls through: c is what follows the closing quote.
        } else {
          if (c === '"') this.quoteSeen = true;
          else {
            if (c === '\n') this.line++;
            this.field += c;
          }
          continue;
        }
      }
      if (c === ',') {
        if (this.crAfterClose) this.malformed ??= `text after the closing quote of cell ${this.cells.length + 1}`;
        this.endCell();
      } else if (c === '\n') {
        // A `\r` before it, outside quotes, is a CRLF line end: the writer quotes every value holding a `\r`.
        if (!this.closed && this.field.endsWith('\r')) this.field = this.field.slice(0, -1);
        this.endCell();
        out.push(this.takeRecord());
        this.line++;
        this.recordLine = this.line;
      } else if (c === '"' && !this.fieldStarted) {
        this.quoted = true;
        this.fieldStarted = true;
      } else if (this.closed) {
        // Only a CRLF line end's `\r` may follow a closing quote.
        if (c === '\r' && !this.crAfterClose) this.crAfterClose = true;
        else this.malformed ??= `text after the closing quote of cell ${this.cells.length + 1}`;
      } else {
        if (c === '"') this.malformed ??= `a quote inside unquoted cell ${this.cells.length + 1}`;
        this.field += c;
        this.fieldStarted = true;
      }
    }
    return out;
  }

  /** What is left once the text has ended: a record without its newline, if any. */
  end(): { record: CsvRecord; insideQuotes: boolean } | undefined {
    if (this.quoted && this.quoteSeen) {
      this.quoted = false;
      this.quoteSeen = false;
      this.closed = true;
    }
    if (this.cells.length === 0 && !this.fieldStarted && this.field === '') return undefined;
    const insideQuotes = this.quoted;
    this.endCell();
    return { record: this.takeRecord(), insideQuotes };
  }

  private endCell(): void {
    this.cells.push(this.field);
    this.field = '';
    this.closed = false;
    this.fieldStarted = false;
    this.crAfterClose = false;
  }

  private takeRecord(): CsvRecord {
    const record: CsvRecord = { cells: this.cells, line: this.recordLine };
    if (this.malformed) record.malformed = this.malformed;
    this.cells = [];
    this.malformed = undefined;
    return record;
  }
}
