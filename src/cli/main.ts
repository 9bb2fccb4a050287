import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { parseWitness, type Witness } from '../audit/chain.js';
import { type Config, ConfigError, checkStartConfig, configWarnings, loadConfig, settingSource } from '../config.js';
import type { AuditSearchOptions } from './audit-search.js';
import type { EnvGateOptions } from './env-gate.js';
import { CliFailure, parseDuration, parseReason, registerKillCommands, run } from './kill.js';
import type { OperatorRole, OperatorsCreateOptions } from './operators.js';
import type { ScanCliOptions } from './scan/command.js';
import type { FailOn } from './scan/scan.js';
import { refuseRepeatedOptions } from './usage.js';

// Start-up time is part of the break-glass path: `killswitch kill` must not wait for the whole control
// plane to load. This module imports only commander, the configuration and the light `kill | kills |
// unkill` module; every other command imports its implementation in its action (docs/performance.md,
// "CLI start-up"). Keep it that way: a static import of an implementation here costs every command.

/**
 * `values`, which tsc checks name every member of T: the choices of an option can be listed here without
 * loading the module that defines T (only `import type` of it, which costs nothing at run time).
 */
const allOf =
  <T extends string>() =>
  <const V extends readonly T[]>(values: V & (Exclude<T, V[number]> extends never ? unknown : { missing: Exclude<T, V[number]> })): V =>
    values;
const OPERATOR_ROLES = allOf<OperatorRole>()(['viewer', 'operator', 'owner']);
const FAIL_ON_VALUES = allOf<FailOn>()(['low', 'medium', 'high', 'critical', 'none']);

// A reader that stops early (`killswitch kills --all | head -3`) closes the pipe: that ends the output,
// quietly, as for any shell tool; it is not an error of the command (it printed an EPIPE stack, exit 1).
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

function reportConfigError(err: ConfigError): never {
  process.stderr.write(`killswitch: configuration error: ${err.message}\n`);
  process.exit(2);
}

function config() {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) reportConfigError(err);
    throw err;
  }
}

/** A policy file that cannot be used: its errors as `killswitch policy check` prints them, exit 2. */
function reportPolicyErrors(file: string, lines: string[], count: number): never {
  process.stderr.write(
    `killswitch: invalid policy file ${file} (POLICY_FILE), ${count} error${count === 1 ? '' : 's'}; fix it (\`killswitch policy check ${file}\`):\n${lines.join('\n')}\n`,
  );
  process.exit(2);
}

/**
 * What `killswitch start` refuses before anything connects (no embedded Unleash, flags sync or worker is
 * started for a configuration that cannot run), and what `config check` reports beyond loadConfig: the
 * settings that only a starting control plane depends on, and a POLICY_FILE that is not there or not a
 * valid policy. Prints the warnings (values accepted but probably wrong) on stderr; returns the policy
 * file's warnings (the start logs them when it loads the file).
 */
async function checkBeforeStart(c: Config): Promise<string[]> {
  try {
    checkStartConfig(c);
    const { requirePolicyFile } = await import('../policy/store.js');
    await requirePolicyFile(c.policyFile);
  } catch (err) {
    if (err instanceof ConfigError) reportConfigError(err);
    throw err;
  }
  // Before the flags sync, which reads the same file: an invalid one is the policy's error, not the sync's.
  const { formatIssue, loadPolicyFile, policyErrorCount } = await import('../policy/index.js');
  const policy = await loadPolicyFile(c.policyFile);
  if (!policy.ok) reportPolicyErrors(c.policyFile, policy.issues.filter((i) => i.severity === 'error').map(formatIssue), policyErrorCount(policy.issues, policy.omittedErrors));
  for (const warning of configWarnings(c)) process.stderr.write(`killswitch: warning: ${warning}\n`);
  const { inertExecutionLimits } = await import('../policy/limits.js');
  const inert = policy.ok ? inertExecutionLimits(policy.policy, c.decisionMetaTtlS) : [];
  return [...policy.issues.filter((i) => i.severity === 'warning').map(formatIssue), ...inert];
}

