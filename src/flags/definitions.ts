import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDocument } from 'yaml';

// Flags as code: the YAML files in flags/ say which flags exist, what they mean and their strategies.
// `flags sync` applies them to Unleash; the flag step never reads these files (it evaluates what Unleash
// serves), except for descriptions shown when a flag is missing from Unleash.

export type FlagType = 'kill-switch' | 'permission';
export const FLAG_TYPES: readonly FlagType[] = ['kill-switch', 'permission'];

/** Context fields the flag step fills on every evaluation (DESIGN.md §5). */
export const CONTEXT_FIELDS = ['userId', 'sessionId', 'tokenType', 'role', 'mcpEnvironment', 'projectId', 'server', 'tool', 'capability'] as const;
export type ContextField = (typeof CONTEXT_FIELDS)[number];
/** Fields Unleash itself knows; valid in constraints too. */
const UNLEASH_FIELDS = ['appName', 'environment', 'currentTime', 'remoteAddress'];

const OPERATORS = [
  'IN',
  'NOT_IN',
  'STR_CONTAINS',
  'STR_STARTS_WITH',
  'STR_ENDS_WITH',
  'NUM_EQ',
  'NUM_GT',
  'NUM_GTE',
  'NUM_LT',
  'NUM_LTE',
  'DATE_AFTER',
  'DATE_BEFORE',
  'SEMVER_EQ',
  'SEMVER_GT',
  'SEMVER_LT',
] as const;
const MULTI_VALUE = new Set(['IN', 'NOT_IN', 'STR_CONTAINS', 'STR_STARTS_WITH', 'STR_ENDS_WITH']);

export interface ConstraintDefinition {
  contextName: string;
  operator: (typeof OPERATORS)[number];
  values?: string[];
  value?: string;
  inverted?: boolean;
  caseInsensitive?: boolean;
}

export interface StrategyDefinition {
  name: string;
  parameters: Record<string, string>;
  constraints: ConstraintDefinition[];
}

export interface FlagDefinition {
  name: string;
  description: string;
  type: FlagType;
  strategies: StrategyDefinition[];
  /** File it came from, for messages. */
  source: string;
}

export interface FlagDefinitions {
  flags: FlagDefinition[];
  /** Templates with `{server}` in name and description, expanded for every server in the policy. */
  perServer: FlagDefinition[];
}

/** What the policy contributes: its server names and the extra flags it names. */
export interface PolicyFlagNames {
  servers: string[];
  extraFlags: string[];
}

export const FLAG_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
const SERVER_PLACEHOLDER = '{server}';

export class FlagDefinitionError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = 'FlagDefinitionError';
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(file: string, where: string, obj: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) throw new FlagDefinitionError(file, `${where}: unknown key "${key}" (allowed: ${allowed.join(', ')})`);
  }
}

function parseConstraint(file: string, where: string, raw: unknown): ConstraintDefinition {
  if (!isRecord(raw)) throw new FlagDefinitionError(file, `${where}: expected an object with contextName, operator and values`);
  checkKeys(file, where, raw, ['contextName', 'operator', 'values', 'value', 'inverted', 'caseInsensitive']);
  const { contextName, operator, values, value, inverted, caseInsensitive } = raw;
  const known = [...CONTEXT_FIELDS, ...UNLEASH_FIELDS];
  if (typeof contextName !== 'string' || !known.includes(contextName)) {
    throw new FlagDefinitionError(file, `${where}.contextName: expected one of ${known.join(', ')}`);
  }
  if (typeof operator !== 'string' || !(OPERATORS as readonly string[]).includes(operator)) {
    throw new FlagDefinitionError(file, `${where}.operator: expected one of ${OPERATORS.join(', ')}`);
  }
  const out: ConstraintDefinition = { contextName, operator: operator as ConstraintDefinition['operator'] };
  if (MULTI_VALUE.has(operator)) {
    if (!Array.isArray(values) || values.length === 0) throw new FlagDefinitionError(file, `${where}.values: ${operator} needs a non-empty list`);
    out.values = values.map(String);
  } else {
    if (value === undefined || value === null) throw new FlagDefinitionError(file, `${where}.value: ${operator} needs one value`);
    out.value = String(value);
  }
  if (inverted !== undefined) {
    if (typeof inverted !== 'boolean') throw new FlagDefinitionError(file, `${where}.inverted: expected true or false`);
    out.inverted = inverted;
  }
  if (caseInsensitive !== undefined) {
    if (typeof caseInsensitive !== 'boolean') throw new FlagDefinitionError(file, `${where}.caseInsensitive: expected true or false`);
    out.caseInsensitive = caseInsensitive;
  }
  return out;
}

