import { shellOf, shellRefusal } from '../../gateway/prohibited.js';
import type { CompiledPolicy, CompiledServer } from '../../policy/index.js';
import { matchProductionPattern } from '../../policy/index.js';
import { identitiesOf } from '../../policy/resources.js';
import { describeIdentity, describePolicyIdentity, matchPolicyPackage, matchPolicyServer, type PolicyMatch } from './approval.js';
import { classifyPackage, classifyServer, directoryArgs, isReadOnly, KIND_RISK, rootDirectory } from './classify.js';
import type { ConfiguredServer, JsonPath, PackageDependency, SourcePosition } from './parse.js';
import { type Finding, type FindingType, maxSeverity, type ScannedServer, type Severity } from './schema.js';
import { findSecrets, redactIdentity, redactPart, redactServer } from './secrets.js';

// Turns what a file declares into the scan's servers and findings (seed 002's prohibited patterns and
// approved list). Everything that reaches the output is built here from the server with its secrets masked.

export interface AnalyzeContext {
  policy: CompiledPolicy | undefined;
  /** Whole host or database-name segments that mark production. */
  productionPatterns: ReadonlySet<string>;
  home: string;
  /** Path as shown in the output. */
  displayFile: string;
}

export interface AnalyzedServer {
  output: ScannedServer;
  findings: Finding[];
  /** Hosts and database names it connects to (for environment forbidden patterns). */
  networkIdentities: string[];
  /** One of those as it may be printed: what overlaps a credential masked. */
  showIdentity: (identity: string) => string;
  match: PolicyMatch | undefined;
}

/** Findings that say what a server can do, and so raise its risk level; credentials and approval do not. */
const RISK_RAISING: ReadonlySet<FindingType> = new Set(['shell_execution', 'filesystem_root', 'production_database']);

/** Strings in args and env values that may be connection strings: whole values, and values after `=`. */
function candidateValues(server: ConfiguredServer): { value: string; at: JsonPath }[] {
  const out: { value: string; at: JsonPath }[] = [];
  server.args.forEach((a, i) => {
    out.push({ value: a, at: ['args', i] });
    const eq = a.indexOf('=');
    if (eq > 0) out.push({ value: a.slice(eq + 1), at: ['args', i] });
  });
  for (const [k, v] of Object.entries(server.env)) out.push({ value: v, at: ['env', k] });
  return out;
}

class FindingList {
  readonly items: Finding[] = [];
  constructor(
    private readonly serverId: string,
    private readonly serverName: string,
    private readonly file: string,
  ) {}
  add(type: FindingType, severity: Severity, position: SourcePosition, message: string, evidence: string): void {
    this.items.push({ type, severity, server_id: this.serverId, server: this.serverName, file: this.file, line: position.line, column: position.column, message, evidence });
  }
}

function riskOf(base: Severity, findings: readonly Finding[]): Severity {
  return findings.filter((f) => RISK_RAISING.has(f.type)).reduce<Severity>((risk, f) => maxSeverity(risk, f.severity), base);
}

function approvalFindings(list: FindingList, ctx: AnalyzeContext, match: PolicyMatch, position: SourcePosition, shown: string): void {
  if (!ctx.policy) return;
  const policyFile = ctx.policy.path;
  if (!match.server) {
    list.add('unapproved_server', 'high', position, `not in the policy's approved servers (${policyFile}): add it to the policy after review, or remove it`, shown);
  } else if (match.server.prohibited) {
    list.add('unapproved_server', 'high', position, `the policy prohibits server "${match.server.name}" for every role`, shown);
  } else if (match.identityDiffers) {
    const policySide = describePolicyIdentity(match.server);
    list.add(
      'unapproved_server',
      'high',
      position,
      `named like the policy's server "${match.server.name}" but runs something else (the policy approves: ${policySide})`,
      shown,
    );
  }
}

function isApproved(match: PolicyMatch | undefined, policy: CompiledPolicy | undefined): boolean | null {
  if (!policy || !match) return null;
  return match.server !== undefined && !match.server.prohibited && !match.identityDiffers;
}

/**
 * `runsGateway`: the entry runs `killswitch gateway`, whose upstreams are analysed from its config
 * file. Only what the entry itself holds is checked (credentials, `shell: true`): it is no server of the
 * policy, its paths are a script and a config file, and its KILLSWITCH_URL is no database.
 */
