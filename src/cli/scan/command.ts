import { homedir } from 'node:os';
import type { Config } from '../../config.js';
import { renderMarkdownReport, renderTable } from './render.js';
import { type FailOn, runScan } from './scan.js';
import { scanOutputJsonSchema } from './schema.js';

// `killswitch scan [paths...]`: output format and exit code (its options are declared in ../main.ts, which
// loads this module only when the command runs). Exit codes: 0 nothing at or above --fail-on, 1 a finding
// at or above it, 2 bad input (unreadable or invalid file or policy).

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