// Usage errors (an unknown option, a bad option value, a missing argument) exit 2, as invalid input
// does everywhere in this CLI: exit 1 means what each command says (a broken chain, findings ...).
const COMMANDER_OK = new Set(['commander.helpDisplayed', 'commander.help', 'commander.version']);

/** The installed version (package.json two levels up, from src/cli or a build's dist/cli). */
function ownVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * A worker of WORKERS > 1 handles signals from its first moment: a Ctrl-C reaches every process of the
 * group, and its primary stops it with SIGTERM, both possibly while it is still starting. Ended there by
 * the default action (by a signal), it made its primary exit 1 instead of 0. SIGINT is left to the primary
 * (which turns it into one SIGTERM); a SIGTERM is kept until the start is done (a second one exits at
 * once). handOver() stops keeping it and says whether one came.
 */
function workerSignalsWhileStarting(): { handOver: () => boolean } {
  let stopRequested = false;
  const onTerm = () => {
    if (stopRequested) process.exit(143);
    stopRequested = true;
  };
  process.on('SIGINT', () => {});
  process.on('SIGTERM', onTerm);
  return {
    handOver: () => {
      process.off('SIGTERM', onTerm);
      return stopRequested;
    },
  };
}

/** The start's own signal handlers, in place until the drain handlers take over (src/start-stop.ts). */
async function startStop(c: Config) {
  const [{ pino }, { loggerOptions }, { StartStop }] = await Promise.all([import('pino'), import('../log.js'), import('../start-stop.js')]);
  return new StartStop(pino(loggerOptions(c.logLevel)), 'the check of the configuration and the policy file').install();
}

const program = new Command()
  .name('killswitch')
  .version(ownVersion(), '-V, --version', 'print the version')
  .description('Kill switch and control plane for MCP: decide, limit and audit every AI agent tool call.')
  .showHelpAfterError()
  .exitOverride((err) => {
    // A command named without its subcommand (`killswitch audit`, `killswitch` alone) prints the help as
    // an error, which commander ends with exit 1: a usage error, 2 (exit 1 of `audit` means a broken chain).
    process.exit(COMMANDER_OK.has(err.code) && err.exitCode === 0 ? 0 : 2);
  });

program
  .command('start')
  .description('Run the control plane (migrations, decision API, admin API).')
  .action(async () => {
    const starting = cluster.isWorker ? workerSignalsWhileStarting() : undefined;
    const c = config();
    const { becomeWorker, isWorker, runPrimary, workerCount } = await import('../cluster.js');
    // A signal from here until the drain handlers take over names the phase it stopped, stops the embedded
    // Unleash, and exits 130 or 143 (src/start-stop.ts). A worker has its own (workerSignalsWhileStarting).
    const stop = starting ? undefined : await startStop(c);
    // A worker's primary has checked already.
    if (!isWorker()) await checkBeforeStart(c);
    const { startServer, stopOnSignals, unleashStartError } = await import('../server.js');
    const { logCrashes } = await import('../log.js');
    const { StartStopped } = await import('../start-stop.js');
    // Whatever the start throws once a signal has stopped it (the Unleash start given up, a pool closed
    // under a query) is that stop's doing: the stop says so and exits; the start waits for it.
    const stoppedMeanwhile = (err: unknown) => err instanceof StartStopped || stop?.stopping === true;
    const waitForStop = () => new Promise<never>(() => {});
    if (!isWorker() && workerCount(c) > 1) {
      // As startServer does: a secret the database would refuse stops the start before the flags sync.
      const { precheckHashSecret } = await import('../app.js');
      stop?.enter('the check of TOKEN_HASH_SECRET against the database');
      await precheckHashSecret(c).catch((err: unknown) => {
        if (err instanceof ConfigError) reportConfigError(err);
        throw err;
      });
      const code = await runPrimary(c, stop).catch((err: unknown) => (stoppedMeanwhile(err) ? waitForStop() : Promise.reject(unleashStartError(c, err))));
      process.exit(code);
    }
    let app: Awaited<ReturnType<typeof startServer>>;
    try {
      app = await startServer(c, {
        worker: isWorker(),
        ...(stop ? { stop } : {}),
        // From here on a crash is one fatal JSON line in the log too (errors before it are told below). The
        // handlers go in before the port accepts anything: installed after the start returned, a signal sent
        // once /readyz answered could come first (the start still loaded a module of the bundle) and end
        // node undrained, by the signal's default action (`npm start` then dies by it too). A worker keeps
        // its SIGTERM pending until the start is done (workerSignalsWhileStarting), and hands it over below.
        beforeListen: (built) => {
          logCrashes(built.log);
          if (!starting) {
            stop?.handOver();
            stopOnSignals(built);
          }
        },
      });
    } catch (err) {
      if (stoppedMeanwhile(err)) return waitForStop();
      // Some configuration can only be checked against the database (e.g. TOKEN_HASH_SECRET's fingerprint).
      if (err instanceof ConfigError) reportConfigError(err);
      // The policy file broken since the check above (it is read again as the start loads it).
      const { PolicyFileError, formatIssue, policyErrorCount } = await import('../policy/index.js');
      if (err instanceof PolicyFileError) reportPolicyErrors(err.file, err.issues.filter((i) => i.severity === 'error').map(formatIssue), policyErrorCount(err.issues, err.omittedErrors));
      throw err;
    }
    if (starting) {
      const stop = stopOnSignals(app, undefined, ['SIGTERM']);
      // Stopped while starting: shut down as a started one does (never ready, so the primary sends it nothing).
      if (starting.handOver()) stop('SIGTERM');
      else becomeWorker(app);
    }
  });

