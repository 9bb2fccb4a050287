import { stringify } from 'csv-stringify/sync';
import { describe, expect, it } from 'vitest';
import { GENESIS, rowHash } from '../../src/audit/chain.js';
import { CsvRecords, FORMULA_STARTS, unescapeFormula } from '../../src/audit/export-csv.js';
import { AUDIT_COLUMN_NAMES, type AuditRecord, makeEvent, makeRecord } from '../../src/audit/record.js';
import { csvCells } from '../../src/audit/service.js';
import { verifyExport } from '../../src/audit/verify-file.js';
import { exitCodeOf } from '../../src/audit/verify-file-command.js';

// Reading back the CSV export for `audit verify --file`: the `'` csv-stringify's escape_formulas puts
// before formula-looking cells comes off exactly, the dialect's quoting is undone, and values CSV cannot
// write exactly (an empty text, a text that itself starts with `'=`) still verify through their other reading.

/** Cells as the export writes them (service.ts openExport: csv-stringify, header, escape_formulas). */
const exportCsv = (rows: string[][]) => stringify(rows, { header: true, columns: [...AUDIT_COLUMN_NAMES], escape_formulas: true });

function parseAll(text: string, chunk = text.length): { records: string[][]; rest: ReturnType<CsvRecords['end']> } {
  const csv = new CsvRecords();
  const records: string[][] = [];
  for (let i = 0; i < text.length; i += chunk) for (const r of csv.push(text.slice(i, i + chunk))) records.push(r.cells);
  return { records, rest: csv.end() };
}

async function* once(text: string): AsyncGenerator<string> {
  yield text;
}

/** A chain of rows as the writer seals them: seq 1.., each prev_hash the hash before. */
function chain(events: Array<Partial<Parameters<typeof makeEvent>[0]>>): AuditRecord[] {
  const replica = '01a2089e-c9de-7146-9023-0767646c89b6';
  let prev = GENESIS;
  return events.map((e, i) => {
    const r = makeRecord(makeEvent({ kind: 'ADMIN', actor_type: 'system', ...e }), `00000000-0000-7000-8000-${String(i + 1).padStart(12, '0')}`, new Date(Date.UTC(2026, 11, 1, 0, 0, i)), replica, i + 1, prev);
    r.hash = rowHash(prev, r);
    prev = r.hash;
    return r;
  });
}

describe('unescapeFormula', () => {
  it('takes off exactly the `\'` escape_formulas puts before each formula start, fullwidth ones included', () => {
    for (const start of FORMULA_STARTS) {
      const value = `${start}SUM(A1:A9)`;
      const [written] = parseAll(exportCsv([[value]]).split('\n').slice(1).join('\n')).records;
      expect(written![0]).toBe(`'${value}`);
      expect(unescapeFormula(written![0]!).value).toBe(value);
    }
  });

  it('leaves every other cell as it is, a leading `\'` included', () => {
    for (const cell of ["'abc", "''", "'", "''=x", 'plain', '', 'a=b', ' =x']) expect(unescapeFormula(cell)).toEqual({ value: cell });
  });

  it('a value that itself starts with `\'` and a formula start is written unchanged: the cell has both readings', () => {
    const written = parseAll(exportCsv([["'=x"], ['=x']])).records.slice(1);
    // Two different values, one cell text: the other reading keeps the `'`.
    expect(written).toEqual([["'=x"], ["'=x"]]);
    expect(unescapeFormula("'=x")).toEqual({ value: '=x', alternative: "'=x" });
  });
});

describe('CsvRecords', () => {
  const tricky = ['a,b', 'say "hi"', 'two\nlines', 'cr\r\nlf', '', ' spaced ', '"', '日本 🙂'];

  it('reads back every cell csv-stringify wrote, fed whole or one character at a time', () => {
    const text = stringify([tricky, ['x', ...tricky.slice(1)]]);
    for (const chunk of [text.length, 1, 3]) {
      const { records, rest } = parseAll(text, chunk);
      expect(records).toEqual([tricky, ['x', ...tricky.slice(1)]]);
      expect(rest).toBeUndefined();
    }
  });

  it('counts the line each record starts on, across quoted newlines; CRLF line ends are taken', () => {
    const csv = new CsvRecords();
    const records = csv.push('a,"b\nc"\r\nd,e\r\n');
    expect(records.map((r) => [r.line, r.cells])).toEqual([
      [1, ['a', 'b\nc']],
      [3, ['d', 'e']],
    ]);
  });

  it('a file that ends without a newline gives its last record back, and says when the cut fell inside quotes', () => {
    expect(parseAll('a,b\nc,d').rest).toMatchObject({ record: { cells: ['c', 'd'], line: 2 }, insideQuotes: false });
    expect(parseAll('a,b\nc,"d\ne').rest).toMatchObject({ record: { line: 2 }, insideQuotes: true });
  });

  it('names what csv-stringify never writes: a quote in an unquoted cell, text after a closing quote', () => {
    const csv = new CsvRecords();
    expect(csv.push('a"b,c\n"x"y,z\nok,fine\n').map((r) => r.malformed)).toEqual(['a quote inside unquoted cell 1', 'text after the closing quote of cell 1', undefined]);
  });
});

