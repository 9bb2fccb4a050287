import { realpath, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { DEFAULT_ENVIRONMENTS } from '../../policy/defaults.js';
import { type CompiledPolicy, loadPolicyFile } from '../../policy/index.js';
import { type AnalyzedServer, analyzePackage, analyzeServer } from './analyze.js';
import { discoverFiles } from './discover.js';
import { gatewayEntryOf } from './gateway.js';
import { type Location, type UserLocationOptions, userConfigLocations } from './locations.js';
import { parseConfigFile } from './parse.js';
import { type Finding, type InputError, SCAN_SCHEMA_VERSION, type ScannedFile, type ScanOutput, type Severity, severityRank } from './schema.js';

// `killswitch scan`: discovery, analysis, and the one output object every format is rendered from.

export type FailOn = Severity | 'none';

export interface PolicySource {
  file: string;
  /** Given explicitly: a missing file is an error. Otherwise (the configured default) it is skipped. */
  required: boolean;
}

export interface ScanOptions extends UserLocationOptions {
  /** Files and folders to scan; empty: the working directory. */
  paths: readonly string[];
  /** Also read the user-level client configs (always when no paths are given). */
  includeUserConfigs: boolean;
  cwd: string;
  policy: PolicySource | undefined;
  failOn: FailOn;
  maxDepth: number;
  now?: Date;
}

export interface ScanResult {
  output: ScanOutput;
  /** The analysed servers, with what env-gate needs beyond the output. */
  analyzed: AnalyzedServer[];
  policy: CompiledPolicy | undefined;
  /** Notes for stderr that do not change the exit code. */
  warnings: string[];
}

export type PolicyLoad = { policy: CompiledPolicy | undefined; errors: InputError[]; warnings: string[] };

/** Reads the policy file; problems become input errors with line:column. */
export async function readPolicy(source: PolicySource | undefined): Promise<PolicyLoad> {
  if (!source) return { policy: undefined, errors: [], warnings: [] };
  if (!source.required && !(await stat(source.file).catch(() => undefined))) {
    return { policy: undefined, errors: [], warnings: [`no policy file at ${source.file}: servers are not checked against an approved list (use --policy FILE)`] };
  }
  const result = await loadPolicyFile(source.file);
  if (!result.ok) {
    const errors = result.issues
      .filter((i) => i.severity === 'error')
      .map((i) => ({ file: i.file, line: i.line, column: i.column, message: i.path ? `${i.path}: ${i.message}` : i.message }));
    return { policy: undefined, errors, warnings: [] };
  }
  return { policy: result.policy, errors: [], warnings: [] };
}

/** Production patterns: every environment's forbidden patterns in the policy, else the defaults. */
export function productionPatternsOf(policy: CompiledPolicy | undefined): Set<string> {
  const out = new Set<string>();
  if (policy) for (const rules of Object.values(policy.environments)) for (const p of rules.forbiddenPatterns) out.add(p);
  else for (const rules of Object.values(DEFAULT_ENVIRONMENTS)) for (const p of rules.forbiddenPatterns) out.add(p);
  return out;
}

export function displayPath(path: string, cwd: string): string {
  const rel = relative(cwd, path);
  return rel && !rel.startsWith(`..${sep}`) && rel !== '..' && !rel.startsWith(sep) && !/^[A-Za-z]:/.test(rel) ? rel : path;
}

function bySeverity(): Record<Severity, number> {
  return { critical: 0, high: 0, medium: 0, low: 0 };
}

export function exitCodeFor(errors: readonly InputError[], findings: readonly Finding[], failOn: FailOn): 0 | 1 | 2 {
  if (errors.length > 0) return 2;
  if (failOn === 'none') return 0;
  return findings.some((f) => severityRank(f.severity) >= severityRank(failOn)) ? 1 : 0;
}

/** Where a gateway entry's `--config` points: `~` is the home directory, a relative path the client config's folder. */
export function gatewayConfigPath(value: string, clientConfig: string, home: string): string {
  const v = value.trim();
  const expanded = v === '~' ? home : /^~[/\\]/.test(v) ? join(home, v.slice(2)) : v;
  return resolve(dirname(clientConfig), expanded);
}

/**
 * Reads and analyses a list of known files (env-gate's --config, or what discovery found). An entry
 * that runs `killswitch gateway` is followed to its `--config` file, whose `mcpServers` are what
 * actually runs: they are analysed too, with that file's path (each file once).
 */
export async function analyzeFiles(
  files: readonly Location[],
  ctx: { policy: CompiledPolicy | undefined; productionPatterns: ReadonlySet<string>; home: string; cwd: string },
): Promise<{ analyzed: AnalyzedServer[]; files: ScannedFile[]; errors: InputError[] }> {
  const analyzed: AnalyzedServer[] = [];
  const scanned: ScannedFile[] = [];
  const errors: InputError[] = [];
  const queue = [...files];
  const seen = new Set<string>();
  for (const loc of files) seen.add(await realpath(loc.path).catch(() => loc.path));
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    const loc = next;
    const display = displayPath(loc.path, ctx.cwd);
    const parsed = await parseConfigFile(loc.path, loc.kind, display);
    if (!parsed.ok) {
      errors.push(...parsed.errors);
      continue;
    }
    const actx = { policy: ctx.policy, productionPatterns: ctx.productionPatterns, home: ctx.home, displayFile: display };
    for (const s of parsed.parsed.servers) {
      const gateway = gatewayEntryOf(s);
      analyzed.push(analyzeServer(s, actx, gateway !== undefined));
      if (!gateway) continue;
      const at = gateway.config ? s.locate(gateway.config.at) : s.position;
      if (!gateway.config) {
        errors.push({ file: display, ...at, message: `server "${s.name}" runs the killswitch gateway without --config: the servers it would run cannot be checked` });
        continue;
      }
      const path = gatewayConfigPath(gateway.config.value, loc.path, ctx.home);
      const info = await stat(path).catch((err: NodeJS.ErrnoException) => err);
      if (info instanceof Error || !info.isFile()) {
        const reason = info instanceof Error ? (info.code === 'ENOENT' ? 'file not found' : (info.code ?? info.message)) : 'not a file';
        errors.push({ file: display, ...at, message: `server "${s.name}" runs the killswitch gateway with --config ${path}, which cannot be read (${reason}): the servers it would run cannot be checked` });
        continue;
      }
      const key = await realpath(path).catch(() => path);
      if (seen.has(key)) continue;
      seen.add(key);
      queue.push({ path, kind: 'gateway' });
    }
    for (const p of parsed.parsed.packages) analyzed.push(analyzePackage(p, actx));
    scanned.push({ path: display, kind: loc.kind, servers: parsed.parsed.servers.length + parsed.parsed.packages.length });
  }
  return { analyzed, files: scanned, errors };
}