const operators = program.command('operators').description('Operator keys (direct database access, for bootstrap and recovery).');
operators
  .command('create')
  .description("Create an operator key in the control plane's database (DATABASE_URL, with its TOKEN_HASH_SECRET) and print it once.")
  .requiredOption('--name <name>', 'who or what the key is for')
  .option('--role <role>', `required: ${OPERATOR_ROLES.join(', ')}`)
  .option('--project <id...>', 'limit the key to these projects')
  .addHelpText('after', '\nExit codes: 0 key printed; 1 the database failed; 2 bad usage, or no database, schema or TOKEN_HASH_SECRET to make a working key with (docs/cli.md).')
  .action(async (opts: OperatorsCreateOptions) => {
    const { operatorRole, operatorsCreate } = await import('./operators.js');
    try {
      // The role first: a wrong command needs no database.
      operatorRole(opts.role);
      const key = await operatorsCreate(config(), opts);
      process.stdout.write(`${key}\n`);
    } catch (err) {
      if (!(err instanceof CliFailure)) throw err;
      process.stderr.write(`killswitch: ${err.message}\n`);
      process.exitCode = err.exitCode;
    }
  });

const configCmd = program.command('config').description('Configuration.');
configCmd
  .command('check')
  .description('Validate the configuration from the environment without starting (exit 2 when invalid, as `start` would refuse it; warnings on stderr).')
  .action(async () => {
    const c = config();
    for (const warning of await checkBeforeStart(c)) process.stderr.write(`killswitch: warning: ${warning}\n`);
    process.stdout.write(`configuration ok: port ${c.port}, policy ${c.policyFile}, Unleash ${c.unleashUrl || 'embedded'}\n`);
  });

const flagsCmd = program.command('flags').description('Unleash flags.');
flagsCmd
  .command('sync')
  .description(
    'Create missing flags (on), update descriptions and untouched strategies, register the webhook when Unleash has none; never turns a flag back on, never moves an existing webhook unless --replace-webhook.',
  )
  .option('--policy <file>', 'policy file whose servers get mcp.<server>.read|write|delete (default POLICY_FILE)')
  .option('--dir <dir>', 'flag definition folder (default flags/)')
  .option('--no-webhook', 'do not register the webhook integration')
  .option('--webhook-url <url>', 'control plane URL Unleash posts flag events to (default PUBLIC_URL, else http://HOST:PORT; /v1/flags/events is added to a URL without a path)')
  .option('--replace-webhook', "point an existing webhook whose URL or secret differs at this URL and this shell's UNLEASH_WEBHOOK_SECRET")
  .action(async (opts: { policy?: string; dir?: string; webhook: boolean; webhookUrl?: string; replaceWebhook?: boolean }) => {
    const { flagsSync } = await import('../flags/cli.js');
    process.exitCode = await flagsSync(config(), opts);
  });

