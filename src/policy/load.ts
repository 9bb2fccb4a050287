import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Ajv, type ErrorObject } from 'ajv';
import { LineCounter, parseDocument } from 'yaml';
import { compilePolicy } from './compile.js';
import { IssueList, type PathSegment, type PolicyIssue } from './issues.js';
import { PolicyFileSchema, PRESETS } from './schema.js';
import type { CompiledPolicy } from './types.js';

// Reads a policy file: YAML (with positions kept), schema validation (ajv over the TypeBox schema),
// then cross-reference checks and compilation. Every problem becomes a PolicyIssue with line:column.

const ajv = new Ajv({ allErrors: true, strict: false, verbose: true });
const validateFile = ajv.compile(PolicyFileSchema as object);

export type PolicyParseResult = { ok: true; policy: CompiledPolicy; issues: PolicyIssue[] } | { ok: false; issues: PolicyIssue[] };

function pointerToPath(pointer: string): PathSegment[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function describeType(type: unknown): string {
  const names: Record<string, string> = {
    object: 'a map of keys',
    array: 'a list',
    string: 'text',
    integer: 'a whole number',
    number: 'a number',
    boolean: 'true or false',
    null: 'null',
  };
  const list = Array.isArray(type) ? type : [type];
  return list.map((t) => names[String(t)] ?? String(t)).join(' or ');
}

function hintOf(e: ErrorObject): string | undefined {
  const hint = (e.parentSchema as { hint?: unknown } | undefined)?.hint;
  return typeof hint === 'string' ? hint : undefined;
}

/**
 * ajv reports every failing branch of an anyOf. Keep the errors of the branch whose type matches the
 * value (a list given where a list-or-map is allowed is checked as a list), or one message when no
 * branch has the right type.
 */
function reduceAnyOf(errors: ErrorObject[]): ErrorObject[] {
  let out = [...errors];
  const anyOfs = errors.filter((e) => e.keyword === 'anyOf').sort((a, b) => a.schemaPath.length - b.schemaPath.length);
  for (const any of anyOfs) {
    if (!out.includes(any)) continue;
    const prefix = `${any.schemaPath}/`;
    const branches = new Map<string, ErrorObject[]>();
    for (const e of out) {
      if (!e.schemaPath.startsWith(prefix)) continue;
      const branch = e.schemaPath.slice(prefix.length).split('/')[0] as string;
      branches.set(branch, [...(branches.get(branch) ?? []), e]);
    }
    const typed = [...branches.values()].find((errs) => !errs.some((e) => e.instancePath === any.instancePath && (e.keyword === 'type' || e.keyword === 'enum' || e.keyword === 'const')));
    const drop = new Set([...branches.values()].flat());
    if (typed) {
      for (const e of typed) drop.delete(e);
      drop.add(any);
    }
    out = out.filter((e) => !drop.has(e));
  }
  return out;
}

function schemaIssue(e: ErrorObject, issues: IssueList): void {
  const path = pointerToPath(e.instancePath);
  const hint = hintOf(e);
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String((e.params as { additionalProperty: string }).additionalProperty);
      const parent = e.parentSchema as { properties?: Record<string, unknown>; patternProperties?: Record<string, unknown>; nameHint?: string } | undefined;
      if (path.length === 0 && key === 'presets') {
        issues.error(
          [key],
          `the built-in presets (${PRESETS.join(', ')}) cannot be redefined or deleted, and custom presets are not supported; reference presets from a role with \`presets: [...]\``,
          'key',
        );
      } else if (parent?.patternProperties) {
        const pattern = Object.keys(parent.patternProperties)[0];
        issues.error([...path, key], `invalid name "${key}": ${parent.nameHint ?? `must match ${pattern}`}`, 'key');
      } else {
        const allowed = parent?.properties ? Object.keys(parent.properties) : [];
        issues.error([...path, key], `unknown key "${key}"${allowed.length ? `; expected one of: ${allowed.join(', ')}` : ''}`, 'key');
      }
      return;
    }
    case 'required':
      issues.error(path, `missing required key "${(e.params as { missingProperty: string }).missingProperty}"`, path.length ? 'key' : 'value');
      return;
    case 'type':
      issues.error(path, hint ? `must be ${hint}` : `must be ${describeType((e.params as { type: unknown }).type)}`);
      return;
    case 'enum':
      issues.error(path, `unknown value ${JSON.stringify(e.data)}; expected one of: ${((e.params as { allowedValues: unknown[] }).allowedValues ?? []).join(', ')}`);
      return;
    case 'const':
      issues.error(path, `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`);
      return;
    case 'pattern':
      issues.error(path, `invalid value ${JSON.stringify(e.data)}: ${hint ?? `must match ${(e.params as { pattern: string }).pattern}`}`);
      return;
    case 'uniqueItems':
      issues.error(path, `lists ${JSON.stringify((e.data as unknown[])[(e.params as { i: number }).i])} twice`);
      return;
    case 'minLength':
      issues.error(path, 'must not be empty');
      return;
    case 'anyOf':
      issues.error(path, `must be ${hint ?? 'one of the allowed forms'}`);
      return;
    default: {
      // `minimumHint`: what to say when a value is under the minimum (a `hint` describes the type).
      const minimumHint = (e.parentSchema as { minimumHint?: unknown } | undefined)?.minimumHint;
      if (e.keyword === 'minimum' && typeof minimumHint === 'string') issues.error(path, `${e.message}: ${minimumHint}`);
      else issues.error(path, hint && e.keyword !== 'minimum' && e.keyword !== 'maximum' ? `${e.message}: ${hint}` : (e.message ?? 'is invalid'));
    }
  }
}

