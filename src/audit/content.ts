import { canonicalJson } from '../canonical-json.js';
import { AUDIT_COLUMN_NAMES, AUDIT_COLUMNS, type AuditRecord } from './record.js';

// The canonical content of an audit row: what the hash chain hashes (chain.ts) and, with hash and
// prev_hash appended, the JSON the store inserts (store.ts).

const JSON_COLUMNS = new Set<string>(AUDIT_COLUMNS.filter(([, t]) => t === 'jsonb').map(([c]) => c));
// Sorted column names with their JSON key prefix, so each row's text is built by concatenation.
const HASHED_COLUMNS = AUDIT_COLUMN_NAMES.filter((c) => c !== 'prev_hash' && c !== 'hash')
  .sort()
  .map((c, i) => [c, `${i === 0 ? '{' : ','}${JSON.stringify(c)}:`] as const);

/**
 * The hashed content of a row: every column except prev_hash and hash as a JSON object with sorted keys
 * (nested JSON too), i.e. canonicalJson of that object.
 */
export function hashedContent(row: Omit<AuditRecord, 'hash'> | AuditRecord): string {
  const r = row as unknown as Record<string, unknown>;
  let out = '';
  for (const [c, prefix] of HASHED_COLUMNS) {
    const v = r[c];
    out += prefix;
    if (v === null || v === undefined) out += 'null';
    else if (v instanceof Date) out += JSON.stringify(v.toISOString());
    else if (JSON_COLUMNS.has(c)) out += canonicalJson(v);
    else out += JSON.stringify(v) ?? 'null';
  }
  return `${out}}`;
}