export async function runScan(o: ScanOptions): Promise<ScanResult> {
  const warnings: string[] = [];
  const policyLoad = await readPolicy(o.policy);
  warnings.push(...policyLoad.warnings);
  const policy = policyLoad.policy;
  const productionPatterns = productionPatternsOf(policy);

  const paths = o.paths.length > 0 ? o.paths : ['.'];
  const userLocations = o.includeUserConfigs || o.paths.length === 0 ? userConfigLocations(o) : [];
  const found = await discoverFiles({ paths, userLocations, cwd: o.cwd, maxDepth: o.maxDepth });
  warnings.push(...found.warnings);

  const { analyzed, files, errors } = await analyzeFiles(found.files, { policy, productionPatterns, home: o.home, cwd: o.cwd });
  const allErrors = [...policyLoad.errors, ...found.errors, ...errors];

  const findings = analyzed
    .flatMap((a) => a.findings)
    .sort((a, b) => severityRank(b.severity) - severityRank(a.severity) || a.file.localeCompare(b.file) || a.line - b.line || a.column - b.column);
  const risk = bySeverity();
  for (const a of analyzed) risk[a.output.risk]++;
  const findingCounts = bySeverity();
  for (const f of findings) findingCounts[f.severity]++;

  const output: ScanOutput = {
    schema_version: SCAN_SCHEMA_VERSION,
    generated_at: (o.now ?? new Date()).toISOString(),
    policy: policy ? { file: policy.path, sha256: policy.hash } : null,
    production_patterns: [...productionPatterns].sort(),
    fail_on: o.failOn,
    files,
    servers: analyzed.map((a) => a.output),
    findings,
    errors: allErrors,
    summary: {
      files: files.length,
      servers: analyzed.filter((a) => a.output.origin === 'config').length,
      packages: analyzed.filter((a) => a.output.origin === 'package').length,
      risk,
      findings: findingCounts,
      unapproved: policy ? analyzed.filter((a) => a.output.approved === false).length : null,
      exit_code: exitCodeFor(allErrors, findings, o.failOn),
    },
  };
  return { output, analyzed, policy, warnings };
}

