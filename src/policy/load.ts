import { createHash } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import { Ajv, type ErrorObject } from 'ajv';
import { type Document, isAlias, isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';
import { compilePolicy } from './compile.js';
import { IssueList, type PathSegment, type PolicyIssue } from './issues.js';
import { PolicyFileSchema, PRESETS } from './schema.js';
import type { CompiledPolicy } from './types.js';

// Reads a policy file: YAML (with positions kept), schema validation (ajv over the TypeBox schema),
// then cross-reference checks and compilation. Every problem becomes a PolicyIssue with line:column.

const ajv = new Ajv({ allErrors: true, strict: false, verbose: true });
const validateFile = ajv.compile(PolicyFileSchema as object);

/**
 * The largest policy file read, in bytes (1 MiB). Real policies are a few KB; the YAML parser takes
 * about a second per MB of dense YAML on the event loop every request waits on, and a path that never
 * ends (/dev/zero) must not be read into memory.
 */
export const POLICY_FILE_MAX_BYTES = 1024 * 1024;
/** How many nodes aliases (`*name`) may add to the document, all together: an alias bomb expands exponentially. */
export const POLICY_ALIAS_NODES_MAX = 10_000;

/**
 * `omittedErrors`: errors not listed (IssueList.listed: only the first POLICY_ISSUES_LISTED problems are,
 * then one error issue says how many more).
 */
export type PolicyParseResult = (
  | {
      ok: true;
      policy: CompiledPolicy;
      issues: PolicyIssue[];
      /** The file's top-level keys, read from the same parse: a reload may not drop a guarded one (sections.ts). */
      sections: ReadonlySet<string>;
    }
  | { ok: false; issues: PolicyIssue[] }
) & { omittedErrors?: number };

function fileKind(s: Stats): string {
  if (s.isDirectory()) return 'a directory';
  if (s.isFIFO()) return 'a FIFO (named pipe)';
  if (s.isCharacterDevice()) return 'a character device';
  if (s.isBlockDevice()) return 'a block device';
  if (s.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * The bytes of a policy file. Only a regular file of at most POLICY_FILE_MAX_BYTES is read: the file is
 * opened without blocking (opening a FIFO for reading otherwise waits for a writer, forever, in a thread
 * of the pool every file read shares), its open descriptor is fstat'ed, and at most one byte over the cap
 * is read from that same descriptor, so a file swapped or grown after the check is still refused.
 * Throws an Error whose message says what is wrong (`code` ENOENT when there is no file).
 */
export async function readPolicyBytes(file: string): Promise<Buffer> {
  const handle = await open(file, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  try {
    const s = await handle.stat();
    if (!s.isFile()) throw new Error(`${file} is ${fileKind(s)}, not a regular file`);
    const tooBig = () => new Error(`${file} is larger than ${POLICY_FILE_MAX_BYTES} bytes (1 MiB), the most a policy file may be`);
    if (s.size > POLICY_FILE_MAX_BYTES) throw tooBig();
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const want = Math.min(64 * 1024, POLICY_FILE_MAX_BYTES + 1 - total);
      if (want === 0) throw tooBig();
      const chunk = Buffer.alloc(want);
      const { bytesRead } = await handle.read(chunk, 0, want, null);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      total += bytesRead;
    }
    return Buffer.concat(chunks, total);
  } finally {
    await handle.close();
  }
}

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

/** The scalar's text as written (`.inf`, `1e400`). */
function sourceOf(text: string, node: Node): string {
  return node.range ? text.slice(node.range[0], node.range[1]) : String((node as { value?: unknown }).value);
}

/**
 * What the schema cannot see once the document is plain data, checked on the YAML nodes in one pass
 * (linear: a Map per mapping, each anchor's expansion counted once):
 * - a key given twice in one mapping (the yaml library's own check scans the mapping for every key,
 *   which made a file of 20,000 servers take 20 s);
 * - an alias to no anchor before it, or to a node that contains it, and aliases that together add more
 *   than POLICY_ALIAS_NODES_MAX nodes (`&a [*b, *b, ...]` nested: an alias bomb), which would stop
 *   `toJS` or make it eat memory;
 * - a number that is not finite (`.inf`, `-.inf`, `.nan`, `1e400`), or larger than
 *   Number.MAX_SAFE_INTEGER: limits reach Redis and its Lua scripts, where `.inf` becomes a JSON null
 *   (every session open failed) and a count past 2^63 is refused by LRANGE and LTRIM.
 */
function checkNodes(doc: Document, text: string, issues: IssueList): void {
  const anchors = new Map<string, Node>();
  const expanded = new Map<Node, number>();
  const open = new Set<Node>();
  const path: PathSegment[] = [];
  let aliasNodes = 0;
  let bombReported = false;

  const walk = (node: unknown): number => {
    if (isAlias(node)) {
      const target = anchors.get(node.source);
      const at = node.range?.[0] ?? 0;
      if (!target) {
        issues.addAtOffset('error', at, path, `alias *${node.source} refers to no anchor: an anchor &${node.source} must come before it`);
        return 1;
      }
      if (open.has(target)) {
        issues.addAtOffset('error', at, path, `alias *${node.source} refers to a node that contains it (a structure without end)`);
        return 1;
      }
      const size = expanded.get(target) ?? 1;
      aliasNodes += size;
      if (aliasNodes > POLICY_ALIAS_NODES_MAX && !bombReported) {
        bombReported = true;
        issues.addAtOffset(
          'error',
          at,
          path,
          `aliases expand the file by more than ${POLICY_ALIAS_NODES_MAX} values (at this alias, *${node.source}); write the values out, or use fewer nested aliases`,
        );
      }
      return size;
    }
    if (!node || typeof node !== 'object') return 1;
    const n = node as Node;
    if (n.anchor) anchors.set(n.anchor, n);
    let size = 1;
    if (isScalar(n)) {
      const v = n.value;
      if (typeof v === 'number') {
        const at = n.range?.[0] ?? 0;
        if (!Number.isFinite(v)) issues.addAtOffset('error', at, path, `must be a finite number, not ${sourceOf(text, n)}`);
        else if (Math.abs(v) > Number.MAX_SAFE_INTEGER) issues.addAtOffset('error', at, path, `${sourceOf(text, n)} is too large: a number here may be at most ${Number.MAX_SAFE_INTEGER}`);
      }
    } else if (isMap(n)) {
      open.add(n);
      const keys = new Map<string, Node>();
      for (const pair of n.items) {
        if (!isPair(pair)) continue;
        const keyNode = pair.key as Node | null;
        const key = isScalar(keyNode) ? String(keyNode.value) : undefined;
        if (key !== undefined) {
          const first = keys.get(key);
          if (first) {
            const at = keyNode?.range?.[0] ?? 0;
            path.push(key);
            issues.addAtOffset('error', at, path, `duplicate key "${key}" (first at line ${issues.lineOf(first.range?.[0] ?? 0)}): keys of a map must be unique`);
            path.pop();
          } else if (keyNode) keys.set(key, keyNode);
        }
        size += walk(keyNode);
        path.push(key ?? '?');
        size += walk(pair.value);
        path.pop();
      }
      open.delete(n);
    } else if (isSeq(n)) {
      open.add(n);
      n.items.forEach((item, i) => {
        path.push(i);
        size += walk(item);
        path.pop();
      });
      open.delete(n);
    }
    expanded.set(n, size);
    return size;
  };
  walk(doc.contents);
}

function result(issues: IssueList, policy?: CompiledPolicy, sections?: ReadonlySet<string>): PolicyParseResult {
  const { issues: listed, omittedErrors } = issues.listed();
  const extra = omittedErrors ? { omittedErrors } : {};
  return policy ? { ok: true, policy, issues: listed, sections: sections ?? new Set(), ...extra } : { ok: false, issues: listed, ...extra };
}

/**
 * Parses and compiles policy text. Never throws for a bad file: problems come back as issues (and an
 * exception from a step, which would be a bug, comes back as an error issue at 1:1 with its message).
 */
export function parsePolicy(source: string | Buffer, file: string): PolicyParseResult {
  const lines = new LineCounter();
  const issues = new IssueList(file, undefined, lines);
  try {
    return parseChecked(source, file, lines);
  } catch (err) {
    issues.addAt('error', 1, 1, `the policy file could not be checked: ${(err as Error).message ?? String(err)}`);
    return result(issues);
  }
}

function parseChecked(source: string | Buffer, file: string, lines: LineCounter): PolicyParseResult {
  const hash = createHash('sha256').update(source).digest('hex');
  const text = typeof source === 'string' ? source : source.toString('utf8');
  // uniqueKeys off: checkNodes finds duplicate keys in linear time (the library's check is quadratic).
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  const issues = new IssueList(file, doc, lines);
  for (const err of doc.errors) {
    const pos = err.linePos?.[0] ?? lines.linePos(err.pos[0]);
    issues.addAt('error', pos.line, pos.col, err.message.split('\n')[0] ?? err.message);
  }
  for (const w of doc.warnings) {
    const pos = w.linePos?.[0] ?? lines.linePos(w.pos[0]);
    issues.addAt('warning', pos.line, pos.col, w.message.split('\n')[0] ?? w.message);
  }
  if (issues.hasErrors) return result(issues);
  checkNodes(doc, text, issues);
  if (issues.hasErrors) return result(issues);

  // checkNodes bounded what aliases add; the library's own count (per anchor) would refuse an anchor used 101 times.
  const data: unknown = doc.toJS({ maxAliasCount: -1 });
  if (data === null || data === undefined || typeof data !== 'object' || Array.isArray(data)) {
    issues.addAt('error', 1, 1, 'the policy file must be a map with at least `servers` and `roles`');
    return result(issues);
  }
  if (!validateFile(data)) {
    for (const e of reduceAnyOf(validateFile.errors ?? [])) schemaIssue(e, issues);
    return result(issues);
  }

  const policy = compilePolicy(data as Parameters<typeof compilePolicy>[0], issues, { path: file, hash });
  return result(issues, policy, new Set(Object.keys(data)));
}

/** Reads and compiles a policy file. Unreadable files (and those readPolicyBytes refuses) come back as one issue at 1:1. */
export async function loadPolicyFile(file: string): Promise<PolicyParseResult & { bytes?: Buffer }> {
  let bytes: Buffer;
  try {
    bytes = await readPolicyBytes(file);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message;
    return { ok: false, issues: [{ severity: 'error', file, line: 1, column: 1, path: '', message: `cannot read the policy file: ${reason}` }] };
  }
  const result = parsePolicy(bytes, file);
  return { ...result, bytes };
}
