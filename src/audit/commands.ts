import { readFile } from 'node:fs/promises';
import { pino } from 'pino';
import { type Config, settingSource } from '../config.js';
import { createPool, UNBOUNDED_QUERY_TIMEOUT_MS } from '../db/pool.js';
import { loggerOptions } from '../log.js';
import { parseWitnessFile, type VerifyReport, verifyChain, type Witness } from './chain.js';
import { AuditService, logChainHead, retentionCutoff } from './service.js';
import { auditStore, type RetentionResult } from './store.js';

// `killswitch audit verify` and `killswitch audit retention`: straight to Postgres, no Redis or Unleash,
// so they work during an incident and from a cron job.

/**
 * Exit codes of `killswitch audit verify` (docs/cli.md). A database that cannot be read, or one with no
 * audit rows at all, is not a verified trail, and neither is it a broken chain: a script must be able to
 * tell "tampered" from "wrong DATABASE_URL".
 */
export const VERIFY_EXIT = {
  /** Every chain verifies (and every witnessed position). */
  ok: 0,
  /**
   * A chain is broken, a retention anchor is suspicious, a witnessed position does not verify, or (with
   * `--witnesses`) a chain is unwitnessed: the report names the row, anchor or chain.
   */
  broken: 1,
  /** Bad usage (commander) or configuration. */
  usage: 2,
  /** The database has no audit rows: nothing was verified. */
  nothingVerified: 3,
  /**
   * The database could not be read: unreachable, does not exist, refused the login, not a killswitch database;
   * with `--file`, the file could not be read.
   */
  database: 4,
  /** `--file`: the file ends inside a row (a cut download) and nothing else is wrong; the rows before it verify. */
  incomplete: 5,
} as const;

export interface VerifiedDatabase {
  host: string;
  database: string;
}