program
  .command('unleash')
  .description('Run the embedded Unleash alone (UI on UNLEASH_PORT) and sync the flags.')
  .option('--no-sync', 'do not run the flags sync')
  .option('--policy <file>', 'policy file for the sync (default POLICY_FILE)')
  .action(async (opts: { sync: boolean; policy?: string }) => {
    const { runUnleash } = await import('../flags/cli.js');
    await runUnleash(config(), opts);
  });

const policyCmd = program.command('policy').description('Policy file tools.');
policyCmd
  .command('check')
  .description('Validate a policy file; errors name file:line:column and the key path (exit 0 valid, 2 invalid).')
  .argument('[file]', 'policy file (YAML); default POLICY_FILE, the one the control plane loads')
  .action(async (file: string | undefined) => {
    const { policyCheck } = await import('./policy-check.js');
    if (file === undefined) {
      // Which file, and from where: POLICY_FILE's, or the default one in the working directory.
      file = config().policyFile;
      process.stderr.write(`policy check: ${file} (${settingSource('POLICY_FILE')})\n`);
    }
    process.exitCode = await policyCheck(file);
  });

const audit = program.command('audit').description('Audit trail: search it (through the API), verify the hash chains, apply retention.');
audit
  .command('verify')
  .description("Walk every hash chain of DATABASE_URL's audit trail to its end, or verify an export file offline (--file); exit 1 naming every broken row.")
  .option('--json', 'print the full report (chains, rows, broken rows, chain heads) as JSON')
  .option(
    '--expect <replica_id:seq:hash>',
    'a chain position recorded outside the database (an `audit chain head` log line, or a head of an earlier verify): it must still be there with this hash; repeatable',
    (v: string, prev: Witness[] = []) => {
      const w = parseWitness(v);
      if (!w) throw new InvalidArgumentError('expected <replica_id>:<seq>:<64 hex hash>, as in an "audit chain head" log line');
      return [...prev, w];
    },
  )
  .option(
    '--witnesses <file>',
    'the `audit chain head` log lines shipped outside the database (JSON lines, or replica_id:seq:hash lines): every chain must be named there (else UNWITNESSED, exit 1), and each chain\'s last logged position must still be there with its hash',
  )
  .option('--file <export>', 'verify an export (GET /v1/audit/export, JSON Lines or CSV, filtered or not; - for standard input) instead of the database: no DATABASE_URL needed')
  .option('--complete', 'with --file: the export had no filter but from/to, so a gap inside a chain is rows removed from the file (exit 1)')
  .addHelpText(
    'after',
    '\nReads the database DATABASE_URL names (the control plane\'s; the output names its host and database).\n' +
      'Retention anchors are judged against AUDIT_RETENTION_DAYS as this command reads it: a cut younger than that is SUSPICIOUS.\n' +
      'Exit codes: 0 every chain verifies; 1 a chain is broken, a retention anchor is suspicious, a witnessed position does not verify\n' +
      'or a chain is unwitnessed; 2 bad usage or configuration;\n' +
      '3 nothing verified: the database has no audit rows (not the control plane\'s database?); 4 the database could not be read.\n' +
      '\nWith --file <export>: each row\'s hash is checked against its content, and prev_hash links between rows of a chain\n' +
      'whose seq follow each other in the file; a filtered export has gaps, reported and not a failure (unless --complete).\n' +
      'The format (JSON Lines or CSV) is told by the content. --expect/--witnesses positions in the file must match; positions\n' +
      'the file does not hold are ABSENT, not a failure. JSON Lines is exact; CSV cannot write some values exactly (docs/audit.md).\n' +
      'Exit codes: 0 every row and link verifies; 1 a row is broken, a witnessed position does not match or a chain is unwitnessed;\n' +
      '2 bad usage; 3 nothing verified: an empty file or not an audit export; 4 the file could not be read;\n' +
      '5 the file ends inside a row (a cut download: export again), nothing else wrong.',
  )
  .action(async (opts: { json?: boolean; expect?: Witness[]; witnesses?: string; file?: string; complete?: boolean }, cmd: Command) => {
    if (opts.file !== undefined) {
      // An auditor's machine: no configuration is read, so nothing the control plane needs must be set.
      const { auditVerifyFile } = await import('../audit/verify-file-command.js');
      const { code, output, error } = await auditVerifyFile(opts.file, opts);
      process.stdout.write(output);
      if (error) process.stderr.write(error);
      process.exitCode = code;
      return;
    }
    if (opts.complete) cmd.error("error: option '--complete' is for --file <export>: a database is always read whole", { exitCode: 2, code: 'commander.invalidArgument' });
    const { auditVerify } = await import('../audit/commands.js');
    const { code, output, error } = await auditVerify(config(), opts);
    process.stdout.write(output);
    if (error) process.stderr.write(error);
    process.exitCode = code;
  });