/** Parses and compiles policy text. Never throws for a bad file: problems come back as issues. */
export function parsePolicy(source: string | Buffer, file: string): PolicyParseResult {
  const hash = createHash('sha256').update(source).digest('hex');
  const text = typeof source === 'string' ? source : source.toString('utf8');
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const issues = new IssueList(file, doc, lines);
  for (const err of doc.errors) {
    const pos = err.linePos?.[0] ?? lines.linePos(err.pos[0]);
    issues.addAt('error', pos.line, pos.col, err.message.split('\n')[0] ?? err.message);
  }
  for (const w of doc.warnings) {
    const pos = w.linePos?.[0] ?? lines.linePos(w.pos[0]);
    issues.addAt('warning', pos.line, pos.col, w.message.split('\n')[0] ?? w.message);
  }
  if (issues.hasErrors) return { ok: false, issues: issues.sorted() };

  const data: unknown = doc.toJS({ maxAliasCount: 100 });
  if (data === null || data === undefined || typeof data !== 'object' || Array.isArray(data)) {
    issues.addAt('error', 1, 1, 'the policy file must be a map with at least `servers` and `roles`');
    return { ok: false, issues: issues.sorted() };
  }
  if (!validateFile(data)) {
    for (const e of reduceAnyOf(validateFile.errors ?? [])) schemaIssue(e, issues);
    return { ok: false, issues: issues.sorted() };
  }

  const policy = compilePolicy(data as Parameters<typeof compilePolicy>[0], issues, { path: file, hash });
  if (!policy) return { ok: false, issues: issues.sorted() };
  return { ok: true, policy, issues: issues.sorted() };
}

/** Reads and compiles a policy file. Unreadable files come back as one issue at 1:1. */
export async function loadPolicyFile(file: string): Promise<PolicyParseResult & { bytes?: Buffer }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message;
    return { ok: false, issues: [{ severity: 'error', file, line: 1, column: 1, path: '', message: `cannot read the policy file: ${reason}` }] };
  }
  const result = parsePolicy(bytes, file);
  return { ...result, bytes };
}