export function analyzeServer(server: ConfiguredServer, ctx: AnalyzeContext, runsGateway = false): AnalyzedServer {
  const id = `${ctx.displayFile}#${server.name}`;
  const list = new FindingList(id, server.name, ctx.displayFile);
  const found = findSecrets(server);
  const masked = redactServer(server, found);
  const hide = (at: JsonPath, part: string) => redactPart(server, found, at, part);
  const kind = runsGateway ? 'gateway' : classifyServer(server);
  const readOnly = isReadOnly(server);
  const transport = transportOf(server);
  const shown = transport === 'stdio' || !masked.url ? describeIdentity(masked) : masked.url;

  // The same shells the gateway refuses to start (src/gateway/prohibited.ts), with the same advice.
  const shell = runsGateway ? undefined : shellOf(server.command, server.args);
  if (shell !== undefined && server.command !== undefined) {
    const starter = server.fileKind === 'gateway' ? 'the gateway' : 'the client (or the killswitch gateway)';
    list.add('shell_execution', 'critical', server.locate(['command']), shellRefusal(masked.command ?? server.command, masked.args, starter), shown);
  } else if (kind === 'shell') {
    list.add('shell_execution', 'critical', server.position, 'a shell or command-execution server: MCP servers with command execution are prohibited (docs/cli.md, "Findings")', shown);
  }
  if (server.shellAt) {
    list.add('shell_execution', 'critical', server.locate(server.shellAt), '`shell: true` runs the server command through a shell, which is prohibited (docs/cli.md, "Findings")', shown);
  }

  for (const dir of runsGateway ? [] : directoryArgs(server)) {
    const root = rootDirectory(dir.path, ctx.home, kind === 'filesystem');
    if (!root) continue;
    const path = hide(dir.at, dir.path);
    list.add('filesystem_root', root.severity, server.locate(dir.at), `gives the server ${root.why} ("${path}"); limit it to the project directories it needs`, path);
  }

  const identities = new Set<string>();
  if (server.url) identitiesOf(server.url, true, identities);
  const reported = new Set<string>();
  for (const { value, at } of runsGateway ? [] : candidateValues(server)) {
    const own = new Set<string>();
    identitiesOf(value, false, own);
    for (const i of own) identities.add(i);
    identitiesOf(value, true, identities);
    const hit = matchProductionPattern([...own], ctx.productionPatterns);
    if (hit && !reported.has(value)) {
      reported.add(value);
      list.add(
        'production_database',
        'critical',
        server.locate(at),
        `connects to a production database: "${redactIdentity(server, found, hit.identity)}" matches the production pattern "${hit.pattern}" (database servers on production data are prohibited: docs/cli.md, "Findings")`,
        hide(at, value),
      );
    }
  }

  for (const s of found) {
    list.add('plaintext_credential', 'high', server.locate(s.at), `plaintext credential in ${s.label} (${s.reason}): move it to a secret store or an environment reference`, s.evidence);
  }

  const match = ctx.policy && !runsGateway ? matchPolicyServer(ctx.policy, server) : undefined;
  if (match) approvalFindings(list, ctx, match, server.position, shown);

  const base = kind === 'filesystem' && readOnly ? 'low' : KIND_RISK[kind];
  const output: ScannedServer = {
    id,
    name: server.name,
    origin: 'config',
    file: ctx.displayFile,
    file_kind: server.fileKind,
    line: server.position.line,
    column: server.position.column,
    transport,
    command: masked.command ?? null,
    args: masked.args,
    url: masked.url ?? null,
    env_keys: Object.keys(server.env),
    package: null,
    kind,
    read_only: readOnly,
    risk: riskOf(base, list.items),
    approved: isApproved(match, ctx.policy),
    policy_server: match?.server?.name ?? null,
  };
  return { output, findings: list.items, networkIdentities: [...identities], showIdentity: (i) => redactIdentity(server, found, i), match };
}

export function analyzePackage(pkg: PackageDependency, ctx: AnalyzeContext): AnalyzedServer {
  const id = `${ctx.displayFile}#${pkg.dependencyType}.${pkg.name}`;
  const list = new FindingList(id, pkg.name, ctx.displayFile);
  const kind = classifyPackage(pkg);
  const shown = `${pkg.name}@${pkg.version}`;
  if (kind === 'shell') {
    list.add('shell_execution', 'critical', pkg.position, 'depends on a shell or command-execution MCP server: MCP servers with command execution are prohibited (docs/cli.md, "Findings")', shown);
  }
  let policyServer: CompiledServer | undefined;
  let approved: boolean | null = null;
  if (ctx.policy && kind !== 'sdk') {
    policyServer = matchPolicyPackage(ctx.policy, pkg.name);
    approved = policyServer !== undefined && !policyServer.prohibited;
    if (!policyServer) {
      list.add('unapproved_server', 'high', pkg.position, `MCP server package not run by any server of the policy (${ctx.policy.path}): review it and add it to the policy, or remove the dependency`, shown);
    } else if (policyServer.prohibited) {
      list.add('unapproved_server', 'high', pkg.position, `the package runs server "${policyServer.name}", which the policy prohibits for every role`, shown);
    }
  }
  const output: ScannedServer = {
    id,
    name: pkg.name,
    origin: 'package',
    file: ctx.displayFile,
    file_kind: 'package_json',
    line: pkg.position.line,
    column: pkg.position.column,
    transport: null,
    command: null,
    args: [],
    url: null,
    env_keys: [],
    package: { name: pkg.name, version: pkg.version, dependency_type: pkg.dependencyType },
    kind,
    read_only: false,
    risk: riskOf(KIND_RISK[kind], list.items),
    approved,
    policy_server: policyServer?.name ?? null,
  };
  return { output, findings: list.items, networkIdentities: [], showIdentity: (i) => i, match: undefined };
}

/** Declared `type` first (VS Code, Claude Code), else a command means stdio and a url means http (sse by path). */
export function transportOf(server: ConfiguredServer): ScannedServer['transport'] {
  const declared = server.type?.toLowerCase().replace(/[^a-z]/g, '');
  if (declared === 'stdio') return 'stdio';
  if (declared === 'sse') return 'sse';
  if (declared === 'http' || declared === 'streamablehttp' || declared === 'streamable') return 'http';
  if (server.command !== undefined) return 'stdio';
  if (server.url !== undefined) return /\/sse\/?$/.test(server.url.split('?')[0] ?? '') ? 'sse' : 'http';
  return 'unknown';
}