audit
  .command('retention')
  .description('Remove raw audit rows by whole months: the months wholly older than AUDIT_RETENTION_DAYS (monthly rollups and chain anchors are kept).')
  .option('--days <n>', 'override AUDIT_RETENTION_DAYS', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number of days, at least 1');
    return n;
  })
  .option('--dry-run', 'only count the rows that would be removed (those before the start of the month that holds the cut)')
  .option('--yes', 'remove even though --days is shorter than AUDIT_RETENTION_DAYS (rows the retention in force keeps)')
  .addHelpText(
    'after',
    '\nExit codes: 0 done (the figures as JSON on stdout); 1 the database failed (the message names it and DATABASE_URL);\n' +
      '2 bad usage or configuration, or --days shorter than AUDIT_RETENTION_DAYS without --yes (nothing removed).',
  )
  .action(async (opts: { days?: number; dryRun?: boolean; yes?: boolean }) => {
    const { auditRetention, RetentionFailure } = await import('../audit/commands.js');
    try {
      process.stdout.write(`${JSON.stringify(await auditRetention(config(), opts), null, 2)}\n`);
    } catch (err) {
      if (!(err instanceof RetentionFailure)) throw err;
      process.stderr.write(`killswitch: audit retention: ${err.message}\n`);
      process.exitCode = err.exitCode;
    }
  });

audit
  .command('search')
  .description(
    'Read the audit trail through the admin API (KILLSWITCH_URL, KILLSWITCH_OPERATOR_KEY; a viewer key is enough): the newest matching rows, one line each, oldest first.',
  )
  .option('--token <id>', 'one agent token: its id, or its display prefix (mcp_rw_XFuj; revoked and expired tokens too), never the token itself')
  .option('--session <id>', 'one session (its id)')
  .option('--decision-id <id>', 'one decision: its INTENT and RESULT rows')
  .addOption(new Option('--decision <decision>', 'allowed or denied calls only').choices(['allow', 'deny']))
  .option('--code <code>', 'a decision code or halt trigger (KILL_SWITCH, PERMISSION_DENIED, SESSION_HALTED, WRITE_IN_READ_SESSION ...)')
  .option('--server <name>', 'one MCP server')
  .option('--tool <name>', 'one tool')
  .option('--kind <kind>', 'one row kind: INTENT (decisions), RESULT, ADMIN (operator actions), APPROVAL, AUTH_FAILURE ...')
  .addOption(new Option('--type <type>', 'one agent token type').choices(['ro', 'rw', 'admin']))
  .option('--project <id>', 'one project')
  .option('--actor <id>', 'one actor: an operator key id, a token id or a system part (idle-sweep, retention ...)')
  .addOption(new Option('--since <duration>', 'rows of the last 30m, 2h, 1d ... (a number and a unit s, m, h or d)').argParser(parseDuration).conflicts('from'))
  .option('--from <time>', 'rows from this moment on: 2026-12-07T03:00:00Z (with its zone), a UTC day 2026-12-07, or a duration back (2h)')
  .option('--to <time>', 'rows before this moment (same forms as --from)')
  .option('--limit <n>', 'at most this many rows, the newest (default 50, at most 5000)')
  .option('--json', 'print {control_plane, query, count, complete, events} with the rows as the API gives them (newest first); with --follow, one row a line (JSON Lines)')
  .addOption(new Option('--follow', 'then keep printing new matching rows as they are written (every 2 s) until interrupted').conflicts('to'))
  .addHelpText(
    'after',
    '\nA table by default: time, kind, decision, code, who (the token\'s display prefix, or the operator), session, server/tool or action, message.\n' +
      'Only the newest --limit rows are read: when older ones match too, stderr says so and how to narrow the search.\n' +
      'Exit codes: 0 read (rows found or none); 1 the control plane cannot be reached, refused the key (401, 403) or the read failed; 2 bad usage or configuration (nothing sent).',
  )
  .action(async (opts: AuditSearchOptions) => {
    const { auditSearch } = await import('./audit-search.js');
    await run(() => auditSearch(config(), opts, process.stdout, process.stderr));
  });

