import { createReadStream } from 'node:fs';
import type { Witness } from './chain.js';
import { VERIFY_EXIT, witnessesOf } from './commands.js';
import { type ExportVerifyReport, verifyExport } from './verify-file.js';

// `killswitch audit verify --file <export>`: no DATABASE_URL, no configuration; exit codes as the database
// mode's (VERIFY_EXIT), 4 meaning the file could not be read and 5 a file cut inside a row.

export interface VerifyFileOptions {
  json?: boolean;
  expect?: Witness[];
  witnesses?: string;
  complete?: boolean;
}

const FORMAT_NAMES = { jsonl: 'JSON Lines', csv: 'CSV' } as const;

/** Tampered (1) wins over a cut file (5): a cut file with a broken row or witness is broken. */
export function exitCodeOf(report: ExportVerifyReport): number {
  if (report.rows === 0) return VERIFY_EXIT.nothingVerified;
  if (report.broken_rows > 0 || report.unwitnessed.length > 0 || report.witnesses.some((w) => w.result === 'mismatch')) return VERIFY_EXIT.broken;
  if (report.truncated) return VERIFY_EXIT.incomplete;
  return report.ok ? VERIFY_EXIT.ok : VERIFY_EXIT.broken;
}

export function formatExportReport(report: ExportVerifyReport, file: string): string {
  const shown = file === '-' ? 'standard input' : file;
  const lines = [`audit verify: file ${shown}${report.format ? ` (${FORMAT_NAMES[report.format]}, by its ${report.detected_by})` : ''}`];
  const badWitnesses = report.witnesses.filter((w) => w.result === 'mismatch').length;
  const parts = [
    report.rows === 0 ? `NOTHING VERIFIED: ${report.not_an_export ?? 'no audit row'}; not an audit export (GET /v1/audit/export?format=jsonl or csv)` : '',
    report.broken_rows > 0 ? `BROKEN (${report.broken_rows} rows)` : '',
    report.truncated ? 'TRUNCATED (the file ends inside a row)' : '',
    report.unwitnessed.length > 0 ? `UNWITNESSED (${report.unwitnessed.length} chains)` : '',
    badWitnesses > 0 ? `${badWitnesses} witnessed positions do not verify` : '',
  ].filter(Boolean);
  lines.push(`audit verify: ${report.rows} rows in ${report.chains} chains: ${parts.length > 0 ? parts.join('; ') : 'OK'}`);
  if (report.rows > 0) {
    lines.push(`  ${report.verified_rows} rows verified one by one (each hash is SHA-256 of its prev_hash and content); ${report.links} links checked (a prev_hash is the hash of the row before it in its chain)`);
    if (report.gaps > 0) {
      lines.push(`  ${report.gaps} gaps: rows of a chain that are not in the file, normal for a filtered export; rows on either side of a gap are verified each, not linked:`);
      for (const g of report.gap_list.slice(0, 10)) lines.push(`    replica_id=${g.replica_id} seq ${g.from_seq === g.to_seq ? g.from_seq : `${g.from_seq}..${g.to_seq}`}`);
      if (report.gaps > 10) lines.push(`    and ${report.gaps - 10} more (--json lists ${report.gap_list.length})`);
    }
  }
  if (report.csv_other_readings > 0) {
    lines.push(
      `  ${report.csv_other_readings} rows verified only with another reading of a cell CSV cannot write exactly (an empty cell as an empty text rather than null, a number as text, a leading ' as the value's own), in ${report.csv_other_columns.join(', ')}: the JSON Lines export has no such cells`,
    );
  }
  if (report.csv_not_every_reading > 0) {
    lines.push(
      `  ${report.csv_not_every_reading} of the broken rows have more cells CSV cannot write exactly (an empty cell is an empty text or null) than every reading of could be tried (any two were): verify the JSON Lines export to be sure they were modified`,
    );
  }
  for (const b of report.broken) lines.push(`  broken row line=${b.line} id=${b.id ?? '(none)'} replica_id=${b.replica_id ?? '(none)'} seq=${b.seq ?? '(none)'}: ${b.reason}`);
  if (report.broken_rows > report.broken.length) lines.push(`  and ${report.broken_rows - report.broken.length} more broken rows`);
  if (report.truncated) lines.push(`  TRUNCATED: ${report.truncated.detail}`);
  for (const u of report.unwitnessed) {
    lines.push(`  UNWITNESSED chain replica_id=${u.replica_id} seq ${u.first_seq}..${u.last_seq} in the file (${u.rows} rows, last at ${u.last_ts ?? 'unknown'}): no witness names it`);
  }
  for (const w of report.witnesses) lines.push(`  witnessed ${w.replica_id}:${w.seq}: ${w.result.toUpperCase()}: ${w.detail}`);
  if (report.rows > 0 && !report.witnesses.some((w) => w.result === 'ok')) {
    lines.push(
      '  note: no witnessed position is in the file, so this shows the file is consistent in itself, not that it is what the control plane wrote: whoever edits a file can recompute the hashes after the edit. Give --expect or --witnesses (the shipped `audit chain head` lines) to tie it to them',
    );
  }
  return `${lines.join('\n')}\n`;
}

async function* chunksOf(file: string): AsyncGenerator<string> {
  const stream = file === '-' ? process.stdin.setEncoding('utf8') : createReadStream(file, { encoding: 'utf8' });
  for await (const chunk of stream) yield chunk as string;
}

/** Verifies an export file (`-`: standard input) with no database. */
export async function auditVerifyFile(file: string, opts: VerifyFileOptions = {}): Promise<{ code: number; output: string; error?: string }> {
  const given = await witnessesOf(opts);
  if ('error' in given) return { code: VERIFY_EXIT.usage, output: '', error: given.error };
  let report: ExportVerifyReport;
  try {
    report = await verifyExport(chunksOf(file), file, { witnesses: given.witnesses, requireWitness: opts.witnesses !== undefined, complete: opts.complete === true });
  } catch (err) {
    return { code: VERIFY_EXIT.database, output: '', error: `audit verify: NOTHING VERIFIED: cannot read the file ${file}: ${(err as Error).message}\n` };
  }
  const code = exitCodeOf(report);
  const output = opts.json ? `${JSON.stringify({ file: { path: file, format: report.format, detected_by: report.detected_by }, verified: code === VERIFY_EXIT.ok, ...report }, null, 2)}\n` : formatExportReport(report, file);
  return { code, output };
}
