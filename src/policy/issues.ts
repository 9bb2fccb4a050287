import { type Document, isMap, isPair, isScalar, isSeq, type LineCounter, type Node, type Pair, type YAMLMap } from 'yaml';

// Problems found in a policy file, each pointing at the line and column of the offending key or value
// and at its key path, so `killswitch policy check` and a failed start read like a compiler:
//   policy/default.yaml:14:7 roles.code_agent.allowed_servers.development[2]: unknown server "shel"

export type PathSegment = string | number;

export interface PolicyIssue {
  severity: 'error' | 'warning';
  file: string;
  line: number;
  column: number;
  /** Key path like `roles.code_agent.allowed_servers.development[2]` (empty for the whole file). */
  path: string;
  message: string;
}

export function formatIssue(issue: PolicyIssue): string {
  const where = `${issue.file}:${issue.line}:${issue.column}`;
  const tag = issue.severity === 'warning' ? ' warning:' : '';
  return issue.path ? `${where}${tag} ${issue.path}: ${issue.message}` : `${where}${tag} ${issue.message}`;
}

/** A policy file that cannot be used. The message lists every error, one per line. */
export class PolicyFileError extends Error {
  constructor(
    readonly file: string,
    readonly issues: PolicyIssue[],
    /** Errors past the listed ones (one listed issue says how many): PolicyParseResult.omittedErrors. */
    readonly omittedErrors = 0,
  ) {
    const errors = issues.filter((i) => i.severity === 'error');
    super(`invalid policy file ${file}:\n${errors.map(formatIssue).join('\n')}`);
    this.name = 'PolicyFileError';
  }
}

/**
 * How many errors a refused file has: those listed, where past POLICY_ISSUES_LISTED the last listed one only
 * says how many more there are (`omittedErrors`), so it counts as those.
 */
export function policyErrorCount(issues: readonly PolicyIssue[], omittedErrors = 0): number {
  const listed = issues.filter((i) => i.severity === 'error').length;
  return omittedErrors ? listed - 1 + omittedErrors : listed;
}

/** How many problems of one file are listed (then one line says how many more): the file is refused at its first error anyway. */
export const POLICY_ISSUES_LISTED = 100;

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** `['roles', 'code_agent', 'allowed_servers', 'development', 2]` → `roles.code_agent.allowed_servers.development[2]`. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (PLAIN_KEY.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

function keyOf(node: unknown): unknown {
  return isScalar(node) ? node.value : node;
}

/**
 * Each mapping's pairs by key (the first of a key), built on first use: locating thousands of issues in a
 * map of thousands of keys stays linear (a scan per issue made a file of 20,000 servers take 20 s).
 */
const pairIndex = new WeakMap<YAMLMap, Map<string, Pair>>();

function pairOf(map: YAMLMap, seg: PathSegment): Pair | undefined {
  let index = pairIndex.get(map);
  if (!index) {
    index = new Map();
    for (const p of map.items) {
      if (!isPair(p)) continue;
      const key = String(keyOf(p.key));
      if (!index.has(key)) index.set(key, p);
    }
    pairIndex.set(map, index);
  }
  return index.get(String(seg));
}

/**
 * Position of the node at `path` in the YAML document (1-based line and column). With `at: 'key'` the
 * position of the map key itself (for "unknown key" and bad names). A path that does not exist (a
 * missing key) points at the deepest node that does.
 */
export function locate(doc: Document, lines: LineCounter, path: readonly PathSegment[], at: 'value' | 'key' = 'value'): { line: number; column: number } {
  let node: unknown = doc.contents;
  let offset = (node as Node | null)?.range?.[0] ?? 0;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i] as PathSegment;
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = pairOf(node, seg);
      if (!pair) break;
      const keyNode = pair.key as Node | null;
      const valueNode = pair.value as Node | null;
      if (last && at === 'key' && keyNode?.range) {
        offset = keyNode.range[0];
        break;
      }
      if (valueNode?.range) offset = valueNode.range[0];
      else if (keyNode?.range) offset = keyNode.range[0];
      node = valueNode;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as Node | undefined;
      if (!item) break;
      if (item.range) offset = item.range[0];
      node = item;
    } else {
      break;
    }
  }
  const pos = lines.linePos(offset);
  return { line: pos.line, column: pos.col };
}

