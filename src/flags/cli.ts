import { pino } from 'pino';
import { type Config, PUBLISHED_WEBHOOK_SECRET } from '../config.js';
import { loggerOptions } from '../log.js';
import { exitCodeOf, stopSignalHandler } from '../signals.js';
import { type EmbeddedUnleash, embeddedOptionsFromConfig, startEmbeddedUnleash } from './embedded.js';
import { FLAGS_DIR, flagNamesFromPolicyFile, syncFromConfig, unleashApiUrl, webhookUrl } from './setup.js';
import { describeSyncReport, type WebhookOutcome } from './sync.js';
import { webhookSecretForShell } from './webhook-secret.js';

// The `killswitch flags sync` and `killswitch unleash` commands.

export interface FlagsSyncOptions {
  policy?: string;
  dir?: string;
  webhook?: boolean;
  /** The receiver URL to register instead of the one PUBLIC_URL/HOST/PORT give. */
  webhookUrl?: string;
  /** Change an existing webhook whose URL or secret differs (otherwise only reported). */
  replaceWebhook?: boolean;
}

/** `--webhook-url`: a full receiver URL, or the control plane's base URL (as PUBLIC_URL). */
export function receiverUrl(given: string): string {
  const url = new URL(given);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`--webhook-url must be an http(s) URL, e.g. http://killswitch.internal:8080 (got ${given})`);
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/v1/flags/events';
  return url.href;
}

/** What the operator reads when the webhook in Unleash was left alone: what differs, and how to change it. */
export function keptWebhookWarning(outcome: WebhookOutcome, computedFrom: string): string[] {
  const kept = outcome.kept;
  if (outcome.result !== 'kept' || !kept) return [];
  const lines = ['killswitch: WARNING: the Unleash webhook was NOT changed.'];
  if (kept.reason === 'others') {
    lines.push(`  Unleash has killswitch webhooks only for other URLs and secrets (listed above), none for ${outcome.url} (${computedFrom}).`);
  } else if (kept.reason === 'unrecorded') {
    lines.push('  Unleash has a killswitch webhook registered by an older flags sync; its URL and secret cannot be read back (Unleash masks them).');
    lines.push(`  The control plane records them at its next start. This shell would register ${outcome.url} (${computedFrom}).`);
  } else {
    lines.push(`  Unleash posts flag events to ${kept.url} (as registered by the control plane at its start, or by flags sync).`);
    if (kept.urlDiffers) lines.push(`  This shell computes ${outcome.url} (${computedFrom}).`);
    if (outcome.publishedSecret) {
      lines.push(`  The secret registered there is UNLEASH_WEBHOOK_SECRET's old published default (${PUBLISHED_WEBHOOK_SECRET}): the control plane refuses it (401), so flag`);
      lines.push('  events from Unleash do not reach it (changes still arrive by polling), and anyone who knew the default could forge them before. Replace it (below).');
    } else if (kept.secretDiffers) {
      lines.push("  The secret registered there is not the control plane's (UNLEASH_WEBHOOK_SECRET, or the one stored in its database) as this shell reads it.");
    }
    if (!outcome.publishedSecret) lines.push(`  If the control plane listens at ${kept.url} with that secret, there is nothing to do: it registers its webhook itself at every start.`);
  }
  lines.push(`  To make Unleash post to ${outcome.url} with this shell's webhook secret instead: killswitch flags sync --replace-webhook --webhook-url ${outcome.url}`);
  return lines;
}

