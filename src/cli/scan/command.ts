import { homedir } from 'node:os';
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { Config } from '../../config.js';
import { renderMarkdownReport, renderTable } from './render.js';
import { FAIL_ON_VALUES, type FailOn, runScan } from './scan.js';
import { scanOutputJsonSchema } from './schema.js';

// `killswitch scan [paths...]`: options, output format and exit code. Exit codes: 0 nothing at or
// above --fail-on, 1 a finding at or above it, 2 bad input (unreadable or invalid file or policy).

/** What the command reads from its surroundings; tests pass their own. */
export interface CliEnvironment {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  cwd: string;
  home: string;
  platform: NodeJS.Platform;
  appData: string;
  /** The configured policy file (POLICY_FILE). */
  policyFile: string;
}

export function cliEnvironment(config: Config): CliEnvironment {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    cwd: process.cwd(),
    home: homedir(),
    platform: process.platform,
    appData: config.appdata,
    policyFile: config.policyFile,
  };
}

export interface ScanCliOptions {
  json?: boolean;
  report?: string;
  failOn?: string;
  /** A file, false for --no-policy, undefined for the configured one. */
  policy?: string | false;
  user?: boolean;
  maxDepth?: number;
  printSchema?: boolean;
}

export async function scanCommand(paths: readonly string[], opts: ScanCliOptions, env: CliEnvironment): Promise<number> {
  if (opts.printSchema) {
    env.stdout.write(`${JSON.stringify(scanOutputJsonSchema(), null, 2)}\n`);
    return 0;
  }
  const failOn = (opts.failOn ?? 'high') as FailOn;
  const policy = opts.policy === false ? undefined : opts.policy !== undefined ? { file: opts.policy, required: true } : { file: env.policyFile, required: false };
  const result = await runScan({
    paths,
    includeUserConfigs: opts.user === true,
    cwd: env.cwd,
    home: env.home,
    platform: env.platform,
    appData: env.appData,
    policy,
    failOn,
    maxDepth: opts.maxDepth ?? 6,
  });
  for (const w of result.warnings) env.stderr.write(`killswitch scan: ${w}\n`);
  for (const e of result.output.errors) env.stderr.write(`${e.file}:${e.line}:${e.column}: ${e.message}\n`);
  if (opts.json) env.stdout.write(`${JSON.stringify(result.output, null, 2)}\n`);
  else if (opts.report === 'md') env.stdout.write(renderMarkdownReport(result.output));
  else env.stdout.write(renderTable(result.output));
  return result.output.summary.exit_code;
}

function depth(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 64) throw new InvalidArgumentError('expected a whole number from 0 to 64');
  return Number(value);
}

export function registerScanCommand(program: Command, config: () => Config): void {
  program
    .command('scan')
    .description(
      'Find MCP client configs (Claude Desktop, Cursor, VS Code, .mcp.json, mcp.json) and MCP packages in package.json; list each server with its risk and findings. Exit 0 clean, 1 a finding at or above --fail-on, 2 bad input.',
    )
    .argument('[paths...]', 'files or folders to scan (default: the current folder, plus the user-level Claude Desktop and Cursor configs)')
    .addOption(new Option('--json', 'print the result as JSON (docs/scan-output.schema.json)').conflicts('report'))
    .addOption(new Option('--report <format>', 'print seed 002\'s "MCP Security Report"').choices(['md']))
    .addOption(new Option('--fail-on <severity>', 'exit 1 when a finding is at or above this severity').choices([...FAIL_ON_VALUES]).default('high'))
    .option('--policy <file>', 'policy file with the approved servers (default: POLICY_FILE, skipped when it does not exist)')
    .option('--no-policy', 'do not check servers against a policy')
    .option('--user', 'also read the user-level client configs when paths are given')
    .option('--max-depth <n>', 'how deep to walk into folders', depth, 6)
    .option('--print-schema', 'print the JSON schema of --json output and exit')
    .action(async (paths: string[], opts: ScanCliOptions) => {
      process.exitCode = await scanCommand(paths, opts, cliEnvironment(config()));
    });
}