describe('verifyExport on CSV', () => {
  it('rows with formula-looking cells, a genuine leading `\'=`, negative and fractional numbers and nested JSON verify', async () => {
    const rows = chain([
      { client_name: '=cmd|/C calc', user_agent: '@SUM(1)', summary: '-5 rows', action: 'a\tb' },
      { client_name: "'=already quoted", purpose: "'plain quote", duration_ms: 0.1 + 0.2, rows: 7 },
      { details: { '10': 'ten', '2': { b: [1, 'x', null], a: true }, z: 'ünïcödé 🙂', n: -1.5e-7 }, message: '\uFF1Dfullwidth' },
      { arguments: { '': '', q: '"quoted", and, commas\nnewline' }, result_bytes: 0 },
    ]);
    const report = await verifyExport(once(exportCsv(rows.map(csvCells))), 'export.csv');
    expect(report).toMatchObject({ ok: true, format: 'csv', detected_by: 'content', rows: 4, verified_rows: 4, links: 4, broken_rows: 0, gaps: 0 });
    // The genuine "'=already quoted" verified through its other reading: said so.
    expect(report.csv_other_readings).toBe(1);
  });

  it('an empty text, which CSV writes as it writes null, verifies through its other reading', async () => {
    const report = await verifyExport(once(exportCsv(chain([{ client_name: '', user_agent: 'x' }]).map(csvCells))), 'e.csv');
    expect(report).toMatchObject({ ok: true, verified_rows: 1, csv_other_readings: 1 });
  });

  it('a cell changed by one character is named as modified, whatever reading is tried', async () => {
    const cells = chain([{ client_name: '=x' }, { client_name: 'y' }]).map(csvCells);
    cells[1]![AUDIT_COLUMN_NAMES.indexOf('client_name')] = 'z';
    const report = await verifyExport(once(exportCsv(cells)), 'e.csv');
    expect(report.ok).toBe(false);
    expect(report.broken).toEqual([expect.objectContaining({ line: 3, seq: 2, reason: 'content does not match its hash: the row was modified' })]);
  });

  it('a number written otherwise than the export writes it (007 for 7) is named, although it hashes the same', async () => {
    const cells = chain([{ rows: 7 }]).map(csvCells);
    cells[0]![AUDIT_COLUMN_NAMES.indexOf('rows')] = '007';
    const report = await verifyExport(once(exportCsv(cells)), 'e.csv');
    expect(report.broken[0]!.reason).toMatch(/its rows cell \("007"\) is not a number as the export writes one/);
  });
});

describe('verifyExport on JSON Lines, and the exit code', () => {
  const jsonl = (rows: AuditRecord[]) => rows.map((r) => `${JSON.stringify(r)}\n`).join('');

  it('a byte order mark before the first row is not a broken row', async () => {
    const report = await verifyExport(once(`\uFEFF${jsonl(chain([{}, {}]))}`), '-');
    expect(report).toMatchObject({ ok: true, format: 'jsonl', rows: 2, verified_rows: 2, links: 2 });
  });

  it('a key given twice (a reader sees one value, the hash covers the other) is named although the hash matches', async () => {
    const [row] = chain([{ decision: 'deny' }]);
    const line = JSON.stringify(row).replace('"decision":"deny"', '"decision":"allow","decision":"deny"');
    const report = await verifyExport(once(`${line}\n`), '-');
    expect(report.verified_rows).toBe(1);
    expect(report.broken[0]!.reason).toMatch(/^the line is not as the export writes it \(a key given twice/);
    expect(exitCodeOf(report)).toBe(1);
  });

  it('a cut file exits 5, but 1 when a witnessed position in it does not match: tampered wins over incomplete', async () => {
    const rows = chain([{}, {}, {}]);
    const cut = jsonl(rows).slice(0, -20);
    expect(exitCodeOf(await verifyExport(once(cut), '-'))).toBe(5);
    const witness = { replica_id: rows[0]!.replica_id, seq: 1, hash: 'f'.repeat(64) };
    const report = await verifyExport(once(cut), '-', { witnesses: [witness] });
    expect(report.witnesses[0]).toMatchObject({ result: 'mismatch' });
    expect(exitCodeOf(report)).toBe(1);
  });
});
