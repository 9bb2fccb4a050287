import { pino } from 'pino';
import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { loggerOptions } from '../log.js';
import { type VerifyReport, verifyChain, type Witness } from './chain.js';
import { AuditService } from './service.js';
import { auditStore, type RetentionResult } from './store.js';

// `killswitch audit verify` and `killswitch audit retention`: straight to Postgres, no Redis or Unleash,
// so they work during an incident and from a cron job.

export function formatVerifyReport(report: VerifyReport): string {
  const badWitnesses = report.witnesses.filter((w) => w.result === 'mismatch' || w.result === 'missing').length;
  const verdict = report.ok ? 'OK' : [report.broken.length > 0 ? `BROKEN (${report.broken.length} chains)` : '', badWitnesses > 0 ? `${badWitnesses} witnessed positions do not verify` : ''].filter(Boolean).join('; ');
  const lines = [`audit verify: ${report.rows} rows in ${report.chains} chains: ${verdict}`];
  for (const b of report.broken) lines.push(`  broken row id=${b.id ?? '(missing)'} replica_id=${b.replica_id} seq=${b.seq}: ${b.reason}`);
  for (const w of report.witnesses) lines.push(`  witnessed ${w.replica_id}:${w.seq}: ${w.result.toUpperCase()}: ${w.detail}`);
  return `${lines.join('\n')}\n`;
}

/** Exit code 0 when every chain verifies, 1 when one is broken (the report names the row). */
export async function auditVerify(config: Config, opts: { json?: boolean; expect?: Witness[] } = {}): Promise<{ code: number; output: string }> {
  const pool = createPool(config.databaseUrl, { max: 1 });
  try {
    const report = await verifyChain(pool, opts.expect ?? []);
    return { code: report.ok ? 0 : 1, output: opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatVerifyReport(report) };
  } finally {
    await pool.end();
  }
}

export async function auditRetention(config: Config, opts: { days?: number; dryRun?: boolean } = {}): Promise<RetentionResult | { cutoff: string; rows_older: number }> {
  const cfg = opts.days ? { ...config, auditRetentionDays: opts.days } : config;
  const pool = createPool(cfg.databaseUrl, { max: 2 });
  try {
    if (opts.dryRun) {
      const cutoff = new Date(Date.now() - cfg.auditRetentionDays * 86_400_000);
      return { cutoff: cutoff.toISOString(), rows_older: await auditStore.countOlderThan(pool, cutoff) };
    }
    const log = pino(loggerOptions('warn'), process.stderr);
    const audit = await AuditService.start(cfg, pool, log, { retentionJob: false, headLog: false });
    try {
      return await audit.applyRetention(new Date(), 'cli');
    } finally {
      await audit.close();
    }
  } finally {
    await pool.end();
  }
}
