import { pino } from 'pino';
import type { Config } from '../config.js';
import { loggerOptions } from '../log.js';
import { embeddedOptionsFromConfig, startEmbeddedUnleash } from './embedded.js';
import { FLAGS_DIR, flagNamesFromPolicyFile, syncFromConfig, unleashApiUrl, webhookUrl } from './setup.js';
import { describeSyncReport } from './sync.js';

// The `killswitch flags sync` and `killswitch unleash` commands.

export interface FlagsSyncOptions {
  policy?: string;
  dir?: string;
  webhook?: boolean;
}

/** `killswitch flags sync`: prints what it did; exit code 1 when Unleash cannot be reached. */
export async function flagsSync(config: Config, opts: FlagsSyncOptions): Promise<number> {
  const apiUrl = unleashApiUrl(config);
  const names = await flagNamesFromPolicyFile(opts.policy ?? config.policyFile);
  try {
    const report = await syncFromConfig(config, { names, flagsDir: opts.dir ?? FLAGS_DIR, apiUrl, webhookUrl: opts.webhook === false ? null : webhookUrl(config) });
    for (const line of describeSyncReport(report, config.unleashEnvironment)) process.stdout.write(`${line}\n`);
    if (report.webhook !== 'skipped') process.stdout.write(`webhook: ${webhookUrl(config)}\n`);
    return 0;
  } catch (err) {
    const cause = (err as Error & { cause?: { code?: string } }).cause?.code;
    const hint = cause === 'ECONNREFUSED' ? ` (nothing answers at ${apiUrl}: start Unleash with "npm run unleash:dev" or "npm start", or set UNLEASH_URL)` : '';
    process.stderr.write(`killswitch: flags sync failed: ${(err as Error).message}${hint}\n`);
    return 1;
  }
}

/** `killswitch unleash`: the embedded Unleash alone, with the flags synced, until Ctrl-C. */
export async function runUnleash(config: Config, opts: { sync: boolean; policy?: string }): Promise<void> {
  const log = pino(loggerOptions(config.logLevel));
  if (config.unleashUrl) throw new Error(`UNLEASH_URL is set (${config.unleashUrl}): nothing to start`);
  const embedded = await startEmbeddedUnleash(embeddedOptionsFromConfig(config), log);
  process.stdout.write(
    `\n  Unleash is running: ${embedded.uiUrl}\n  Log in as admin with UNLEASH_ADMIN_PASSWORD (default unleash4all).\n  API for the control plane: ${embedded.apiUrl}\n\n`,
  );
  if (opts.sync) {
    process.exitCode = await flagsSync({ ...config, unleashUrl: embedded.apiUrl }, opts.policy ? { policy: opts.policy } : {});
  }
  const stop = async () => {
    await embedded.stop();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
  const code = await embedded.exited;
  process.stderr.write(`killswitch: Unleash exited (code ${code})\n`);
  process.exit(code ?? 1);
}