program
  .command('gateway')
  .description('Run the reference MCP gateway: upstream MCP servers from a claude_desktop_config.json-shaped file, every call decided by the control plane (docs/gateway.md).')
  .requiredOption('--config <file>', 'gateway config: mcpServers plus a killswitch section')
  .option('--http', 'serve Streamable HTTP (Bearer = agent token) instead of stdio')
  .option('--stdio', 'serve stdio (the default; with --http, serve both)')
  .option('--host <host>', 'HTTP listen address (default killswitch.http.host or 127.0.0.1)')
  .option('--port <port>', 'HTTP port (default killswitch.http.port or 8788)', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('expected a port number');
    return n;
  })
  .option('--log-level <level>', 'log level (logs go to stderr)', 'info')
  .action(async (opts: { config: string; http?: boolean; stdio?: boolean; host?: string; port?: number; logLevel: string }) => {
    const { runGateway } = await import('./gateway.js');
    const { GatewayConfigError } = await import('../gateway/config.js');
    try {
      await runGateway(opts);
    } catch (err) {
      if (err instanceof GatewayConfigError) {
        process.stderr.write(`killswitch gateway: ${err.message}\n`);
        process.exit(2);
      }
      throw err;
    }
  });

program
  .command('scan')
  .description(
    'Find MCP client configs (Claude Desktop, Cursor, VS Code, .mcp.json, mcp.json) and MCP packages in package.json; list each server with its risk and findings. Exit 0 clean, 1 a finding at or above --fail-on, 2 bad input.',
  )
  .argument('[paths...]', 'files or folders to scan (default: the current folder, plus the user-level Claude Desktop and Cursor configs)')
  .addOption(new Option('--json', 'print the result as JSON (docs/scan-output.schema.json)').conflicts('report'))
  .addOption(new Option('--report <format>', 'print the "MCP Security Report" of the MCP governance guidance').choices(['md']))
  .addOption(new Option('--fail-on <severity>', 'exit 1 when a finding is at or above this severity').choices(FAIL_ON_VALUES).default('high'))
  .option('--policy <file>', 'policy file with the approved servers (default: POLICY_FILE, skipped when it does not exist)')
  .option('--no-policy', 'do not check servers against a policy')
  .option('--user', 'also read the user-level client configs when paths are given')
  .option(
    '--max-depth <n>',
    'how deep to walk into folders',
    (value: string) => {
      if (!/^\d+$/.test(value) || Number(value) > 64) throw new InvalidArgumentError('expected a whole number from 0 to 64');
      return Number(value);
    },
    6,
  )
  .option('--print-schema', 'print the JSON schema of --json output and exit')
  .action(async (paths: string[], opts: ScanCliOptions) => {
    const { cliEnvironment, scanCommand } = await import('./scan/command.js');
    process.exitCode = await scanCommand(paths, opts, cliEnvironment(config()));
  });

