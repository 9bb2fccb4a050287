import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { type CompiledPolicy, matchProductionPattern } from '../policy/index.js';
import { ENVIRONMENTS, type Environment } from '../tokens/store.js';
import type { AnalyzedServer } from './scan/analyze.js';
import { describeIdentity, describePolicyIdentity } from './scan/approval.js';
import type { CliEnvironment } from './scan/command.js';
import { fileKindOf, type Location, projectConfigLocations, userConfigLocations } from './scan/locations.js';
import { analyzeFiles, readPolicy } from './scan/scan.js';
import type { InputError } from './scan/schema.js';

// `killswitch env-gate` (seed 001 pattern 5): before a session starts, every MCP server the client
// configs declare must be a server of the policy, allowed in the declared environment (MCP_ENV,
// default development) and free of the environment's forbidden patterns. Usable as a CI step or a
// pre-session hook: exit 0 passed, 1 conflicts, 2 bad input (unreadable or invalid file or policy).

export interface EnvGateOptions {
  config?: string[];
  policy?: string;
  environment?: string;
  role?: string;
}

export interface GateConflict {
  file: string;
  line: number;
  column: number;
  server: string;
  message: string;
}

export type GateEnvironment = CliEnvironment & { mcpEnv: Environment };

/** Servers the environment allows: the role's, or any role's of the file (presets are not roles to union). */
export function allowedServers(policy: CompiledPolicy, env: Environment, role: string | undefined): Set<string> {
  const roles = role !== undefined ? [policy.roles.get(role)].filter((r) => r !== undefined) : [...policy.roles.values()].filter((r) => !r.builtIn);
  const out = new Set<string>();
  for (const r of roles) for (const s of r.allowed[env]) if (!r.forbidden[env].has(s) && policy.servers.get(s)?.prohibited === false) out.add(s);
  return out;
}

/** The conflicts of one configured server with the policy in one environment (empty: it may run). */
export function gateConflicts(a: AnalyzedServer, policy: CompiledPolicy, env: Environment, allowed: ReadonlySet<string>, role: string | undefined): string[] {
  const out: string[] = [];
  const match = a.match;
  const shown = describeIdentity({ command: a.output.command ?? undefined, args: a.output.args, url: a.output.url ?? undefined });
  if (!match?.server) {
    out.push(`not in the policy (${policy.path}): unknown servers may not run in any environment`);
  } else if (match.server.prohibited) {
    out.push(`the policy prohibits server "${match.server.name}" for every role`);
  } else if (match.identityDiffers) {
    out.push(`runs "${shown}", but the policy's server "${match.server.name}" runs "${describePolicyIdentity(match.server)}"`);
  } else if (!allowed.has(match.server.name)) {
    const list = [...allowed].join(', ') || 'none';
    out.push(`policy server "${match.server.name}" is not allowed in ${env} ${role !== undefined ? `for role ${role}` : 'for any role'} (allowed: ${list})`);
  }
  const hit = matchProductionPattern(a.networkIdentities, policy.environments[env].forbiddenPatterns);
  if (hit) out.push(`reaches "${a.showIdentity(hit.identity)}", which matches the forbidden pattern "${hit.pattern}" of ${env}`);
  return out;
}

async function existing(locations: readonly Location[]): Promise<Location[]> {
  const out: Location[] = [];
  for (const l of locations) if ((await stat(l.path).catch(() => undefined))?.isFile()) out.push(l);
  return out;
}

function printErrors(errors: readonly InputError[], env: GateEnvironment): number {
  for (const e of errors) env.stderr.write(`${e.file}:${e.line}:${e.column}: ${e.message}\n`);
  env.stderr.write(`MCP environment gate: bad input (${errors.length} error${errors.length === 1 ? '' : 's'}); nothing was checked\n`);
  return 2;
}

export async function envGate(opts: EnvGateOptions, env: GateEnvironment, now: Date = new Date()): Promise<number> {
  const environment = (opts.environment ?? env.mcpEnv) as Environment;
  if (!ENVIRONMENTS.includes(environment)) {
    env.stderr.write(`MCP environment gate: unknown environment "${environment}"; expected one of ${ENVIRONMENTS.join(', ')}\n`);
    return 2;
  }
  // The policy is what the gate checks against: without one, nothing can pass (fail closed).
  const loaded = await readPolicy({ file: opts.policy ?? env.policyFile, required: true });
  if (loaded.errors.length > 0 || !loaded.policy) return printErrors(loaded.errors, env);
  const policy = loaded.policy;
  if (opts.role !== undefined && !policy.roles.has(opts.role)) {
    env.stderr.write(`MCP environment gate: role "${opts.role}" is not in the policy; roles: ${[...policy.roles.keys()].join(', ')}\n`);
    return 2;
  }

  const files: Location[] =
    opts.config && opts.config.length > 0
      ? opts.config.map((f) => {
          const path = resolve(env.cwd, f);
          return { path, kind: fileKindOf(path) ?? 'mcp_json' };
        })
      : await existing([...projectConfigLocations(env.cwd), ...userConfigLocations(env)]);
  const rules = policy.environments[environment];
  const { analyzed, errors } = await analyzeFiles(files, { policy, productionPatterns: rules.forbiddenPatterns, home: env.home, cwd: env.cwd });
  if (errors.length > 0) return printErrors(errors, env);

  // An entry running the killswitch gateway is no server of the policy: analyzeFiles followed it to
  // its config file, and the upstreams it runs are what the gate checks.
  const servers = analyzed.filter((a) => a.output.origin === 'config' && a.output.kind !== 'gateway');
  const allowed = allowedServers(policy, environment, opts.role);
  const conflicts: GateConflict[] = [];
  for (const a of servers) {
    for (const message of gateConflicts(a, policy, environment, allowed, opts.role)) {
      conflicts.push({ file: a.output.file, line: a.output.line, column: a.output.column, server: a.output.name, message });
    }
  }

  const names = [...new Set(servers.map((a) => a.output.name))];
  const facts = `environment=${environment}, servers=[${names.join(', ')}], timestamp=${now.toISOString()}`;
  if (files.length === 0) env.stderr.write('MCP environment gate: no MCP client configs found (project .mcp.json, mcp.json, .cursor/mcp.json, .vscode/mcp.json; user Claude Desktop and Cursor configs)\n');
  if (conflicts.length > 0) {
    env.stderr.write(`MCP environment gate FAILED: ${facts}\n`);
    for (const c of conflicts) env.stderr.write(`  ${c.file}:${c.line}:${c.column} ${c.server}: ${c.message}\n`);
    env.stderr.write(`${conflicts.length} conflict${conflicts.length === 1 ? '' : 's'}: do not start the session until they are resolved\n`);
    return 1;
  }
  if (rules.humanGrantRequired && servers.length > 0) {
    env.stderr.write(`MCP environment gate: every call in ${environment} also needs an active human grant, which the control plane checks per call\n`);
  }
  env.stdout.write(`MCP environment gate passed: ${facts}\n`);
  return 0;
}