function parseStrategy(file: string, where: string, raw: unknown): StrategyDefinition {
  if (!isRecord(raw)) throw new FlagDefinitionError(file, `${where}: expected an object`);
  checkKeys(file, where, raw, ['name', 'rollout', 'parameters', 'constraints']);
  const name = raw['name'] ?? 'flexibleRollout';
  if (typeof name !== 'string' || !name) throw new FlagDefinitionError(file, `${where}.name: expected a strategy name such as flexibleRollout`);
  const parameters: Record<string, string> = {};
  if (raw['parameters'] !== undefined) {
    if (!isRecord(raw['parameters'])) throw new FlagDefinitionError(file, `${where}.parameters: expected a map of strings`);
    for (const [k, v] of Object.entries(raw['parameters'])) parameters[k] = String(v);
  }
  if (raw['rollout'] !== undefined) {
    const rollout = Number(raw['rollout']);
    if (!Number.isInteger(rollout) || rollout < 0 || rollout > 100) throw new FlagDefinitionError(file, `${where}.rollout: expected a whole number from 0 to 100`);
    parameters['rollout'] = String(rollout);
  }
  const constraintsRaw = raw['constraints'] ?? [];
  if (!Array.isArray(constraintsRaw)) throw new FlagDefinitionError(file, `${where}.constraints: expected a list`);
  const constraints = constraintsRaw.map((c, i) => parseConstraint(file, `${where}.constraints[${i}]`, c));
  return { name, parameters, constraints };
}

function parseFlag(file: string, where: string, raw: unknown, template: boolean): FlagDefinition {
  if (!isRecord(raw)) throw new FlagDefinitionError(file, `${where}: expected an object with name, description, type`);
  checkKeys(file, where, raw, ['name', 'description', 'type', 'strategies']);
  const { name, description, type } = raw;
  if (typeof name !== 'string') throw new FlagDefinitionError(file, `${where}.name: expected a string`);
  const probe = name.replaceAll(SERVER_PLACEHOLDER, 'x');
  if (template !== name.includes(SERVER_PLACEHOLDER)) {
    throw new FlagDefinitionError(file, `${where}.name: ${template ? 'a per_server flag must contain {server}' : '{server} is only allowed under per_server'}`);
  }
  if (!FLAG_NAME_PATTERN.test(probe)) throw new FlagDefinitionError(file, `${where}.name: "${name}" is not a valid Unleash flag name (letters, digits, ".", "_", "-")`);
  if (typeof description !== 'string' || !description.trim()) throw new FlagDefinitionError(file, `${where}.description: required; it is the reason shown in KILL_SWITCH denials`);
  if (typeof type !== 'string' || !(FLAG_TYPES as readonly string[]).includes(type)) {
    throw new FlagDefinitionError(file, `${where}.type: expected one of ${FLAG_TYPES.join(', ')}`);
  }
  const strategiesRaw = raw['strategies'] ?? [{}];
  if (!Array.isArray(strategiesRaw) || strategiesRaw.length === 0) {
    throw new FlagDefinitionError(file, `${where}.strategies: expected a non-empty list (omit it for one 100% rollout)`);
  }
  const strategies = strategiesRaw.map((s, i) => parseStrategy(file, `${where}.strategies[${i}]`, s));
  return { name, description: description.trim(), type: type as FlagType, strategies, source: file };
}

/** Parses one definition file's text. */
export function parseFlagFile(file: string, text: string): FlagDefinitions {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new FlagDefinitionError(file, doc.errors[0]!.message);
  const root: unknown = doc.toJS() ?? {};
  if (!isRecord(root)) throw new FlagDefinitionError(file, 'expected a map with "flags" and/or "per_server"');
  checkKeys(file, 'top level', root, ['flags', 'per_server']);
  const list = (key: string): unknown[] => {
    const v = root[key] ?? [];
    if (!Array.isArray(v)) throw new FlagDefinitionError(file, `${key}: expected a list`);
    return v;
  };
  return {
    flags: list('flags').map((f, i) => parseFlag(file, `flags[${i}]`, f, false)),
    perServer: list('per_server').map((f, i) => parseFlag(file, `per_server[${i}]`, f, true)),
  };
}