/** Host and database name of a Postgres URL, never its user or password. */
export function databaseOf(databaseUrl: string): VerifiedDatabase {
  try {
    const u = new URL(databaseUrl);
    return { host: u.host || 'the default host', database: decodeURIComponent(u.pathname.replace(/^\//, '')) || '(default)' };
  } catch {
    return { host: '(unparsable DATABASE_URL)', database: '(unknown)' };
  }
}

/** `database "killswitch" on db:5432`, for messages. */
export function describeDatabase(databaseUrl: string): string {
  const d = databaseOf(databaseUrl);
  return `database "${d.database}" on ${d.host}`;
}

/**
 * No chain to walk and no witnessed position confirmed: nothing was verified. A database whose chains
 * retention removed whole still confirms the positions witnessed in them (RETENTION), so that is a result.
 */
export function nothingVerified(report: VerifyReport): boolean {
  return report.chains === 0 && !report.witnesses.some((w) => w.result === 'ok' || w.result === 'retention');
}

export function formatVerifyReport(report: VerifyReport, databaseUrl?: string, source = 'DATABASE_URL'): string {
  const badWitnesses = report.witnesses.filter((w) => w.result !== 'ok' && w.result !== 'retention').length;
  const parts = [
    nothingVerified(report)
      ? 'NOTHING VERIFIED: the database has no audit rows. A control plane that has run writes them (every decision, every operator action): this is not the database your control plane writes to (set DATABASE_URL to it), or every audit row was removed'
      : '',
    report.broken.length > 0 ? `BROKEN (${new Set(report.broken.map((b) => b.replica_id)).size} chains, ${report.broken_rows} rows)` : '',
    report.suspicious.length > 0 ? `SUSPICIOUS (${report.suspicious.length} retention anchors)` : '',
    report.unwitnessed.length > 0 ? `UNWITNESSED (${report.unwitnessed.length} chains)` : '',
    badWitnesses > 0 ? `${badWitnesses} witnessed positions do not verify` : '',
  ].filter(Boolean);
  const verdict = parts.length > 0 ? parts.join('; ') : report.chains === 0 ? 'OK (no rows left: every witnessed position was removed by retention)' : 'OK';
  const lines = databaseUrl === undefined ? [] : [`audit verify: ${describeDatabase(databaseUrl)} (${source})`];
  lines.push(`audit verify: ${report.rows} rows in ${report.chains} chains: ${verdict}`);
  for (const b of report.broken) lines.push(`  broken row id=${b.id ?? '(missing)'} replica_id=${b.replica_id} seq=${b.seq}: ${b.reason}`);
  for (const a of report.suspicious) lines.push(`  SUSPICIOUS retention anchor replica_id=${a.replica_id} seq=${a.seq} cut_before=${a.cut_before}: ${a.reason}`);
  for (const u of report.unwitnessed) {
    lines.push(
      `  UNWITNESSED chain replica_id=${u.replica_id} seq ${u.first_seq}..${u.last_seq} (${u.rows} rows, last at ${u.last_ts ?? 'unknown'}): no witness names it: it was never in a shipped head log (planted in the database, or newer than the log given)`,
    );
  }
  for (const w of report.witnesses) lines.push(`  witnessed ${w.replica_id}:${w.seq}: ${w.result.toUpperCase()}: ${w.detail}`);
  if (report.open.length > 0) {
    // Not a failure: a live replica's chain is open, and so is one whose process was killed.
    lines.push(
      `  ${report.open.length} chains have no CHAIN_END (being written, or their process stopped without shutting down): rows appended to their end are found only with a witness (--witnesses):`,
    );
    for (const o of report.open.slice(0, 20)) lines.push(`    open chain replica_id=${o.replica_id} ends at seq ${o.last_seq} (${o.last_ts})`);
    if (report.open.length > 20) lines.push(`    and ${report.open.length - 20} more (--json lists them all)`);
  }
  return `${lines.join('\n')}\n`;
}

/** Why the database could not be verified, in the operator's words (pg's SQLSTATE and socket codes). */
function databaseFailure(err: unknown, databaseUrl: string, source: string): string {
  const db = `${describeDatabase(databaseUrl)}${source === 'DATABASE_URL' ? '' : ` (${source})`}`;
  const code = (err as { code?: string }).code;
  const message = (err as Error).message ?? String(err);
  if (code === '3D000') return `the ${db} named by DATABASE_URL does not exist: set DATABASE_URL to your control plane's database`;
  if (code === '42P01') return `the ${db} named by DATABASE_URL has no audit trail (no audit_events table): it is not a killswitch database; set DATABASE_URL to your control plane's database`;
  if (code === '28P01' || code === '28000') return `the ${db} named by DATABASE_URL refused the login: ${message}`;
  return `cannot read the ${db} named by DATABASE_URL: ${message}`;
}

/** The positions of `--expect` and of the `--witnesses` file; a usage error when the file has none or cannot be read. */
export async function witnessesOf(opts: { expect?: Witness[]; witnesses?: string }): Promise<{ witnesses: Witness[] } | { error: string }> {
  const witnesses = opts.expect ?? [];
  if (opts.witnesses === undefined) return { witnesses };
  let text: string;
  try {
    text = await readFile(opts.witnesses, 'utf8');
  } catch (err) {
    return { error: `audit verify: cannot read the witness file ${opts.witnesses}: ${(err as Error).message}\n` };
  }
  const logged = parseWitnessFile(text);
  if (logged.length === 0) return { error: `audit verify: ${opts.witnesses} holds no chain position: give it the "audit chain head" log lines (or replica_id:seq:hash lines)\n` };
  return { witnesses: [...witnesses, ...logged] };
}

/**
 * Walks every chain of the database DATABASE_URL names. Exit codes: VERIFY_EXIT. The output (text or
 * JSON) names the host and database verified, never the user or password.
 */
export async function auditVerify(
  config: Config,
  opts: { json?: boolean; expect?: Witness[]; witnesses?: string } = {},
): Promise<{ code: number; output: string; error?: string }> {
  const given = await witnessesOf(opts);
  if ('error' in given) return { code: VERIFY_EXIT.usage, output: '', error: given.error };
  const witnesses = given.witnesses;
  const source = settingSource('DATABASE_URL');
  // Walks whole chains and counts whole months: no client-side timeout, unlike the control plane's pool.
  const pool = createPool(config.databaseUrl, { max: 1, queryTimeoutMillis: UNBOUNDED_QUERY_TIMEOUT_MS });
  try {
    let report: VerifyReport;
    try {
      report = await verifyChain(pool, { retentionDays: config.auditRetentionDays, witnesses, requireWitness: opts.witnesses !== undefined });
    } catch (err) {
      return { code: VERIFY_EXIT.database, output: '', error: `audit verify: NOTHING VERIFIED: ${databaseFailure(err, config.databaseUrl, source)}\n` };
    }
    // Nothing verified wins over a witnessed position reported missing: with no rows and no anchor to
    // confirm one, the likely cause is another database than the control plane's, which exit 1 ("tampered")
    // would misstate; the report still lists the position as MISSING.
    const code = nothingVerified(report) ? VERIFY_EXIT.nothingVerified : report.ok ? VERIFY_EXIT.ok : VERIFY_EXIT.broken;
    const output = opts.json ? `${JSON.stringify({ database: databaseOf(config.databaseUrl), verified: code === VERIFY_EXIT.ok, ...report }, null, 2)}\n` : formatVerifyReport(report, config.databaseUrl, source);
    return { code, output };
  } finally {
    await pool.end();
  }
}

/**
 * A CLI command that writes audit rows starts a chain of its own run, whose head only it knows: written on
 * stderr as the control plane's `audit chain head` line and kept with the shipped logs, it spares that chain
 * from being reported UNWITNESSED (as if planted) by `audit verify --witnesses`. False when nothing reached
 * Postgres (no row, or rows only in the spool).
 */
export function printChainHead(audit: AuditService): boolean {
  const head = audit.writer.durableHead;
  if (head) logChainHead(pino(loggerOptions('info'), process.stderr), head);
  return head !== undefined;
}

/** `killswitch audit retention` refused, or its database failed: the message for stderr and the exit code (docs/audit.md). */
export class RetentionFailure extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
  }
}

/**
 * `--days` shorter than AUDIT_RETENTION_DAYS removes rows the installation's retention keeps, for good, and
 * `audit verify` then reports the anchors SUSPICIOUS unless it is given the same days: it needs `--yes`
 * (there is no prompt; scripts and cron jobs run it too). A run that keeps at least as much needs nothing.
 */
export function retentionConfirmation(config: Config, opts: { days?: number; dryRun?: boolean; yes?: boolean }): string | undefined {
  if (opts.dryRun || opts.yes || opts.days === undefined || opts.days >= config.auditRetentionDays) return undefined;
  return (
    `--days ${opts.days} is shorter than AUDIT_RETENTION_DAYS=${config.auditRetentionDays} (${settingSource('AUDIT_RETENTION_DAYS')}): it removes for good the audit rows of the months before ` +
    `${retentionCutoff(new Date(), opts.days).toISOString()}, which this installation's retention keeps, and \`audit verify\` then reports its anchors SUSPICIOUS unless run with AUDIT_RETENTION_DAYS=${opts.days}. ` +
    `Count them first with \`killswitch audit retention --days ${opts.days} --dry-run\`, then add --yes to remove them. Nothing was removed.`
  );
}

export async function auditRetention(config: Config, opts: { days?: number; dryRun?: boolean; yes?: boolean } = {}): Promise<RetentionResult | { cutoff: string; rows_older: number; note: string }> {
  const refused = retentionConfirmation(config, opts);
  if (refused) throw new RetentionFailure(refused, 2);
  const cfg = opts.days ? { ...config, auditRetentionDays: opts.days } : config;
  try {
    return await applyRetention(cfg, opts);
  } catch (err) {
    if (err instanceof RetentionFailure) throw err;
    // Which database, from which setting (it printed `connect ECONNREFUSED 127.0.0.1:5432` alone).
    throw new RetentionFailure(databaseFailure(err, cfg.databaseUrl, settingSource('DATABASE_URL')), 1);
  }
}

async function applyRetention(cfg: Config, opts: { dryRun?: boolean }): Promise<RetentionResult | { cutoff: string; rows_older: number; note: string }> {
  const pool = createPool(cfg.databaseUrl, { max: 2, queryTimeoutMillis: UNBOUNDED_QUERY_TIMEOUT_MS });
  try {
    if (opts.dryRun) {
      const now = new Date();
      const cutoff = retentionCutoff(now, cfg.auditRetentionDays);
      const exact = new Date(now.getTime() - cfg.auditRetentionDays * 86_400_000).toISOString();
      return {
        cutoff: cutoff.toISOString(),
        rows_older: await auditStore.countOlderThan(pool, cutoff),
        // The verifier's question: why 1 September and not now - 90 days.
        note: `retention removes whole months: the cut is the start of the UTC month that holds now - ${cfg.auditRetentionDays} days (${exact}), so no row younger than ${cfg.auditRetentionDays} days goes (docs/audit.md, "Retention")`,
      };
    }
    const log = pino(loggerOptions('warn'), process.stderr);
    const audit = await AuditService.start(cfg, pool, log, { retentionJob: false, headLog: false });
    let result: RetentionResult;
    try {
      result = await audit.applyRetention(new Date(), 'cli');
    } finally {
      await audit.close();
    }
    printChainHead(audit);
    return result;
  } finally {
    await pool.end();
  }
}