/** `killswitch flags sync`: prints what it did; exit code 1 when Unleash cannot be reached. */
export async function flagsSync(config: Config, opts: FlagsSyncOptions, stopping?: AbortSignal): Promise<number> {
  const apiUrl = unleashApiUrl(config);
  const names = await flagNamesFromPolicyFile(opts.policy ?? config.policyFile);
  let hook: string | null = null;
  try {
    if (opts.webhook === false && (opts.webhookUrl !== undefined || opts.replaceWebhook)) throw new Error('--no-webhook cannot be combined with --webhook-url or --replace-webhook');
    hook = opts.webhook === false ? null : opts.webhookUrl !== undefined ? receiverUrl(opts.webhookUrl) : webhookUrl(config);
  } catch (err) {
    process.stderr.write(`killswitch: ${(err as Error).message}\n`);
    return 2;
  }
  // The control plane's secret: UNLEASH_WEBHOOK_SECRET, else the one its first start stored in DATABASE_URL.
  let secret: string | undefined;
  if (hook) {
    const found = await webhookSecretForShell(config);
    if ('error' in found) {
      // Asked to change the webhook: nothing to change it to. Otherwise the flags still sync (in an incident
      // that is what matters) and the webhook is left as it is.
      if (opts.replaceWebhook || opts.webhookUrl !== undefined) {
        process.stderr.write(`killswitch: ${found.error}, so there is no secret to register: set UNLEASH_WEBHOOK_SECRET, or DATABASE_URL to the control plane's database\n`);
        return 2;
      }
      process.stderr.write(`killswitch: WARNING: the Unleash webhook was NOT registered or checked: ${found.error}. Set UNLEASH_WEBHOOK_SECRET, or DATABASE_URL to the control plane's database; the control plane also registers it at its start.\n`);
      hook = null;
    } else {
      secret = found.secret;
    }
  }
  try {
    // This shell's PUBLIC_URL/HOST/PORT and secret may not be the control plane's: only --replace-webhook
    // may change a webhook Unleash already has.
    const report = await syncFromConfig(config, {
      ...(secret ? { webhookSecret: secret } : {}),
      names,
      flagsDir: opts.dir ?? FLAGS_DIR,
      apiUrl,
      webhookUrl: hook,
      webhookMode: opts.replaceWebhook ? 'own' : 'keep',
      // The control plane's Flags page shows the registration from its Redis: a shell without it still syncs.
      record: {
        by: 'flags sync',
        onError: (err) => process.stderr.write(`killswitch: note: the webhook registration could not be recorded in Redis (REDIS_URL), so GET /v1/flags does not show it: ${err}\n`),
      },
    });
    for (const line of describeSyncReport(report, config.unleashEnvironment)) process.stdout.write(`${line}\n`);
    const from = opts.webhookUrl !== undefined ? '--webhook-url' : config.publicUrl ? 'from PUBLIC_URL' : `from HOST and PORT, PUBLIC_URL being unset`;
    for (const line of keptWebhookWarning(report.webhook, from)) process.stderr.write(`${line}\n`);
    return 0;
  } catch (err) {
    // `killswitch unleash` stopped by a signal, its Unleash with it: the stop says so, not a failed sync.
    if (stopping?.aborted) return 0;
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
  // The signal handlers go in before Unleash starts: installed after the flags sync, a SIGTERM or Ctrl-C
  // once its UI answered (`npm run unleash:dev` in a terminal, a script that waited for /health) found
  // none and ended this process by the signal's default action (npm then died by it too). A stop while
  // Unleash starts gives the start up (the child is stopped); one during the sync stops Unleash under it.
  const stopped = new AbortController();
  let phase = 'the start of Unleash, which creates its tables on a first start';
  const starting = startEmbeddedUnleash({ ...embeddedOptionsFromConfig(config), signal: stopped.signal }, log);
  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    const at = Date.now();
    stopped.abort();
    await starting.then(
      (embedded) => embedded.stop(),
      () => {},
    );
    log.info({ signal, phase, ms: Date.now() - at }, `stopped during ${phase} (${signal}): Unleash has exited`);
    process.exit(0);
  };
  // A Ctrl-C under npm arrives twice (the terminal's SIGINT, then npm's copy): the copy is only logged,
  // as by `killswitch start` (src/signals.ts); with `process.once` it ended this process by the default
  // action. Another signal later exits at once.
  const onSignal = stopSignalHandler(
    log,
    (signal) => void stop(signal),
    (signal) => process.exit(exitCodeOf(signal)),
  );
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let embedded: EmbeddedUnleash;
  try {
    embedded = await starting;
  } catch (err) {
    if (stopping) return; // stop() exits once the child is gone
    throw err;
  }
  process.stdout.write(
    `\n  Unleash is running: ${embedded.uiUrl}\n  Log in as admin with UNLEASH_ADMIN_PASSWORD (default unleash4all).\n  API for the control plane: ${embedded.apiUrl}\n\n`,
  );
  if (opts.sync) {
    phase = 'the flags sync';
    process.exitCode = await flagsSync({ ...config, unleashUrl: embedded.apiUrl }, opts.policy ? { policy: opts.policy } : {}, stopped.signal);
  }
  phase = 'the run';
  const code = await embedded.exited;
  if (stopping) return; // stopped by stop(), which exits 0
  process.stderr.write(`killswitch: Unleash exited (code ${code})\n`);
  process.exit(code ?? 1);
}