/** Reads every *.yaml / *.yml file of the folder; a name defined twice is an error. */
export async function loadFlagDefinitions(dir: string): Promise<FlagDefinitions> {
  const files = (await readdir(dir)).filter((f) => /\.ya?ml$/.test(f)).sort();
  const out: FlagDefinitions = { flags: [], perServer: [] };
  const seen = new Map<string, string>();
  for (const f of files) {
    const path = join(dir, f);
    const parsed = parseFlagFile(path, await readFile(path, 'utf8'));
    for (const def of [...parsed.flags, ...parsed.perServer]) {
      const first = seen.get(def.name);
      if (first) throw new FlagDefinitionError(path, `flag ${def.name} is already defined in ${first}`);
      seen.set(def.name, path);
    }
    out.flags.push(...parsed.flags);
    out.perServer.push(...parsed.perServer);
  }
  return out;
}

const SERVER_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

function expand(def: FlagDefinition, server: string): FlagDefinition {
  const sub = (s: string) => s.replaceAll(SERVER_PLACEHOLDER, server);
  return {
    ...def,
    name: sub(def.name),
    description: sub(def.description),
    strategies: def.strategies.map((s) => ({
      name: s.name,
      parameters: Object.fromEntries(Object.entries(s.parameters).map(([k, v]) => [k, sub(v)])),
      constraints: s.constraints.map((c) => ({ ...c, ...(c.values ? { values: c.values.map(sub) } : {}), ...(c.value !== undefined ? { value: sub(c.value) } : {}) })),
    })),
  };
}

/**
 * The flags that must exist for this policy: the explicit definitions, the per-server templates for
 * every server, and every extra flag the policy names (one without a definition gets a generic one, so a
 * policy naming a flag can never leave it missing and deny forever by accident). An explicit definition
 * wins over a generated one with the same name (mcp.filesystem.write is both).
 */
export function desiredFlags(defs: FlagDefinitions, names: PolicyFlagNames): FlagDefinition[] {
  const byName = new Map<string, FlagDefinition>();
  for (const server of [...new Set(names.servers)].sort()) {
    if (!SERVER_NAME.test(server)) throw new FlagDefinitionError('policy', `server name "${server}" cannot be part of a flag name`);
    for (const t of defs.perServer) {
      const flag = expand(t, server);
      byName.set(flag.name, flag);
    }
  }
  for (const flag of defs.flags) byName.set(flag.name, flag);
  for (const name of [...new Set(names.extraFlags)].sort()) {
    if (byName.has(name)) continue;
    if (!FLAG_NAME_PATTERN.test(name)) throw new FlagDefinitionError('policy', `extra flag "${name}" is not a valid Unleash flag name`);
    byName.set(name, {
      name,
      description: `${name} (named by the policy; no definition in flags/)`,
      type: 'kill-switch',
      strategies: [{ name: 'flexibleRollout', parameters: {}, constraints: [] }],
      source: 'policy',
    });
  }
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** Unleash form of a strategy: flexibleRollout gets its usual defaults (100%, default stickiness, groupId = flag). */
export function strategyPayload(flag: string, s: StrategyDefinition): StrategyDefinition {
  const parameters = s.name === 'flexibleRollout' ? { rollout: '100', stickiness: 'default', groupId: flag, ...s.parameters } : { ...s.parameters };
  return { name: s.name, parameters, constraints: s.constraints };
}

interface ComparableStrategy {
  name: string;
  parameters?: Record<string, unknown> | undefined;
  constraints?: readonly object[] | undefined;
  segments?: readonly unknown[] | undefined;
  disabled?: boolean | null | undefined;
}

/**
 * Fingerprint of a strategy as it affects evaluation, identical whether computed from a definition or
 * from what Unleash returns. Sync writes it into the strategy's title to notice later edits in the UI.
 */
export function strategyFingerprint(s: ComparableStrategy): string {
  const constraints = (s.constraints ?? []).map((raw) => {
    const c = raw as Record<string, unknown>;
    return {
    contextName: String(c['contextName']),
    operator: String(c['operator']),
    values: Array.isArray(c['values']) ? (c['values'] as unknown[]).map(String).sort() : [],
    value: c['value'] === undefined || c['value'] === null || c['value'] === '' ? null : String(c['value']),
    inverted: c['inverted'] === true,
    caseInsensitive: c['caseInsensitive'] === true,
    };
  });
  const parameters = Object.entries(s.parameters ?? {})
    .map(([k, v]) => [k, String(v)] as const)
    .sort(([a], [b]) => a.localeCompare(b));
  const canonical = JSON.stringify({
    name: s.name,
    parameters,
    constraints,
    segments: [...(s.segments ?? [])].map(String).sort(),
    disabled: s.disabled === true,
  });
  return createHash('sha256').update(canonical).digest('hex').slice(0, 12);
}