program
  .command('env-gate')
  .description('Check every MCP server of the client configs against the policy for the environment in MCP_ENV (default development): exit 0 passed, 1 conflicts, 2 bad input.')
  .option('--config <file...>', "client config files to check (default: this folder's .mcp.json, mcp.json, .cursor/mcp.json, .vscode/mcp.json and the user-level Claude Desktop and Cursor configs)")
  .option('--policy <file>', 'policy file (default: POLICY_FILE)')
  .option('--environment <env>', 'environment to check (default: MCP_ENV)')
  .option('--role <role>', "check against this role's allowed servers instead of any role's")
  .action(async (opts: EnvGateOptions) => {
    const { envGate } = await import('./env-gate.js');
    const { cliEnvironment } = await import('./scan/command.js');
    const c = config();
    process.exitCode = await envGate(opts, { ...cliEnvironment(c), mcpEnv: c.mcpEnv });
  });

registerKillCommands(program, config);

program
  .command('status')
  .description('One screen for on call: readiness, the kills in force, halted sessions, open alerts, policy divergence (KILLSWITCH_URL, KILLSWITCH_OPERATOR_KEY; a viewer key is enough).')
  .option('--all', 'list every kill, halted session and open alert (and count them all), not the newest few')
  .option('--json', 'print one JSON object with all of it')
  .addHelpText(
    'after',
    '\nExit codes: 0 every read answered (whatever is killed or halted); 1 the control plane cannot be reached, or a read failed (named on stderr);\n' +
      '2 bad usage or configuration; 3 GET /readyz says the control plane is not ready (decisions fail closed).',
  )
  .action(async (opts: { all?: boolean; json?: boolean }) => {
    const { run } = await import('./kill.js');
    const { status } = await import('./status.js');
    await run(() => status(config(), opts, process.stdout, process.stderr));
  });
program
  .command('revoke')
  .description('Break glass: revoke an agent token on every replica (KILLSWITCH_URL, KILLSWITCH_OPERATOR_KEY; an operator or owner key).')
  .requiredOption('--token <id>', 'the agent token: its id, or its display prefix as the Tokens page shows it (mcp_rw_XFuj), never the token itself')
  .requiredOption('--reason <text>', 'why (stored with the token, audited, alerted)', parseReason)
  .option('--json', 'print the API answer as JSON')
  .addHelpText(
    'after',
    '\nExit codes: 0 revoked (the API confirmed it) and every replica told; 1 the control plane refused (unknown token ...) or failed; 2 bad usage or configuration;\n' +
      '3 revoked and audited, but Redis did not take the announcement: other replicas refuse the token only when their cache entry expires (revoke again to announce it again).',
  )
  .action(async (opts: { token: string; reason: string; json?: boolean }) => {
    const { revoke } = await import('./token-ops.js');
    await run(() => revoke(config(), opts, process.stdout, process.stderr));
  });

program
  .command('resume')
  .description('Lift a halt: a halted session (--session), or a halted token and all its halted sessions (--token). Audited.')
  .option('--session <id>', 'a halted session (its id)')
  .option('--token <id>', 'a halted agent token: its id, or its display prefix (mcp_rw_XFuj), never the token itself')
  .requiredOption('--reason <text>', 'why it is safe to continue (audited)', parseReason)
  .option('--json', 'print the API answer as JSON')
  .addHelpText('after', '\nExit codes: 0 resumed (the API confirmed it); 1 the control plane refused (unknown id, not halted ...) or failed; 2 bad usage or configuration.')
  .action(async (opts: { session?: string; token?: string; reason: string; json?: boolean }) => {
    const { resume } = await import('./token-ops.js');
    await run(() => resume(config(), opts, process.stdout, process.stderr));
  });

// `audit verify --expect` collects every position it is given; every other one-value option is given once.
refuseRepeatedOptions(program, new Set(['--expect']));

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`killswitch: ${(err as Error).message ?? String(err)}\n`);
  process.exit(1);
});