/** Collects issues for one file, locating each in the document. */
export class IssueList {
  readonly issues: PolicyIssue[] = [];
  constructor(
    private readonly file: string,
    private readonly doc: Document | undefined,
    private readonly lines: LineCounter,
  ) {}

  add(severity: PolicyIssue['severity'], path: readonly PathSegment[], message: string, at: 'value' | 'key' = 'value'): void {
    const pos = this.doc ? locate(this.doc, this.lines, path, at) : { line: 1, column: 1 };
    this.issues.push({ severity, file: this.file, line: pos.line, column: pos.column, path: formatPath(path), message });
  }

  error(path: readonly PathSegment[], message: string, at: 'value' | 'key' = 'value'): void {
    this.add('error', path, message, at);
  }

  warning(path: readonly PathSegment[], message: string, at: 'value' | 'key' = 'value'): void {
    this.add('warning', path, message, at);
  }

  /** An issue at a known position (YAML syntax errors), with the key path when it is known. */
  addAt(severity: PolicyIssue['severity'], line: number, column: number, message: string, path: readonly PathSegment[] = []): void {
    this.issues.push({ severity, file: this.file, line, column, path: formatPath(path), message });
  }

  /** An issue at a character offset of the text (a node whose key path `locate` cannot follow, such as an alias). */
  addAtOffset(severity: PolicyIssue['severity'], offset: number, path: readonly PathSegment[], message: string): void {
    const pos = this.lines.linePos(offset);
    this.addAt(severity, pos.line, pos.col, message, path);
  }

  /** The 1-based line of a character offset of the text. */
  lineOf(offset: number): number {
    return this.lines.linePos(offset).line;
  }

  get hasErrors(): boolean {
    return this.issues.some((i) => i.severity === 'error');
  }

  sorted(): PolicyIssue[] {
    return [...this.issues].sort((a, b) => a.line - b.line || a.column - b.column);
  }

  /**
   * The warnings, sorted, cut to the first POLICY_ISSUES_LISTED, then one warning saying how many more
   * there are: what a policy in force keeps (GET /v1/policy, one log line each at every load), so a
   * large file with a warning per server does not answer or log thousands of them.
   */
  warningsListed(): PolicyIssue[] {
    const all = this.sorted().filter((i) => i.severity === 'warning');
    if (all.length <= POLICY_ISSUES_LISTED) return all;
    const first = all[POLICY_ISSUES_LISTED] as PolicyIssue;
    const more = all.length - POLICY_ISSUES_LISTED;
    return [
      ...all.slice(0, POLICY_ISSUES_LISTED),
      {
        severity: 'warning',
        file: this.file,
        line: first.line,
        column: first.column,
        path: '',
        message: `${more} more warning${more === 1 ? '' : 's'} from here on, not listed (only the first ${POLICY_ISSUES_LISTED} are kept with the policy)`,
      },
    ];
  }

  /**
   * sorted(), cut to the first POLICY_ISSUES_LISTED by position, then one issue saying how many more there
   * are: a file with thousands of errors is refused all the same, and its log line, `GET /v1/policy` and
   * `policy check` stay readable. `omittedErrors` counts the errors left out.
   */
  listed(): { issues: PolicyIssue[]; omittedErrors: number } {
    const all = this.sorted();
    if (all.length <= POLICY_ISSUES_LISTED) return { issues: all, omittedErrors: 0 };
    const rest = all.slice(POLICY_ISSUES_LISTED);
    const errors = rest.filter((i) => i.severity === 'error').length;
    const first = rest[0] as PolicyIssue;
    const what = [errors ? `${errors} more error${errors === 1 ? '' : 's'}` : '', rest.length - errors ? `${rest.length - errors} more warning${rest.length - errors === 1 ? '' : 's'}` : '']
      .filter(Boolean)
      .join(' and ');
    const summary: PolicyIssue = {
      severity: errors ? 'error' : 'warning',
      file: this.file,
      line: first.line,
      column: first.column,
      path: '',
      message: `${what} from here on, not listed (only the first ${POLICY_ISSUES_LISTED} problems are); fix these and check again`,
    };
    return { issues: [...all.slice(0, POLICY_ISSUES_LISTED), summary], omittedErrors: errors };
  }
}
